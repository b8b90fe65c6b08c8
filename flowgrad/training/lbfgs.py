"""``fg.optim.LBFGS``: limited-memory BFGS with a strong-Wolfe line search.

One ``step`` (one call of ``opt.minimize(loss)``'s trainer) is one iteration: the
program runs at the current values (loss and gradients), the two-loop recursion
turns the gradient into a direction from the last ``history_size`` pairs
``(s, y) = (change of the values, change of the gradient)``, and the line search
runs the same program at trial values — fed to the variables, so nothing is written
until the step's end — until the strong Wolfe conditions hold (sufficient decrease
``c1 = 1e-4``, curvature ``c2 = 0.9``) or ``max_eval`` runs are spent. Then the new
values are written at once, as every optimizer's step does.

The search works on the host in float64 over all variables flattened into one vector
(the values are cast back to each variable's dtype when written). Line search after
Nocedal & Wright, *Numerical Optimization* (2nd ed.), algorithms 3.5 and 3.6, with
the cubic interpolation of their eq. 3.59.
"""
from __future__ import annotations

import math
from contextlib import nullcontext

import numpy as np

from ..errors import NumericsError, OptimizerError, UsageError
from ..ops.base import at_user_line
from ..backends import to_numpy
from ..leaves import check_variable_value
from ..state import commit_lock, store_values, undo_fully
from .optim import Optimizer, check_real

__all__ = ["LBFGS"]

C1, C2 = 1e-4, 0.9      # sufficient decrease and curvature constants of the Wolfe conditions


def _cubic_min(t1, f1, d1, t2, f2, d2, lo, hi):
    """The minimiser of the cubic through (t1, f1) and (t2, f2) with slopes d1, d2,
    clamped to [lo, hi]; the middle of [lo, hi] when the cubic has no minimum."""
    e1 = d1 + d2 - 3 * (f1 - f2) / (t1 - t2)
    disc = e1 * e1 - d1 * d2
    if disc < 0 or not math.isfinite(disc):
        return (lo + hi) / 2
    e2 = math.copysign(math.sqrt(disc), t2 - t1)
    denom = d2 - d1 + 2 * e2
    if denom == 0:
        return (lo + hi) / 2
    t = t2 - (t2 - t1) * (d2 + e2 - e1) / denom
    return min(max(t, lo), hi) if math.isfinite(t) else (lo + hi) / 2


class Point:
    """One evaluation along the search line: step t, value f, gradient g, slope g·d."""
    __slots__ = ("t", "f", "g", "slope")

    def __init__(self, t, f, g, d):
        self.t, self.f, self.g, self.slope = t, f, g, float(g @ d)


def strong_wolfe(phi, start, d, t, max_eval, tolerance_change):
    """The point of the line ``t ↦ phi(t)`` that meets the strong Wolfe conditions
    (or the best point found in ``max_eval`` evaluations). ``start`` is the point at
    t = 0 (its slope must be negative); ``phi(t)`` returns (value, gradient)."""
    f0, s0 = start.f, start.slope
    prev, evals = start, 0
    while True:                                   # bracketing (N&W algorithm 3.5)
        new = Point(t, *phi(t), d)
        evals += 1
        if not math.isfinite(new.f) or new.f > f0 + C1 * t * s0 or \
                (evals > 1 and new.f >= prev.f):
            lo, hi = prev, new
            break
        if abs(new.slope) <= -C2 * s0:
            return new, evals
        if new.slope >= 0:
            lo, hi = new, prev
            break
        if evals >= max_eval:
            return new, evals
        # extrapolate: a cubic step between 1.01 t and 10 t beyond the last point
        span = t - prev.t
        t, prev = _cubic_min(prev.t, prev.f, prev.slope, t, new.f, new.slope,
                             t + 0.01 * span, t + 10 * span), new
    return _zoom(phi, start, lo, hi, d, max_eval - evals, tolerance_change, evals)


