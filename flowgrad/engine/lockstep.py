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

The interpreter's values are step-by-step: when outputs differ, the report names the
output's node; the reference's whole slot list is kept for it. Verify mode costs a
second run per call: it is a debugging and CI tool, never on by default.
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import VerifyError
from . import executors as _executors

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
    ulps = 0 if ex.bit_identical else ex.ulps
    plan = prog.plan

    def call(args, kwargs):
        got = inner(args, kwargs)
        want = prog.reference_call(args, kwargs)
        if prog.single:
            got, want = [got], [want]
        for k, (g, w) in enumerate(zip(got, want)):
            why = compare(g, w, ulps)
            if why is not None:
                node = prog.outputs[k]
                raise VerifyError(
                    f"verify: {ex.name} and the reference interpreter disagree on output "
                    f"{k}, node {node.name!r} ({node.op.name if node.op else node.kind}"
                    + (f", built at {node.where}" if node.where else "") + f"): {why}\n"
                    f"    {ex.name}: {_show(g)}\n    reference: {_show(w)}",
                    node=node, step=_step_of(plan, prog.slot_of.get(node.id)),
                    got=g, want=w)
        return got[0] if prog.single else got
    return call


def _step_of(plan, slot):
    if slot is None:
        return None
    try:
        return plan.step_of_slot(slot)
    except (KeyError, ValueError):
        return None                 # a leaf's or a constant's slot


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


REFERENCE = _executors.INTERPRETER
