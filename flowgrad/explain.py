"""Why a value turned NaN/Inf: the classic traps, recognised at the culprit node.

``NumericsError.explain()`` (and the last lines of its message) name the trap and the usual
fix. Each trap is one entry of ``TRAPS``: a short name and a test that looks at the culprit,
its inputs' values and its consumers in the error's Trace, and returns the cause in words
and the nodes it names (or ``None``). The first test that recognises the culprit wins, so
the specific traps (an untaken ``where`` branch, sqrt at 0 in the backward pass) come
before the generic ones (division by zero). Only called after a failure: nothing here is
on a hot path.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Explanation:
    """A recognised trap: its ``name``, the ``cause`` at these nodes, the usual ``fix``;
    ``nodes`` are the nodes the cause names besides the culprit (the ``where`` that
    discards a value, the ``sqrt`` whose 0 a rule divides by), for ``fg.viz.draw(err)``."""
    name: str
    cause: str
    fix: str
    nodes: tuple = ()

    def __str__(self):
        return f"likely cause ({self.name}): {self.cause}\n  usual fix: {self.fix}"


@dataclass(frozen=True)
class Trap:
    """One entry of the table: ``test(culprit, view)`` returns (the cause, the nodes it
    names), or None."""
    name: str
    test: Callable
    fix: str


class _View:
    """The culprit's neighbourhood in a Trace, as host numpy arrays."""

    def __init__(self, trace, culprit):
        self.trace, self.culprit = trace, culprit
        self.bad = ~np.isfinite(self.value(culprit)) if self.has(culprit) else None

    def has(self, node) -> bool:
        return self.trace is not None and node in self.trace

    def value(self, node):
        from .backends import to_numpy
        return np.asarray(to_numpy(self.trace[node]))

    def op(self, node) -> str | None:
        return node.op.name if node.op is not None else None

    def consumers(self, node):
        g = node.graph
        return [g.node(i) for i in g.nx.successors(node.id)]

    def is_adjoint(self, node) -> bool:
        from .diagnose import adjoint_part
        return adjoint_part(node) is not None

    def zero_at_bad(self, node) -> bool:
        """Whether ``node``'s value is 0 at some entry where the culprit is non-finite."""
        if not self.has(node) or self.bad is None:
            return False
        v = self.value(node)
        try:
            return bool(np.any(np.broadcast_to(v == 0, self.bad.shape) & self.bad))
        except ValueError:   # shapes that do not broadcast (a reduction's input): any zero
            return bool(np.any(v == 0))


def _condition(view, cond):
    """The where's condition as a host array: from the trace or, when the run stopped
    before it (built after the culprit: ``lx = log(x); where(x > 0, lx, 0)``), computed
    from the failing run's recorded values; None when it cannot be.

    The recomputation runs on a copy of the nodes between the recorded values and the
    condition (flowgrad/audit.py's ``copy_with_values``), never on the graph itself: a
    random draw the run made is read from the trace, not drawn again (which explained
    another draw than the one that failed, and moved the user's stream); one it had
    not reached yet draws from a copy of its stream, which gives exactly the draw the
    run would have made; and no batch-norm statistics are written (a run of the graph
    would write them, after a failed run that wrote none)."""
    if view.has(cond):
        return view.value(cond)
    ids, known = _needed(cond, view)
    if ids is None:
        return None
    from .audit import copy_with_values
    from .backends import to_numpy
    from .engine.program import Program
    try:
        twin = copy_with_values(cond.graph, ids, {i: view.value(cond.graph.node(i))
                                                  for i in known})
        with np.errstate(all="ignore"):
            return np.asarray(to_numpy(Program(twin[cond.id], codegen=False)()))
    except Exception:      # an explanation is advice: never a second failure
        return None


def _needed(cond, view):
    """(ascending ids to rebuild ``cond`` from, the recorded ones among them): the walk
    up from ``cond`` stops at values the trace holds; (None, None) when it reaches a
    placeholder the run was not fed."""
    graph = cond.graph
    seen, known, stack = {cond.id}, set(), [cond.id]
    while stack:
        node = graph.node(stack.pop())
        if view.has(node):
            known.add(node.id)
            continue
        if node.kind == "placeholder":
            return None, None
        for i in node.input_ids:
            if i not in seen:
                seen.add(i)
                stack.append(i)
    return sorted(seen), known


def _untaken_where_forward(node, view):
    for user in view.consumers(node):
        if view.op(user) != "where":
            continue
        for branch, taken_when in ((1, True), (2, False)):
            if user.inputs[branch].id != node.id:
                continue
            cond = _condition(view, user.inputs[0])
            if cond is None:
                continue
            try:
                untaken = np.broadcast_to(cond != taken_when, view.bad.shape)
            except ValueError:
                continue
            if np.any(untaken & view.bad):
                return (f"{node.name!r} ({view.op(node)}) is computed for every entry, but "
                        f"the where {user.name!r} discards it where it is non-finite. The "
                        "value is dropped, yet its derivative is still multiplied by the "
                        "where's zero in the backward pass: 0 · ∞ = NaN in the gradient",
                        (user,))
    return None


