"""Optimizers that update ``fg.variable``s in place from a program's gradients.

An optimizer holds a list of variables. ``opt.step(prog, **feed)`` runs a program
whose outputs are *the loss, then one gradient per variable* (then, optionally,
any extra outputs such as metrics), replaces each variable's value by its update
and returns the loss. ``opt.minimize(loss)`` builds that program for you.

Updates are written once, against the program's backend namespace ``xp``, and are
out of place: a value read from ``w.value`` earlier is never mutated, and the state
(momentum, Adam's moments) lives as arrays of the program's backend (numpy, cupy,
...). The learning rate is a number or a *schedule*: any callable of the iteration
number ``k = 0, 1, 2, ...`` (the number of steps taken before this one).

    opt = fg.optim.Adam([w, b], lr=fg.optim.exponential_decay(1e-2, 0.5, every=100))
"""
from __future__ import annotations

import math
import numbers

from .autodiff import grad
from .graph import Node
from .scheduler import Program

__all__ = ["Optimizer", "SGD", "Momentum", "Adam", "exponential_decay", "cosine_decay"]


class Optimizer:
    """Base class: ``step(prog, **feed)`` runs ``prog`` — whose outputs are the loss,
    then one gradient per variable — applies the update and returns the loss.

    A subclass writes ``_update(k, value, g, lr, xp)``: ``k`` is the variable's
    index in ``self.variables``, ``value`` and ``g`` are arrays of the backend whose
    namespace is ``xp``; it returns the new value and keeps any state it needs in
    ``self.state[k]`` (a dict, created empty).
    """

    def __init__(self, variables, lr):
        self.variables = [variables] if isinstance(variables, Node) else list(variables)
        if not self.variables:
            raise ValueError("an optimizer needs at least one fg.variable to update")
        for v in self.variables:
            if not isinstance(v, Node) or v.kind != "variable":
                raise TypeError(f"optimizers update fg.variable nodes, got {v!r}")
        if len({v.id for v in self.variables}) != len(self.variables):
            raise ValueError("a variable is listed twice")
        if not callable(lr) and not (isinstance(lr, numbers.Real) and lr > 0):
            raise ValueError(f"lr must be a positive number or a callable schedule, got {lr!r}")
        self.lr = lr
        self.iterations = 0
        self.state: list[dict] = [{} for _ in self.variables]

    def learning_rate(self) -> float:
        """The rate of the next step: ``lr`` itself, or ``lr(iterations)`` for a schedule."""
        return float(self.lr(self.iterations) if callable(self.lr) else self.lr)

    def step(self, prog: Program, *args, **feed):
        """Run ``prog`` with the feeds, update every variable, return the loss.

        When ``prog`` has outputs beyond the loss and the gradients (metrics,
        predictions), returns ``[loss, *extras]`` instead.
        """
        outs = prog(*args, **feed)
        n = len(self.variables)
        if not isinstance(outs, list) or len(outs) < n + 1:
            got = len(outs) if isinstance(outs, list) else 1
            raise ValueError(f"the program must output the loss and then one gradient per "
                             f"variable ({n + 1} outputs), got {got}")
        grads = outs[1:n + 1]
        for k, (var, g) in enumerate(zip(self.variables, grads)):  # check all, then update
            if tuple(g.shape) != var.shape:
                raise ValueError(f"output {k + 1} of the program has shape {tuple(g.shape)}, "
                                 f"but it should be the gradient of variable {var.name!r} "
                                 f"of shape {var.shape}: outputs are [loss, *gradients]")
        xp, asarray = prog.backend.xp, prog.backend.asarray
        lr = self.learning_rate()
        new_values = []
        for k, (var, g) in enumerate(zip(self.variables, grads)):
            value = asarray(var._d["value"])
            new = self._update(k, value, g, lr, xp)
            if new.dtype != var.dtype:
                new = new.astype(var.dtype)
            new_values.append(new)
        for var, new in zip(self.variables, new_values):
            var._d["value"] = new
        self.iterations += 1
        return outs[0] if len(outs) == n + 1 else [outs[0], *outs[n + 1:]]

    def minimize(self, loss: Node, backend=None, extras=()) -> "Trainer":
        """A callable ``train(**feed)`` that takes one step per call and returns the loss
        (or ``[loss, *extras]`` when ``extras`` nodes are given)."""
        extras = list(extras)
        return Trainer(self, Program([loss, *grad(loss, self.variables), *extras], backend))

    def fit(self, loss: Node, data: dict, epochs: int = 1, batch_size=32, **options):
        """Train on ``data`` ({placeholder: array}) for ``epochs`` of shuffled mini-batches;
        returns a :class:`flowgrad.fit.History`. Options: ``val`` (feeds evaluated after
        each epoch), ``metrics`` ({name: scalar node}), ``callbacks`` (``EarlyStopping`` …),
        ``training`` (a boolean placeholder fed True, and False for validation),
        ``shuffle``, ``seed``, ``backend``, ``verbose``. See flowgrad/fit.py."""
        from .fit import fit
        return fit(self, loss, data, epochs=epochs, batch_size=batch_size, **options)

    def reset(self):
        """Forget the state (moments, iteration count); variables keep their values."""
        self.iterations = 0
        self.state = [{} for _ in self.variables]

    def _update(self, k, value, g, lr, xp):
        raise NotImplementedError

    def __repr__(self):
        names = ", ".join(v.name for v in self.variables)
        return f"<flowgrad.optim.{type(self).__name__} [{names}] after {self.iterations} steps>"


