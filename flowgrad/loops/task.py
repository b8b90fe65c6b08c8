"""A loop node on a lazy backend (dask): the whole loop as ONE task of its graph.

A lazy backend's kernels build a task graph instead of computing, so a loop cannot ask
how many iterations to run, or which branch to take, while its node is being built. On
such a backend (``Backend.loops == "task"``) the loop's kernel hands the backend one task
(``Backend.task``): it receives the loop's inputs as host numpy arrays (a dask array's
chunks concatenated) and runs the loop exactly as the numpy backend does, through the
body's numpy program (flowgrad/loops/loop_op.py's runners), so values and dtypes are the
numpy backend's, bit for bit. Each result becomes a lazy array that ``loop_out`` reads.

The lazy arrays need their shapes before the task runs. ``result_shapes`` states them
from the declared shapes, with each ``None`` filled from what is known: the number of
iterations of a scan (its stacked inputs' length, or ``length=``), a carry's length
(a carry keeps its shape: its input's), and a cond's lengths where all its branches
give the same. A length known only once the loop has run (a
while loop's trip count, a ``None`` axis of a body's output) is NaN, dask's unknown
length; so are the recorded draws' (a loop then runs at once, never twice: a second
run would draw again). ``run_on_host`` then checks every stated length against the
result before handing it over: never a lazy array whose metadata disagrees with its
value.
"""
from __future__ import annotations

import functools
import math
import weakref

import numpy as np

from ..errors import ShapeError
from ..ops.base import fmt_shape

__all__ = ["run_as_task", "result_shapes", "run_on_host", "body_shapes"]

NAN = float("nan")


def run_as_task(spec, backend, vals, runner) -> tuple:
    """The results of ``spec``'s loop on inputs ``vals`` (the backend's lazy arrays), as
    lazy arrays of ``backend`` made by one task running ``runner(spec, numpy, vals)``."""
    from ..numerics import anomaly_enabled
    shapes = result_shapes(spec, vals)
    # detect_anomaly is the building thread's; the task runs on one of dask's threads
    fn = functools.partial(run_on_host, spec, runner, shapes, anomaly_enabled())
    # inputs=True: vals are the loop node's inputs (a failure's report summarizes them)
    return tuple(backend.task(fn, list(vals), shapes, spec.out_dtypes, inputs=True))


def _known(n) -> bool:
    return n is not None and not (isinstance(n, float) and math.isnan(n))


def _fill(declared, actual):
    """``declared`` with each None replaced by ``actual``'s length there (NaN if it has
    none): a carry's shape after the body, from its shape before."""
    actual = tuple(actual) if actual is not None and len(actual) == len(declared) else None
    return tuple(d if d is not None else (actual[a] if actual is not None else NAN)
                 for a, d in enumerate(declared))


def _unknown(declared):
    return tuple(NAN if d is None else d for d in declared)


def _agreed(shapes):
    """One result's shape over a cond's branches: each length where they all give the
    same, NaN (unknown until the task runs) where they differ."""
    first = shapes[0]
    return tuple(d if all(_known(d) and len(o) == len(first) and o[a] == d
                          for o in shapes) else NAN
                 for a, d in enumerate(first))


def _length(spec, xs):
    """A scan's number of iterations (NaN while a stacked input's length is unknown);
    lengths that disagree are the numpy backend's ShapeError, raised now, by the loop's
    kernel (so it names the node, as on numpy)."""
    from .loop_op import scan_length
    known = [int(x.shape[0]) for x in xs if _known(x.shape[0])]
    if not known and spec.length is None:
        return NAN
    T = scan_length(spec, known)
    return T if len(known) == len(xs) else NAN


