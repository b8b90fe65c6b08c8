"""Lockstep verify mode: ``fg.compile(outputs, ..., verify=True)`` (or the environment's
``FLOWGRAD_VERIFY=1``) runs every call twice: on the program's own executor, and on
the reference interpreter (flowgrad/engine/executors/interp.py) beside it. Every output
and every value the executor hands back is compared; the first that differs raises
``fg.VerifyError`` naming its node, the step, the executor, and both values.

The comparison is bitwise (NaN equal to NaN, -0.0 unequal to 0.0) where the executor
promises the reference's bits (``bit_identical``), else within its stated ``ulps``
units in the last place of max(|reference|, 1) (generated scalar code: Python's
``math`` is not numpy's; numexpr chains: see executors/generated.py). Shapes and
dtypes must always agree.

An executor that raises where the reference does not (or raises another class) is a
disagreement too. Generated code keeps its intermediate values in locals, so a call
compares what it hands back (every output). When one differs, the report goes step by
step: the reference's every value (a keep-all program) against a program of the same
kind made for each step's node alone, in plan order; the first that differs is named
(plans up to ``LOCATE_STEPS`` steps; beyond, the output). Verify mode costs a second
run per call: it is a debugging and CI tool, never on by default.
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import VerifyError

__all__ = ["wanted", "wrap", "compare"]


def wanted(verify) -> bool:
    """``verify`` as given, or the environment's ``FLOWGRAD_VERIFY`` when None."""
    if verify is None:
        return os.environ.get("FLOWGRAD_VERIFY", "") not in ("", "0")
    return bool(verify)


def wrap(prog, inner):
    """``inner`` (the program's call through its executor), made to run every call
    beside the reference interpreter (``prog.reference_call``) and compare."""
    ex = prog.executor
    ulps = ex.ulps_for(prog)

    def call(args, kwargs):
        try:
            got = inner(args, kwargs)
        except Exception as exc:
            _same_refusal(prog, ex, exc, args, kwargs)
            raise
        want = prog.reference_call(args, kwargs)
        if prog.run_single:
            got, want = [got], [want]
        for k, (g, w) in enumerate(zip(got, want)):
            why = compare(g, w, ulps)
            if why is not None:
                raise _disagreement(prog, ex, ulps, k, args, kwargs, why, g, w)
        return got[0] if prog.run_single else got
    return call


def _same_refusal(prog, ex, exc, args, kwargs):
    """The executor raised: the reference must raise too (the same class), else a
    VerifyError naming the node the executor's error names (or the first output)."""
    try:
        prog.reference_call(args, kwargs)
    except Exception as ref_exc:
        if isinstance(ref_exc, type(exc)) or isinstance(exc, type(ref_exc)):
            return
        why = f"the reference raised {type(ref_exc).__name__}: {ref_exc}"
    else:
        why = "the reference returned values"
    node = getattr(exc, "node", None)
    if node is None:
        node = prog.outputs[0]
    raise VerifyError(f"verify: {ex.name} raised {type(exc).__name__} ({exc}) at node "
                      f"{node.name!r}, where {why}", node=node, got=exc) from exc


#: plans up to this many steps are searched for the first step that differs
LOCATE_STEPS = 400


def _disagreement(prog, ex, ulps, k, args, kwargs, why, got, want):
    """The VerifyError for output ``k``: the first step (in plan order) whose value, in a
    program of the same kind made for that node alone, differs from the reference's,
    else the output itself. The search compiles one small program a step, on failure
    only, for plans up to LOCATE_STEPS steps."""
    node, step = prog.run_outputs[k], None
    found = _first_difference(prog, ulps, args, kwargs) \
        if prog.n_steps <= LOCATE_STEPS else None
    if found is not None:
        node, step, why, got, want = found
    where = f", built at {node.where}" if node.where else ""
    what = node.op.name if node.op is not None else node.kind
    at = f"step {step} " if step is not None else ""
    return VerifyError(
        f"verify: {ex.name} and the reference interpreter disagree at {at}node "
        f"{node.name!r} ({what}{where}; output {k} differs): {why}\n"
        f"    {ex.name}: {_show(got)}\n    reference: {_show(want)}",
        node=node, step=step, got=got, want=want)


def _first_difference(prog, ulps, args, kwargs):
    from .program import Program       # (the façade: one program a node)
    g = prog.graph
    # (verify=False: a program made here never verifies, nor searches, in turn)
    ref = Program(prog.outputs, prog.backend, keep_all=True, verify=False)
    ref = ref.values(*args, **kwargs)
    for k, st in enumerate(prog.plan.made_steps()):
        node = g.node(st.node)
        try:
            # (call_pending: a diagnostic run never writes declared state)
            got = Program(node, prog.backend, verify=False).call_pending(args, kwargs)[0]
        except Exception:          # (a feed this node does not need: not comparable)
            continue
        want = ref.get(st.node)
        why = compare(got, want, ulps) if want is not None else None
        if why is not None:
            return node, k, why, got, want
    return None


def compare(got, want, ulps=0):
    """None when ``got`` matches ``want`` (bitwise for ulps=0), else why not."""
    g, w = np.asarray(got), np.asarray(want)
    if g.shape != w.shape:
        return f"shape {g.shape} != {w.shape}"
    if g.dtype != w.dtype:
        return f"dtype {g.dtype} != {w.dtype}"
    if g.dtype.kind not in "fc" or ulps == 0:
        if g.dtype.kind in "fc":
            same = (g == w) & (np.signbit(g.real) == np.signbit(w.real)) | \
                (np.isnan(g) & np.isnan(w))
        else:
            same = g == w
        return None if bool(np.all(same)) else "values differ (bitwise)"
    nan = np.isnan(g) | np.isnan(w)
    if not np.array_equal(np.isnan(g), np.isnan(w)):
        return "NaN where the other has a number"
    gf, wf = np.where(nan, 0, g), np.where(nan, 0, w)
    inf = np.isinf(gf) | np.isinf(wf)
    if not np.array_equal(gf[inf], wf[inf]):
        return "infinities differ"
    gf, wf = np.where(inf, 0, gf), np.where(inf, 0, wf)
    eps = np.finfo(g.real.dtype).eps
    bound = ulps * eps * np.maximum(np.abs(wf), 1)
    worst = np.abs(gf - wf) - bound
    return None if not worst.size or float(np.max(worst)) <= 0 else \
        f"differ by more than {ulps} ulps of max(|reference|, 1)"


def _show(v):
    text = np.array2string(np.asarray(v), threshold=8, precision=17)
    return " ".join(text.split())[:300]

