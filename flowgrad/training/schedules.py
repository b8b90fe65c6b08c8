"""Learning-rate schedules: plain callables of the iteration number ``k = 0, 1, 2, …``
(the number of steps taken before the one whose rate they give). Any callable works
as an optimizer's ``lr``; these are the usual shapes. ``fg.optim.NAME`` holds each.

    opt = fg.optim.AdamW(model.variables, lr=fg.optim.warmup_cosine(1e-3, 100, 5000))
"""
from __future__ import annotations

import math
import numbers

from ..errors import OptimizerError
from ..ops.base import at_user_line

__all__ = ["exponential_decay", "cosine_decay", "warmup_cosine", "step_decay"]


def _steps(name, value, low):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise OptimizerError(f"{name} must be an int ≥ {low}, got {value!r}" + at_user_line())
    return int(value)


def exponential_decay(lr: float, rate: float, every: int = 1):
    """``k ↦ lr · rate^(k // every)``: multiply the rate by ``rate`` every ``every`` steps."""
    if every < 1:
        raise OptimizerError("every must be a positive number of steps" + at_user_line())
    return lambda k: lr * rate ** (k // every)


def cosine_decay(lr: float, steps: int, final: float = 0.0):
    """``k ↦ final + (lr − final)·(1 + cos(π k/steps))/2`` for k ≤ steps, then ``final``."""
    if steps < 1:
        raise OptimizerError("steps must be positive" + at_user_line())
    return lambda k: final + (lr - final) * 0.5 * (1 + math.cos(math.pi * min(k, steps) / steps))


def warmup_cosine(lr: float, warmup: int, steps: int, final: float = 0.0):
    """A linear warm-up, then a cosine decay: ``lr·(k + 1)/warmup`` for the first
    ``warmup`` steps (reaching ``lr`` at step ``warmup − 1``), then
    ``final + (lr − final)·(1 + cos(π (k − warmup)/(steps − warmup)))/2`` until step
    ``steps`` (the total, warm-up included), and ``final`` after it."""
    warmup = _steps("warmup", warmup, 0)
    steps = _steps("steps", steps, warmup + 1)
    span = steps - warmup

    def schedule(k):
        if k < warmup:
            return lr * (k + 1) / warmup
        return final + (lr - final) * 0.5 * (1 + math.cos(math.pi * min(k - warmup, span) / span))
    return schedule


def step_decay(lr: float, every, factor: float = 0.1):
    """Piecewise constant: ``lr · factor^j`` where ``j`` counts the boundaries passed.
    ``every`` is an int (a boundary every that many steps: ``j = k // every``, as
    PyTorch's StepLR) or an increasing sequence of step numbers (``j`` = how many of
    them are ≤ k, as MultiStepLR)."""
    if isinstance(every, numbers.Integral) and not isinstance(every, bool):
        every = _steps("every", every, 1)
        return lambda k: lr * factor ** (k // every)
    bounds = [_steps("a boundary", b, 1) for b in every]
    if not bounds or any(a >= b for a, b in zip(bounds, bounds[1:])):
        raise OptimizerError(f"step_decay's boundaries must be a non-empty increasing sequence "
                             f"of step numbers, got {every!r}" + at_user_line())

    def schedule(k):
        return lr * factor ** sum(1 for b in bounds if b <= k)
    return schedule
