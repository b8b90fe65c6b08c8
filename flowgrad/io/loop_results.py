"""What a loop read from a graph file must declare: the results its bodies give.

A loop node's spec lists every declared result's shape and dtype (``out_shapes``,
``out_dtypes``), and its ``loop_out`` nodes take those as theirs without running
anything. A file could declare shapes or dtypes the bodies do not give (a ys of
``(4, 5)`` from a step whose y is ``(3,)``), or bodies whose arguments are not the
loop's inputs: the graph would load and compile, and its runs return arrays other
than its nodes say. So the loader recomputes the declared results from the loaded
bodies and the loop's lead inputs, as ``loops/build.py``'s builders compute them,
and refuses a spec that says otherwise (``declared_results_agree``). The results'
formulas are the builders' own (``scan_results``, ``while_results``, ``cond_results``);
this module checks that the bodies fit the inputs they are given.
"""
from __future__ import annotations

import numpy as np

from flowgrad.loops.build import cond_results, scan_results, while_results


def _fits(shape, declared) -> bool:
    """A value of ``shape`` may enter where ``declared`` is expected (None: any length)."""
    return len(shape) == len(declared) and all(d is None or d == s
                                               for s, d in zip(shape, declared))


def _carries_fit(body, inits) -> bool:
    """A scan's or while loop's body takes the carries and gives them back: each
    argument the dtype of its initial value, and a shape it fits (a derivative's
    carry may be declared less static than its seed); each result its argument's."""
    params, outs = body.params, body.outs
    return all(p.dtype == x.dtype and _fits(x.shape, p.shape) and
               o.dtype == p.dtype and o.shape == p.shape
               for p, x, o in zip(params, inits, outs))


def _scan(spec, lead):
    body, nc, nx = spec.bodies[0], spec.n_carry, spec.n_xs
    xs = lead[nc:]
    if len(body.params) != nc + nx or len(body.outs) != nc + spec.n_ys or \
            not _carries_fit(body, lead[:nc]) or any(
                x.ndim == 0 or p.shape != x.shape[1:] or p.dtype != x.dtype
                for p, x in zip(body.params[nc:], xs)):
        return None
    trips = {x.shape[0] for x in xs if x.shape[0] is not None}
    if spec.length is not None:
        trips.add(spec.length)
    if len(trips) > 1:
        return None
    t = trips.pop() if trips else None
    carries = body.params[:nc]
    return scan_results([p.shape for p in carries], [p.dtype for p in carries],
                        body.outs[nc:], t)


def _while(spec, lead):
    body, test = spec.bodies
    nc = spec.n_carry
    if spec.n_xs or spec.n_ys or len(body.params) != nc or len(body.outs) != nc or \
            not _carries_fit(body, lead) or len(test.outs) != 1 or \
            test.outs[0].shape != () or test.outs[0].dtype != np.bool_ or \
            [(p.shape, p.dtype) for p in test.params] != \
            [(p.shape, p.dtype) for p in body.params]:
        return None
    return while_results([p.shape for p in body.params], [p.dtype for p in body.params])


def _cond(spec, lead):
    pred, operands = lead[0], lead[1:]
    then_b, else_b = spec.bodies
    if spec.n_xs or pred.shape != () or pred.dtype != np.bool_ or any(
            [(p.shape, p.dtype) for p in b.params] !=
            [(x.shape, x.dtype) for x in operands] for b in spec.bodies) or \
            len(then_b.outs) != spec.n_ys or len(else_b.outs) != spec.n_ys:
        return None
    shapes, dtypes = cond_results(then_b.outs, else_b.outs)
    if None in shapes or any(a.dtype != b.dtype for a, b in zip(then_b.outs, else_b.outs)):
        return None
    return shapes, dtypes


_DECLARED = {"scan": _scan, "while": _while, "cond": _cond}


def declared_results_agree(spec, lead) -> bool:
    """Whether ``spec``'s declared results (those before its draws) are the ones its
    bodies give on the loop's lead inputs ``lead`` (carries and xs; a cond's predicate
    then operands), with the bodies' arguments fitting those inputs."""
    got = _DECLARED[spec.kind](spec, list(lead))
    if got is None:
        return False
    shapes, dtypes = got
    n = spec.n_declared
    return [tuple(s) for s in spec.out_shapes[:n]] == [tuple(s) for s in shapes] and \
        list(spec.out_dtypes[:n]) == list(dtypes)
