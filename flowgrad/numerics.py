"""The NaN/Inf locator: ``compile(..., check_numerics=True)`` and ``fg.detect_anomaly()``.

A checked run is a second interpreter loop over the same plan (the plain loop stays
free of any test): it keeps every value and, after each step, tests the new value for
finiteness. The first node whose value holds a NaN or ±Inf while all of its inputs
were finite is the culprit, and so is one that makes a NaN from inputs holding none
(an ∞ passed on from a mask meets ∞ − ∞, 0 · ∞ or log(−∞)): ``NumericsError`` names it
and carries a Trace of every value computed so far, the culprit marked for
``fg.viz.draw``. A non-finite value that only passes on one from an input (a masked
logit of −inf, say) is not flagged there.
Fed placeholders and variables are tested first: a NaN fed in is named as such.

``detect_anomaly`` is **thread-local**: it turns checking on for programs run by the
thread inside the ``with`` block only, so other threads keep their speed.
"""
from __future__ import annotations

import contextlib
import threading

from .engine.executors.base import raise_step_error
from .errors import NumericsError
from . import diagnose
from .explain import explain

class _State(threading.local):
    on = False  # a class default: every thread starts off, and reading it is one look-up
    #: inside a checked run: a program it runs (a loop's body, an iteration) is fed
    #: values that run computed or was fed, already checked there
    nested = False


_state = _State()
#: the thread's anomaly flag (``ANOMALY.on``): read by the call paths once a call
ANOMALY = _state


@contextlib.contextmanager
def detect_anomaly(enabled: bool = True):
    """Check every program run by this thread inside the block for NaN/Inf (nestable)."""
    prev = _state.on
    _state.on = bool(enabled)
    try:
        yield
    finally:
        _state.on = prev


def anomaly_enabled() -> bool:
    """Whether programs run by this thread now are checked (inside ``detect_anomaly``)."""
    return _state.on


def _all_finite(xp, v) -> bool:
    dtype = getattr(v, "dtype", None)
    if dtype is None:  # a Python scalar (a weak constant)
        return not isinstance(v, (float, complex)) or v == v and abs(v) != float("inf")
    if dtype.kind not in "fc":
        return True
    return bool(xp.isfinite(v).all())


def _has_nan(xp, v) -> bool:
    dtype = getattr(v, "dtype", None)
    if dtype is None:
        return isinstance(v, (float, complex)) and v != v
    return dtype.kind in "fc" and bool(xp.isnan(v).any())


def _made_here(xp, v, ins) -> str | None:
    """Why a non-finite ``v`` computed from ``ins`` was made by its own step: "finite"
    (every input finite), "nan" (a NaN where no input held one), else None (passed on)."""
    if all(_all_finite(xp, i) for i in ins):
        return "finite"
    if _has_nan(xp, v) and not any(_has_nan(xp, i) for i in ins):
        return "nan"
    return None


def run_checked(prog, vals):
    """Run ``prog``'s plan on the bound ``vals`` keeping every value; raise NumericsError
    at the first step that creates a NaN/Inf. The thread's anomaly flag is on meanwhile,
    so the programs a step runs (a loop's body, each iteration) are checked too, as
    inside ``detect_anomaly``."""
    prev, nested = _state.on, _state.nested
    _state.on = _state.nested = True
    try:
        if not nested:   # a body's arguments are the enclosing run's (a mask's -inf)
            _check_feeds(prog, vals)
        return _run_checked(prog, vals)
    finally:
        _state.on, _state.nested = prev, nested


def _check_feeds(prog, vals):
    """NumericsError naming a fed placeholder or a variable whose value is not finite."""
    xp = prog.backend.xp
    for nid in prog.placeholders:
        if not _all_finite(xp, vals[prog.slot_of[nid]]):
            raise _error(prog, vals, prog.graph.node(nid), None, fed=True)
    for s, var in prog.variable_slots:
        if not _all_finite(xp, vals[s]):
            raise _error(prog, vals, var, None, fed=True)


def _run_checked(prog, vals):
    xp = prog.backend.xp
    g = prog.graph
    plan = prog.plan
    for k, (st, fn) in enumerate(zip(plan.made_steps(), plan.kernels(xp))):
        ins = st.ins
        try:
            v = fn(*[vals[i] for i in ins])
        except Exception as exc:
            raise_step_error(plan, k, exc, vals)
        vals[st.out] = v
        if not _all_finite(xp, v):
            made = _made_here(xp, v, [vals[i] for i in ins])
            if made is not None:
                raise _error(prog, vals, g.node(st.node), k, nan_from_inf=made == "nan")
    return vals


def _trace(prog, vals, culprit):
    """A Trace of the values computed so far, the culprit marked for drawing."""
    from .tracing import Trace
    done = {nid: vals[s] for nid, s in prog.slot_of.items() if vals[s] is not None}
    finished = prog.backend.finish(list(done.values()))
    tr = Trace(prog, dict(zip(done, finished)), {})
    tr.culprit = culprit
    return tr


def _error(prog, vals, node, k, fed=False, nan_from_inf=False) -> NumericsError:
    value = vals[prog.slot_of[node.id]]
    bad = _what(prog.backend.xp, value)
    if fed:
        head = (f"{node.kind} {node.name!r} was fed a value holding {bad}: "
                f"{diagnose.summarize(value)}")
    else:
        part = diagnose.adjoint_part(node)
        kind = f"an adjoint value, {part}" if part else "a forward value"
        ins = [vals[i] for i in prog.plan.made_steps()[k].ins]
        op = node.op.name if node.op is not None else node.kind
        where = node.where
        source = "inputs holding ±Inf but no NaN" if nan_from_inf else "finite inputs"
        head = (f"{node.name!r} ({op}) produced {bad} from {source}; it is {kind}"
                + (f"; built at {where}" if where else "") +
                f"\n    value: {diagnose.summarize(value)}\n{diagnose.input_lines(node, ins)}")
    trace = _trace(prog, vals, node)
    found = None if fed else explain(node, trace)
    hint = f"\n  {found}" if found is not None else ""
    err = NumericsError(head + hint + "\n  err.trace holds every value computed so far; "
                        "fg.viz.draw(err) draws the path to this node (red), "
                        "fg.viz.draw(err.trace) all of it", node=node)
    err.trace, err.explanation = trace, found
    return err


def _what(xp, v) -> str:
    """"NaN", "+Inf", "-Inf" or a mix, for the message."""
    if getattr(v, "dtype", None) is None or v.dtype.kind == "c":
        return "NaN/Inf"
    kinds = [name for name, test in (("NaN", xp.isnan(v)), ("+Inf", xp.isposinf(v)),
                                      ("-Inf", xp.isneginf(v))) if bool(test.any())]
    return " and ".join(kinds)