def _untaken_where_backward(node, view):
    if not view.is_adjoint(node) or view.op(node) not in ("div", "mul"):
        return None
    for inp in node.inputs:
        if view.op(inp) == "where" and view.zero_at_bad(inp):
            return (f"the adjoint {node.name!r} ({view.op(node)}) multiplies the zero that the "
                    f"where {inp.name!r} sends to its untaken branch by an infinite local "
                    "derivative (0 · ∞ or 0 / 0 = NaN)", (inp,))
    return None


def _sqrt_at_zero_backward(node, view):
    if not view.is_adjoint(node) or view.op(node) != "div":
        return None
    frontier = [node.inputs[1]]
    for _ in range(2):   # sqrt's rule is g / (2 · ans): look two steps up the denominator
        for n in frontier:
            if view.op(n) == "sqrt" and view.zero_at_bad(n):
                return (f"the backward pass divides by sqrt's output {n.name!r}, which is 0 "
                        "there: d√s/ds = 1/(2√s) is infinite at s = 0 (a norm of a zero "
                        "vector, a distance of a point to itself)", (n,))
        frontier = [i for n in frontier for i in n.inputs]
    return None


def _log_at_zero(node, view):
    if view.op(node) != "log" or not view.has(node.inputs[0]):
        return None
    x = view.value(node.inputs[0])
    if np.any(x == 0):
        return f"log of an exact 0 at {node.name!r} (log 0 = −∞)", (node.inputs[0],)
    if np.any(x < 0):
        return f"log of a negative number at {node.name!r} (NaN)", (node.inputs[0],)
    return None


def _exp_overflow(node, view):
    if view.op(node) != "exp" or not view.has(node.inputs[0]):
        return None
    x = view.value(node.inputs[0])
    if x.dtype.kind != "f":
        return None
    with np.errstate(over="ignore"):
        overflow = np.isposinf(np.exp(x)) & np.isfinite(x)
    if np.any(overflow):
        limit = float(np.log(float(np.finfo(x.dtype).max)))
        return (f"exp overflows at {node.name!r}: its input reaches {float(x.max()):.6g}, "
                f"and exp(z) is +Inf in {x.dtype} for z above ≈ {limit:.5g}",
                (node.inputs[0],))
    return None


def _div_by_zero(node, view):
    if view.op(node) != "div" or not view.zero_at_bad(node.inputs[1]):
        return None
    where = "in the backward pass, " if view.is_adjoint(node) else ""
    return (f"{where}{node.name!r} divides by {node.inputs[1].name!r}, which is 0 there "
            "(x / 0 = ±Inf, 0 / 0 = NaN)", (node.inputs[1],))


#: the traps, most specific first
TRAPS = (
    Trap("untaken where branch", _untaken_where_forward,
         "the double where: make the unsafe op's input safe too, e.g. "
         "fg.where(x > 0, fg.log(fg.where(x > 0, x, 1.0)), 0.0), so no entry of either "
         "branch is ever non-finite"),
    Trap("untaken where branch", _untaken_where_backward,
         "the double where: fg.where(c, f(fg.where(c, x, safe)), other), with `safe` a value "
         "where f is finite, so the untaken branch's derivative is finite too"),
    Trap("sqrt at 0 in the backward pass", _sqrt_at_zero_backward,
         "add an epsilon inside the root, fg.sqrt(s + 1e-12), or take the norm through a "
         "double where: fg.where(s > 0, fg.sqrt(fg.where(s > 0, s, 1.0)), 0.0)"),
    Trap("log at 0", _log_at_zero,
         "fg.log1p(x) for log(1 + x); fg.log_softmax / fg.softmax_cross_entropy on logits "
         "instead of log(softmax(z)); fg.bce_with_logits instead of log(sigmoid(z)); or an "
         "epsilon, fg.log(x + 1e-12)"),
    Trap("exp overflow", _exp_overflow,
         "fg.logsumexp instead of log(sum(exp(z))); fg.softplus(z) for log(1 + exp(z)); "
         "fg.sigmoid for 1/(1 + exp(−z)); or subtract the maximum before exp"),
    Trap("division by zero", _div_by_zero,
         "guard the denominator: x / fg.maximum(d, eps), or a double where around the "
         "division"),
)


def explain(culprit, trace) -> Explanation | None:
    """The first trap of ``TRAPS`` that recognises ``culprit`` in ``trace``, or None."""
    if culprit is None or culprit.op is None:
        return None
    view = _View(trace, culprit)
    if view.bad is None:
        return None
    for trap in TRAPS:
        found = trap.test(culprit, view)
        if found:
            return Explanation(trap.name, found[0], trap.fix, tuple(found[1]))
    return None