def _zoom(phi, start, lo, hi, d, budget, tolerance_change, evals):
    """N&W algorithm 3.6: shrink the bracket [lo, hi] (lo: the lower value so far)
    until a point meets the strong Wolfe conditions."""
    f0, s0 = start.f, start.slope
    scale = float(np.max(np.abs(d)))
    for _ in range(budget):
        a, b = min(lo.t, hi.t), max(lo.t, hi.t)
        if (b - a) * scale < tolerance_change:
            break
        if math.isfinite(hi.f):
            t = _cubic_min(lo.t, lo.f, lo.slope, hi.t, hi.f, hi.slope, a, b)
        else:
            t = (a + b) / 2
        margin = 0.1 * (b - a)                    # stay clear of the ends: always shrink
        t = min(max(t, a + margin), b - margin)
        new = Point(t, *phi(t), d)
        evals += 1
        if not math.isfinite(new.f) or new.f > f0 + C1 * t * s0 or new.f >= lo.f:
            hi = new
            continue
        if abs(new.slope) <= -C2 * s0:
            return new, evals
        if new.slope * (hi.t - lo.t) >= 0:
            hi = lo
        lo = new
    return lo, evals


def two_loop(g, pairs, h_diag):
    """The L-BFGS direction ``−H g`` from the stored ``(s, y, 1/(y·s))`` pairs, oldest
    first (N&W algorithm 7.4), with ``H₀ = h_diag · I``."""
    q = -g
    alphas = []
    for s, y, rho in reversed(pairs):
        a = rho * float(s @ q)
        alphas.append(a)
        q = q - a * y
    r = h_diag * q
    for (s, y, rho), a in zip(pairs, reversed(alphas)):
        r = r + s * (a - rho * float(y @ r))
    return r


