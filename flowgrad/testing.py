"""check_grads: every derivative up to ``order``, against central finite differences.

For each mode the check builds the derivative *as graph nodes* — reverse mode as
ūᵀJ (``fg.vjp``), forward mode as J v̇ (``fg.jvp``) — evaluates it and compares it
with central differences of the function in float64. Small inputs are compared
entry by entry, so a failure names the worst entry; large ones along random
directions. When both modes are asked for, they are also checked against each
other, ⟨u, J v⟩ (forward) = ⟨Jᵀu, v⟩ (reverse), which is exact and so catches a
wrong rule that finite-difference noise could hide. Order k checks the
order-(k−1) derivative nodes the same way, which is why derivatives being nodes
makes this short; a failure message says at which order it happened.
"""
from __future__ import annotations

import numpy as np

from .autodiff import ancestors, jvp, vjp
from .backends import to_numpy
from .errors import DifferentiationError, GradientCheckError
from .engine.binding import resolve
from .graph import Node, same_graph
from .leaves import constant_in
from .engine.program import Program

ENTRYWISE_MAX = 64  # inputs up to this size are checked one entry at a time
MODES_RTOL = 1e-7   # forward against reverse mode: both exact, so a tight tolerance


def check_grads(f: Node, wrt, feed=None, modes=("rev", "fwd"), order=2, *,
                eps=1e-6, rtol=1e-5, atol=1e-6, seed=0, backend="numpy"):
    """Raise GradientCheckError unless every derivative of ``f`` with respect to
    ``wrt`` up to ``order`` agrees with central finite differences in float64."""
    wrt = [wrt] if isinstance(wrt, Node) else list(wrt)
    graph = same_graph([f, *wrt])
    for m in modes:
        if m not in ("rev", "fwd"):
            raise ValueError(f"modes must be drawn from ('rev', 'fwd'), got {m!r}")
    for x in wrt:
        if x.kind not in ("placeholder", "variable"):
            raise ValueError(f"check_grads differentiates with respect to placeholders and "
                             f"variables; {x.name!r} is a {x.kind}")
        if x.dtype != np.float64:
            raise ValueError(f"check_grads needs float64 inputs; {x.name!r} is {x.dtype}")
    fed = resolve(graph, feed or {})
    base = dict(fed)
    for x in wrt:
        if x.id not in base:
            if x.kind != "variable":
                raise ValueError(f"check_grads needs a value for placeholder {x.name!r} in feed")
            base[x.id] = x.value
        base[x.id] = np.array(to_numpy(base[x.id]), dtype=np.float64)
    checker = _Checker(graph, wrt, base, np.random.default_rng(seed), eps, rtol, atol, backend)
    checker.refuse_fresh_draws(f)
    try:
        checker.check(f, modes, order, label=f.name)
    except GradientCheckError as e:   # a rule the user gave, or a stop_gradient: say which
        from .custom_check import annotate, explain
        raise annotate(e, explain(f, wrt, checker._eval, order, modes)) from None


def _index(k, shape):
    return tuple(int(i) for i in np.unravel_index(k, shape))


