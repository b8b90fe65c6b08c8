"""Words for errors raised while a program runs: which node, built where, fed what.

Only called once something has failed, so nothing here is on a hot path.
"""
from __future__ import annotations

import numpy as np

from .errors import RunError

_RUN_ERRORS: dict[type, type] = {}


def describe_node(node) -> str:
    """``'name' (op), built at file:line`` plus, for a derivative node, whose v̄ it is."""
    op = node.op.name if node.op is not None else node.kind
    text = f"{node.name!r} ({op})"
    part = adjoint_part(node)
    if part:
        text += f", {part}"
    where = node.where
    return text + (f", built at {where}" if where else "")


def adjoint_part(node) -> str | None:
    """"part of the adjoint v̄ of 'w' (∂loss/∂w)" for a node the reverse sweep built."""
    from .autodiff import adjoint_mark
    owner = adjoint_mark(node)
    if owner is None:
        return None
    h = node.graph.handles
    of, y = h[owner[0]], h[owner[1]]
    return f"part of the adjoint v̄ of {of.name!r} (∂{y.name}/∂{of.name})"


def summarize(value) -> str:
    """shape, dtype, min/max and the count of non-finite entries of one value."""
    from .backends import to_numpy
    try:
        a = np.asarray(to_numpy(value))
    except Exception:  # a value the host cannot hold: say what it is
        return type(value).__name__
    text = f"{a.dtype} {tuple(a.shape)}"
    if a.dtype.kind in "fciub" and a.size:
        finite = np.isfinite(a) if a.dtype.kind in "fc" else np.ones(a.shape, bool)
        bad = int(a.size - np.count_nonzero(finite))
        if bad < a.size and a.dtype.kind != "c":
            fa = a[finite]
            text += f", min {fa.min():.6g}, max {fa.max():.6g}"
        text += f", {bad} non-finite" if a.dtype.kind in "fc" else ""
    return text


def input_lines(node, values) -> str:
    """One line per input: its name and ``summarize`` of its value (or its static shape)."""
    from .ops.base import fmt_shape
    lines = []
    for k, (inp, v) in enumerate(zip(node.inputs, values)):
        desc = summarize(v) if v is not None else f"{inp.dtype} {fmt_shape(inp.shape)}"
        lines.append(f"    input {k}: {inp.name!r} = {desc}")
    return "\n".join(lines)


def run_error(node, exc, values) -> RunError:
    """A RunError for ``exc`` raised by ``node``'s kernel; it is also an instance of the
    original exception's class, so ``except ValueError`` around a run still works."""
    return report_error(describe_node(node), exc, input_lines(node, values), node)


def report_error(head, exc, lines, node=None) -> RunError:
    """``run_error``'s report from its words alone: ``head`` (``describe_node``) and
    ``lines`` (``input_lines``), for a failure reported where the node is not at hand
    (a task run in another process: engine/lazy_errors.py); ``node`` None there."""
    cls = _RUN_ERRORS.get(type(exc))
    if cls is None:
        try:
            # the message is RunError's own: a class whose __str__ reads fields its
            # __init__ sets (numpy's _UFuncNoLoopError: .ufunc) or quotes its argument
            # (KeyError) would print nothing useful, or fail, for RunError's arguments
            cls = type("RunError", (RunError, type(exc)),
                       {"__module__": RunError.__module__, "__str__": BaseException.__str__})
        except TypeError:  # a class that cannot be mixed in (layout conflict)
            cls = RunError
        _RUN_ERRORS[type(exc)] = cls
    msg = f"{head} failed while the program ran: {type(exc).__name__}: {exc}\n{lines}"
    try:
        return cls(msg, node)
    except Exception:
        return RunError(msg, node)