class Trainer:
    """``opt.minimize(loss)``: the compiled program and its optimizer, one step per call."""

    def __init__(self, opt, prog):
        self.optimizer, self.program = opt, prog

    def __call__(self, *args, **feed):
        return self.optimizer.step(self.program, *args, **feed)

    def __repr__(self):
        from .fit import describe_trainer
        return describe_trainer(self)


class SGD(Optimizer):
    """Plain gradient descent: w ← w − lr · g."""

    def _update(self, k, value, g, lr, xp):
        return value - lr * g


class Momentum(Optimizer):
    """Gradient descent with momentum μ (the formulation of PyTorch's SGD):

        v ← μ v + g
        w ← w − lr · v                 (heavy ball)
        w ← w − lr · (g + μ v)         (nesterov=True: look ahead along the new v)

    with v = 0 before the first step, so the first step is plain SGD for heavy ball.
    """

    def __init__(self, variables, lr, momentum=0.9, nesterov=False):
        super().__init__(variables, lr)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum, self.nesterov = float(momentum), bool(nesterov)

    def _update(self, k, value, g, lr, xp):
        st, mu = self.state[k], self.momentum
        v = st["v"] = mu * st["v"] + g if "v" in st else g
        return value - lr * (g + mu * v if self.nesterov else v)


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with bias correction; t = 1, 2, ... counts the steps:

        m ← β₁ m + (1 − β₁) g          m̂ = m / (1 − β₁ᵗ)
        s ← β₂ s + (1 − β₂) g²         ŝ = s / (1 − β₂ᵗ)
        w ← w − lr · m̂ / (√ŝ + ε)
    """

    def __init__(self, variables, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(variables, lr)
        b1, b2 = (float(b) for b in betas)
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"betas must lie in [0, 1), got {betas}")
        self.betas, self.eps = (b1, b2), float(eps)

    def _update(self, k, value, g, lr, xp):
        st, (b1, b2) = self.state[k], self.betas
        t = self.iterations + 1
        m = st["m"] = b1 * st["m"] + (1 - b1) * g if "m" in st else (1 - b1) * g
        s = st["s"] = b2 * st["s"] + (1 - b2) * (g * g) if "s" in st else (1 - b2) * (g * g)
        m_hat = m / (1 - b1 ** t)
        s_hat = s / (1 - b2 ** t)
        return value - lr * m_hat / (xp.sqrt(s_hat) + self.eps)


# -- schedules: plain callables of the iteration number ---------------------------
def exponential_decay(lr: float, rate: float, every: int = 1):
    """``k ↦ lr · rate^(k // every)``: multiply the rate by ``rate`` every ``every`` steps."""
    if every < 1:
        raise ValueError("every must be a positive number of steps")
    return lambda k: lr * rate ** (k // every)


def cosine_decay(lr: float, steps: int, final: float = 0.0):
    """``k ↦ final + (lr − final)·(1 + cos(π k/steps))/2`` for k ≤ steps, then ``final``."""
    if steps < 1:
        raise ValueError("steps must be positive")
    return lambda k: final + (lr - final) * 0.5 * (1 + math.cos(math.pi * min(k, steps) / steps))