class _Checker:
    def __init__(self, graph, wrt, base, rng, eps, rtol, atol, backend):
        self.graph, self.wrt, self.base, self.rng = graph, wrt, base, rng
        self.eps, self.rtol, self.atol, self.backend = eps, rtol, atol, backend
        self._programs = {}

    def refuse_fresh_draws(self, f):
        """Finite differences of a function that draws anew on every run measure noise:
        say so, naming the random nodes, rather than report a wrong derivative."""
        data = self.graph.handles
        random = [self.graph.node(i) for i in ancestors([f])
                  if data[i].op is not None and data[i].op.stateful]
        # a few runs: two small masks may agree by chance
        first = self._eval(f) if random else None
        if random and any(not np.array_equal(first, self._eval(f), equal_nan=True)
                          for _ in range(4)):
            names = ", ".join(n.name for n in random[:5])
            raise DifferentiationError(
                f"check_grads: {f.name!r} changes from run to run: it reads random draws "
                f"({names}); check it with dropout off (training=False) or without the draws")

    def _eval(self, node, shift=None):
        feed = {self.graph.node(i): v for i, v in self.base.items()}
        if shift is not None:      # an input listed twice moves by both of its shifts
            for x, dx in zip(self.wrt, shift):
                feed[x] = feed[x] + dx
        prog = self._programs.get(node.id)
        if prog is None:
            prog = self._programs[node.id] = Program(node, self.backend)
        # call_pending, its declared state writes dropped: a check evaluates the
        # function dozens of times and must not move batch norm's running statistics
        value, _ = prog.call_pending((feed,), {})
        return np.asarray(to_numpy(value), dtype=np.float64)

    def _fd(self, node, direction):
        """Central difference of node along ``direction`` (one array per input)."""
        h = self.eps
        plus = self._eval(node, [h * d for d in direction])
        minus = self._eval(node, [-h * d for d in direction])
        return (plus - minus) / (2 * h)

    def _const(self, value):
        return constant_in(self.graph, np.asarray(value, dtype=np.float64), name="check")

    def _fail_if_far(self, what, auto, fd, scale, entry_names):
        auto, fd = np.broadcast_arrays(np.asarray(auto, float), np.asarray(fd, float))
        tol = self.atol * scale + self.rtol * np.maximum(np.abs(auto), np.abs(fd))
        err = np.abs(auto - fd)
        bad = ~(err <= tol)  # NaN counts as bad
        if bad.any():
            k = int(np.argmax(np.where(bad, np.nan_to_num(err / tol, nan=np.inf), -1)))
            raise GradientCheckError(
                f"order {self.depth}, {what}: autodiff and finite differences disagree at "
                f"{entry_names(k)}: autodiff {float(auto.flat[k])!r}, "
                f"finite differences {float(fd.flat[k])!r} "
                f"(|error| {err.flat[k]:.3g} > tolerance {tol.flat[k]:.3g})")

    def check(self, f, modes, order, label, depth=1):
        self.depth = depth
        f_val = self._eval(f)
        scale = max(1.0, float(np.max(np.abs(f_val)))) if f_val.size else 1.0
        shapes = [self.base[x.id].shape for x in self.wrt]
        u = self.rng.standard_normal(f_val.shape)
        v = [self.rng.standard_normal(s) for s in shapes]
        derivs, rev_vals, fwd_val = [], None, None
        if "rev" in modes:
            nodes = vjp(f, self.wrt, self._const(u))
            rev_vals = self._check_rev(label, f, u, nodes, scale)
            derivs += [(n, f"vjp({label}, {x.name})") for n, x in zip(nodes, self.wrt)]
        if "fwd" in modes:
            node = jvp(f, self.wrt, [self._const(d) for d in v])
            fwd_val = self._eval(node)
            if fwd_val.shape != f_val.shape:
                raise GradientCheckError(f"forward mode (jvp) of {label}: tangent has shape "
                                         f"{fwd_val.shape}, expected {f_val.shape}")
            self._fail_if_far(f"forward mode (jvp) of {label}", fwd_val, self._fd(f, v), scale,
                              lambda k: f"output entry {_index(k, f_val.shape)}")
            derivs.append((node, f"jvp({label})"))
        if rev_vals is not None and fwd_val is not None:
            # the two modes against each other, free of finite-difference noise: ⟨u, J v⟩ = ⟨Jᵀu, v⟩
            # exact up to rounding, so held to MODES_RTOL (relative to the size of the terms)
            # whatever the finite-difference tolerance is
            fwd_terms = u * fwd_val
            rev_terms = [g * d for g, d in zip(rev_vals, v)]
            fwd_dot = float(np.sum(fwd_terms))
            rev_dot = float(sum(np.sum(t) for t in rev_terms))
            size = float(np.sum(np.abs(fwd_terms)) + sum(np.sum(np.abs(t)) for t in rev_terms))
            # the absolute floor lets a derivative that is exactly 0 (rounding noise in
            # both modes) pass; it is far below any real disagreement
            err = abs(fwd_dot - rev_dot)
            tol = min(self.rtol, MODES_RTOL) * size + 1e-12 * scale
            if not err <= tol:
                raise GradientCheckError(
                    f"order {self.depth}, modes of {label} against each other: forward mode "
                    f"<u, J v> = {fwd_dot!r} but reverse mode <J^T u, v> = {rev_dot!r} for a "
                    f"random pair (u, v) (|error| {err:.3g} > tolerance {tol:.3g})")
        if order > 1:
            for node, name in derivs:
                self.check(node, modes, order - 1, name, depth + 1)

    def _check_rev(self, label, f, u, nodes, scale):
        values = []
        for i, (x, node) in enumerate(zip(self.wrt, nodes)):
            auto = self._eval(node)
            values.append(auto)
            shape = self.base[x.id].shape
            what = f"reverse mode (vjp) of {label} w.r.t. {x.name}"
            if auto.shape != shape:
                raise GradientCheckError(f"{what}: gradient has shape {auto.shape}, "
                                         f"expected {shape}")
            if auto.size <= ENTRYWISE_MAX:
                fd = np.empty(shape)
                for k in range(auto.size):
                    direction = [np.zeros(self.base[w.id].shape) for w in self.wrt]
                    direction[i].flat[k] = 1.0
                    fd.flat[k] = np.sum(u * self._fd(f, direction))
                self._fail_if_far(what, auto, fd, scale,
                                  lambda k: f"entry {_index(k, shape)}")
            else:
                for _ in range(3):
                    direction = [np.zeros(self.base[w.id].shape) for w in self.wrt]
                    direction[i] = self.rng.standard_normal(shape)
                    fd = np.sum(u * self._fd(f, direction))
                    self._fail_if_far(what, np.sum(auto * direction[i]), fd, scale,
                                      lambda k: "a random direction")
        return values