def result_shapes(spec, vals) -> list:
    """Every result's shape as far as it is known before the loop runs (module
    docstring); None for a carry stack or draws that no derivative reads (not kept)."""
    nc = spec.n_carry
    declared = spec.out_shapes
    shapes = [tuple(np.shape(v)) for v in vals]
    # Each iteration's draws, recorded once a derivative reads them (a run that does
    # not record them hands back none, or Nones: nothing to state). Stated as unknown,
    # so that the loop runs when its node is reached and its results join the graph
    # as computed arrays: a task is run again by each dask.compute that needs it (a
    # loop running now computes its inputs), and a rerun draws again, so the gradient
    # would read other draws than the forward's values.
    drawn = [(NAN,) * (len(n.shape) + (spec.kind != "cond")) for _, n in spec.draw_slots] \
        if spec.keeps_draws else []
    if spec.kind == "cond":   # which branch runs is known only then: what they all give
        per = [body_shapes(spec, k, shapes[1:1 + nc], shapes[1 + nc:])
               for k in range(len(spec.bodies))]
        return [_agreed(branch) for branch in zip(*per)] + drawn
    carries = [_fill(declared[k], shapes[k]) for k in range(nc)]
    if spec.kind == "scan":
        nx = spec.n_xs
        T = _length(spec, vals[nc:nc + nx])
        args = carries + [s[1:] for s in shapes[nc:nc + nx]]
        ys = body_shapes(spec, 0, args, shapes[nc + nx:])[nc:]
        ys = [(T, *y) for y in ys]
    else:                                   # a while loop: its trip count is unknown
        T, ys = NAN, []
    stacks = [(T, *c) if spec.keeps_carries else None for c in carries]
    return carries + ys + stacks + drawn


#: spec -> {input shapes: body outputs' shapes}: a probe builds a graph, once per shape
_PROBED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_PROBES_PER_LOOP = 64


def body_shapes(spec, k, arg_shapes, cap_shapes, nodes=()) -> list:
    """The shapes of body ``k``'s outputs, then of its nodes ``nodes`` (its draws),
    for arguments of the shapes ``arg_shapes`` and captures (the loop's, all of them)
    of ``cap_shapes``: the declared ones where complete; else the body replayed on
    placeholders of those shapes, every op inferring its shape, NaN where a length
    stays unknown. Also what a scan of no iteration stacks (loop_op: its body never ran
    to show the run-time shape of a ``y``)."""
    body = spec.bodies[k]
    want = [o.shape for o in body.outs] + [n.shape for n in nodes]
    if all(None not in w for w in want):
        return want
    caps = [cap_shapes[i] for i in spec.caps_of[k]]
    if not all(_known(d) for s in list(arg_shapes) + caps for d in s):
        return [_unknown(w) for w in want]
    key = (k, tuple(map(tuple, arg_shapes)), tuple(map(tuple, caps)),
           tuple(n.id for n in nodes))
    table = _PROBED.setdefault(spec, {})
    got = table.get(key)
    if got is None:
        got = _probe(body, arg_shapes, caps, nodes)
        if len(table) < _PROBES_PER_LOOP:
            table[key] = got
    return [_unknown(s) for s in got]


def _probe(body, arg_shapes, cap_shapes, nodes=()) -> list:
    """Body's output shapes (then ``nodes``'), inferred by replaying it into a graph of
    its own; the declared ones if the replay fails (the run will then raise the real
    error)."""
    from .body import inline_all
    from ..graph import Graph
    from ..leaves import placeholder
    try:
        with Graph():
            args = [placeholder(f"arg_{i}", s, p.dtype)
                    for i, (p, s) in enumerate(zip(body.params, arg_shapes))]
            caps = [placeholder(f"cap_{i}", s, p.dtype)
                    for i, (p, s) in enumerate(zip(body.cap_params, cap_shapes))]
            mapped = inline_all(body, args, caps)
            return [mapped[n.id].shape for n in list(body.outs) + list(nodes)]
    except Exception:   # noqa: BLE001 - a shape the body refuses: the run names it
        return [n.shape for n in list(body.outs) + list(nodes)]


def run_on_host(spec, runner, shapes, checked, *vals) -> tuple:
    """The task: the loop run on numpy arrays (its bodies NaN-checked if ``checked``:
    the call was made inside ``fg.detect_anomaly()``), each result checked against the
    shape its lazy array was given (a ShapeError naming the loop otherwise)."""
    from ..numerics import detect_anomaly
    with detect_anomaly(checked):
        out = runner(spec, np, vals)
    for k, (value, shape) in enumerate(zip(out, shapes)):
        if shape is None or value is None:
            continue
        got = np.shape(value)
        if len(got) != len(shape) or any(_known(s) and s != g for s, g in zip(shape, got)):
            stated = fmt_shape(tuple(int(s) if _known(s) else None for s in shape))
            raise ShapeError(f"{spec.name} built at {spec.where}: result {k} has shape "
                             f"{fmt_shape(got)} where {stated} was stated before the loop "
                             "ran (a carry must keep its shape)")
    return tuple(out)