class LBFGS(Optimizer):
    """Limited-memory BFGS, one iteration per step, with a strong-Wolfe line search
    (see flowgrad/training/lbfgs.py). ``lr`` scales the first trial step of each line search
    (the first iteration tries ``lr · min(1, 1/‖g‖₁)``); ``history_size`` pairs are
    kept; ``converged`` turns True when the largest gradient entry is at most
    ``tolerance_grad`` or a step changes the loss or the values by less than
    ``tolerance_change`` (a step then changes nothing or little; keep calling or stop).
    ``weight_decay`` adds ``weight_decay/2 · ‖w‖²`` to the objective (and ``weight_decay·w``
    to its gradient); clipping does not combine with a line search and is refused.
    A loss or gradient holding a NaN or ±inf at the current values is a
    ``fg.NumericsError`` whatever ``check_finite`` says (nothing is written): no
    iteration can start there, and staying put would read as ``converged``.

        opt = fg.optim.LBFGS([w, b])
        train = opt.minimize(loss)
        while not opt.converged and opt.iterations < 100:
            train(x=X, t=T)
    """

    def __init__(self, variables, lr=1.0, history_size=10, max_eval=25, tolerance_grad=1e-7,
                 tolerance_change=1e-9, weight_decay=0.0, check_finite=False):
        super().__init__(variables, lr, weight_decay=weight_decay, check_finite=check_finite)
        if any(v.dtype.kind == "c" for v in self.variables):
            raise UsageError("LBFGS works on real variables; a complex one is not supported"
                             + at_user_line())
        for name, value in (("history_size", history_size), ("max_eval", max_eval)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise OptimizerError(f"{name} must be a positive int, got {value!r}"
                                     + at_user_line())
        self.history_size, self.max_eval = history_size, max_eval
        self.tolerance_grad = check_real("tolerance_grad", tolerance_grad, 0.0)
        self.tolerance_change = check_real("tolerance_change", tolerance_change, 0.0)
        self.memory = self._fresh_memory()
        self.converged = False
        self.evaluations = 0         # program runs, line searches included

    @staticmethod
    def _fresh_memory():
        return {"pairs": [], "h_diag": 1.0, "x": None, "g": None}

    def reset(self):
        """Forget the pairs, the iteration count and ``converged``."""
        with self._lock:
            super().reset()
            self.memory, self.converged = self._fresh_memory(), False

    # -- the state as data: the pairs and the last point (see Optimizer.state_dict) --
    _state_slots = frozenset()       # no per-variable state: all of it is the memory

    def _state_settings(self):
        return {"history_size": self.history_size}

    def _extra_state_keys(self):
        return ("memory",)

    def _size(self):
        return sum(math.prod(v.shape) for v in self.variables)

    def _extra_state(self):
        """``{"memory": {"s", "y": (pairs, size) float64, "rho": (pairs,), "h_diag",
        "x", "g": the last point and gradient (float64 vectors, or None before the first
        iteration), "converged", "evaluations"}}``: copies."""
        m, n = self.memory, self._size()
        pairs = m["pairs"]
        return {"memory": {
            "s": np.array([p[0] for p in pairs], dtype=np.float64).reshape(len(pairs), n),
            "y": np.array([p[1] for p in pairs], dtype=np.float64).reshape(len(pairs), n),
            "rho": np.array([p[2] for p in pairs], dtype=np.float64),
            "h_diag": float(m["h_diag"]),
            "x": None if m["x"] is None else np.array(m["x"]),
            "g": None if m["g"] is None else np.array(m["g"]),
            "converged": bool(self.converged), "evaluations": int(self.evaluations)}}

    def state_file_layout(self):
        n, h, f64 = self._size(), self.history_size, np.dtype(np.float64)
        return {("memory", "s"): ((h, n), f64), ("memory", "y"): ((h, n), f64),
                ("memory", "rho"): ((h,), f64), ("memory", "x"): ((n,), f64),
                ("memory", "g"): ((n,), f64), ("memory", "h_diag"): ((), f64),
                ("memory", "converged"): ((), np.dtype(bool)),
                ("memory", "evaluations"): ((), np.dtype(np.int64))}

    def _checked_extra_state(self, extra):
        from .optim_state import scalar, vector_array
        from .checkpoint import CheckpointError
        m = extra["memory"]
        if not isinstance(m, dict) or set(m) != {"s", "y", "rho", "h_diag", "x", "g",
                                                  "converged", "evaluations"}:
            raise CheckpointError(f"LBFGS's 'memory' must be a dict of s, y, rho, h_diag, "
                                  f"x, g, converged and evaluations, got {m!r:.200}")
        n = self._size()
        rho = m["rho"]
        count = rho.shape[0] if isinstance(rho, np.ndarray) and rho.ndim == 1 else -1
        if not 0 <= count <= self.history_size:
            raise CheckpointError(f"LBFGS's memory must hold 0 to history_size="
                                  f"{self.history_size} pairs (rho a 1-d array), got {rho!r:.200}")
        s, y = (vector_array(m[k], (count, n), np.float64, f"memory {k!r}") for k in "sy")
        rho = vector_array(rho, (count,), np.float64, "memory 'rho'")
        x, g = ((None if m[k] is None else vector_array(m[k], (n,), np.float64, f"memory {k!r}"))
                for k in "xg")
        if (x is None) != (g is None):
            raise CheckpointError("LBFGS's memory holds one of x and g without the other")
        evaluations = scalar(m["evaluations"], "i", "memory 'evaluations'")
        if evaluations < 0:
            raise CheckpointError(f"memory 'evaluations' must be ≥ 0, got {evaluations}")
        memory = {"pairs": [(np.array(s[k]), np.array(y[k]), float(rho[k]))
                            for k in range(count)],
                  "h_diag": scalar(m["h_diag"], "f", "memory 'h_diag'"), "x": x, "g": g}
        return {"memory": memory, "evaluations": evaluations,
                "converged": scalar(m["converged"], "b", "memory 'converged'")}

    def step(self, prog, /, *args, **feed):
        """One L-BFGS iteration; returns the loss before it (and the extras, as ``step``)."""
        with self._lock:
            bound = self._bind(prog)
            if len(args) > 1 or (args and not isinstance(args[0], dict)):
                raise UsageError("step takes the feeds as one dict or as keywords"
                                 + at_user_line())
            base = {**(args[0] if args else {}), **feed}
            # declared state (batch norm's running statistics): the graph's state lock
            # is held from the first evaluation, whose updates are written with the
            # iteration, to the commit; the line search's are dropped
            with commit_lock(prog.graph) if prog.state_updates else nullcontext():
                outs, pending = prog.call_pending((base,), {})
                # always, check_finite or not: no iteration can start from a NaN or
                # ±inf loss or gradient, and staying put there once said "converged"
                self._refuse_non_finite(prog, bound, outs)
                lr = self.learning_rate()
                objective = _Objective(self, prog, base)
                x0 = objective.flat([v.value for v in self.variables])
                f0, g0 = objective.value_and_grad(outs, x0)
                x, memory, converged = self._iterate(objective, x0, f0, g0, lr)
                self._commit(objective.unflat(x), memory, converged, pending)
            n = len(self.variables)
            return outs[0] if len(outs) == n + 1 else [outs[0], *outs[n + 1:]]

    def _iterate(self, objective, x0, f0, g0, lr):
        """(the new values, the new memory, converged), nothing written."""
        memory = {**self.memory, "pairs": list(self.memory["pairs"])}
        if not (math.isfinite(f0) and np.all(np.isfinite(g0))):   # weight decay overflowed
            raise NumericsError(f"L-BFGS step {self.iterations + 1}: the objective with "
                                f"weight_decay is {f0!r} or its gradient is not finite; the "
                                "step was refused and nothing was changed" + at_user_line())
        if np.max(np.abs(g0), initial=0.0) <= self.tolerance_grad:
            return x0, memory, True
        if memory["x"] is not None:
            s, y = x0 - memory["x"], g0 - memory["g"]
            ys = float(y @ s)
            if ys > 1e-10:           # keep only pairs of positive curvature
                memory["pairs"] = (memory["pairs"] + [(s, y, 1.0 / ys)])[-self.history_size:]
                memory["h_diag"] = ys / float(y @ y)
        d = two_loop(g0, memory["pairs"], memory["h_diag"])
        slope = float(g0 @ d)
        if not slope < 0:            # not a descent direction (rounding): start over from −g
            memory["pairs"], memory["h_diag"] = [], 1.0
            d, slope = -g0, -float(g0 @ g0)
        if slope > -self.tolerance_change:       # the first-order decrease is negligible
            return x0, memory, True
        first = not memory["pairs"] and memory["x"] is None
        t = lr * min(1.0, 1.0 / float(np.sum(np.abs(g0)))) if first else lr
        start = Point(0.0, f0, g0, d)
        point, evals = strong_wolfe(objective.along(x0, d), start, d, t, self.max_eval,
                                    self.tolerance_change)
        self.evaluations += evals
        memory["x"], memory["g"] = x0, g0
        if point.t == 0.0 or not point.f < f0:   # nothing better found: stay
            return x0, memory, True
        x = x0 + point.t * d
        converged = abs(point.f - f0) < self.tolerance_change or \
            float(np.max(np.abs(point.t * d))) <= self.tolerance_change
        return x, memory, converged

    def _commit(self, values, memory, converged, pending):
        """Write every value, the memory, the iteration count and the run's declared
        state updates (``pending``, or None): all of them or, if interrupted anywhere
        (Ctrl-C included), none: the old ones are put back. References only are
        written inside the ``try``; every check comes before it."""
        dicts = [v.more for v in self.variables]   # (a leaf's value lives in .more)
        new = [check_variable_value(v, x) for v, x in zip(self.variables, values)]
        old = [d["value"] for d in dicts]
        old_memory, old_converged, t = self.memory, self.converged, self.iterations
        if pending is not None:
            pending.prepare()
        try:
            for d, x in zip(dicts, new):
                d["value"] = x
            self.memory, self.converged = memory, converged
            self.iterations = t + 1
            if pending is not None:
                pending.write()
        except BaseException:
            undo_fully(self._restore, dicts, old, (old_memory, old_converged, t), pending)
            raise

    def _restore(self, dicts, old, counts, pending):
        """``_commit`` undone (reference stores only: ``undo_fully`` may repeat it)."""
        if pending is not None:
            pending.undo()
        store_values(dicts, old)
        self.memory, self.converged, self.iterations = counts


class _Objective:
    """The loss plus ``weight_decay/2·‖x‖²`` and its gradient as functions of the
    flattened values, by running the program with the values fed to the variables."""

    def __init__(self, opt, prog, feed):
        self.opt, self.prog, self.feed = opt, prog, feed
        self.variables, self.wd = opt.variables, opt.weight_decay
        self.sizes = [math.prod(v.shape) for v in self.variables]

    def flat(self, arrays):
        return np.concatenate([np.asarray(to_numpy(a), dtype=np.float64).ravel()
                               for a in arrays]) if arrays else np.zeros(0)

    def unflat(self, x):
        out, start = [], 0
        for v, n in zip(self.variables, self.sizes):
            out.append(np.asarray(x[start:start + n].reshape(v.shape), dtype=v.dtype))
            start += n
        return out

    def value_and_grad(self, outs, x):
        n = len(self.variables)
        f = float(to_numpy(outs[0]))
        g = self.flat(outs[1:n + 1])
        if self.wd:
            f, g = f + 0.5 * self.wd * float(x @ x), g + self.wd * x
        return f, g

    def along(self, x0, d):
        def phi(t):
            x = x0 + t * d
            feed = dict(self.feed)
            feed.update(zip(self.variables, self.unflat(x)))
            return self.value_and_grad(self.prog.call_pending((feed,), {})[0], x)
        return phi
