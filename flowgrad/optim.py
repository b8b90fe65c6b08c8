"""Optimizers that update ``fg.variable``s in place from a program's gradients."""
from __future__ import annotations

from .autodiff import grad
from .graph import Node
from .scheduler import Program


class Optimizer:
    """Base class: ``step(prog, **feed)`` runs ``prog`` — whose outputs are the loss,
    then one gradient per variable — applies the update and returns the loss."""

    def __init__(self, variables, lr):
        self.variables = [variables] if isinstance(variables, Node) else list(variables)
        for v in self.variables:
            if not isinstance(v, Node) or v.kind != "variable":
                raise TypeError(f"optimizers update fg.variable nodes, got {v!r}")
        self.lr = lr
        self.iterations = 0

    def learning_rate(self) -> float:
        """The current rate: ``lr`` itself, or ``lr(iteration)`` when it is a schedule."""
        return self.lr(self.iterations) if callable(self.lr) else self.lr

    def step(self, prog: Program, *args, **feed):
        outs = prog(*args, **feed)
        if len(outs) != len(self.variables) + 1:
            raise ValueError(f"the program must output the loss and then one gradient per "
                             f"variable ({len(self.variables) + 1} outputs), got {len(outs)}")
        loss, grads = outs[0], outs[1:]
        lr = self.learning_rate()
        for var, g in zip(self.variables, grads):
            var._d["value"] = self._update(var, g, lr, prog.backend.xp)
        self.iterations += 1
        return loss

    def minimize(self, loss: Node, backend=None) -> "_Trainer":
        """A callable ``train(**feed) -> loss`` that takes one step per call."""
        return _Trainer(self, Program([loss, *grad(loss, self.variables)], backend))

    def _update(self, var, g, lr, xp):
        raise NotImplementedError


class _Trainer:
    def __init__(self, opt, prog):
        self.optimizer, self.program = opt, prog

    def __call__(self, *args, **feed):
        return self.optimizer.step(self.program, *args, **feed)


class SGD(Optimizer):
    """Plain gradient descent: w ← w − lr · g."""

    def _update(self, var, g, lr, xp):
        value = var._d["value"]
        return value - lr * g
