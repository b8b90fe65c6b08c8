"""The update rules of ``fg.optim``: SGD, Momentum, Adam, AdamW, RMSProp, Adagrad.

Each is PyTorch's ``torch.optim`` formula (same defaults, same order of operations up
to rounding), checked against it in float64 in tests/test_optim_torch.py. Like every
rule they receive the gradient after clipping and after the L2 term ``weight_decay·w``
(see ``Optimizer``), write nothing themselves, and run on the backend's arrays (or on
Python floats for 0-d float64 variables: arithmetic and ``xp.sqrt`` only). A complex
variable's update runs on its (real, imaginary) pairs, as torch's ``view_as_real``
(``optim._complex_update``).
"""
from __future__ import annotations

from ..errors import UsageError
from ..ops.base import at_user_line
from .optim import Optimizer, check_real

__all__ = ["SGD", "Momentum", "Adam", "AdamW", "RMSProp", "Adagrad"]


class SGD(Optimizer):
    """Plain gradient descent: w ← w − lr · g."""

    _state_slots = frozenset()          # no state but the step count

    def _update(self, value, g, state, lr, t, xp):
        return value - lr * g, state


class Momentum(Optimizer):
    """Gradient descent with momentum μ (the formulation of PyTorch's SGD):

        v ← μ v + g
        w ← w − lr · v                 (heavy ball)
        w ← w − lr · (g + μ v)         (nesterov=True: look ahead along the new v)

    with v = 0 before the first step, so the first step is plain SGD for heavy ball.
    """

    _state_slots = frozenset({"v"})     # torch's momentum_buffer

    def __init__(self, variables, lr, momentum=0.9, nesterov=False, **options):
        super().__init__(variables, lr, **options)
        self.momentum, self.nesterov = check_real("momentum", momentum, 0.0, 1.0), bool(nesterov)

    def _update(self, value, g, state, lr, t, xp):
        mu = self.momentum
        v = mu * state["v"] + g if "v" in state else g
        return value - lr * (g + mu * v if self.nesterov else v), {"v": v}


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with bias correction; t = 1, 2, ... counts the steps:

        m ← β₁ m + (1 − β₁) g          m̂ = m / (1 − β₁ᵗ)
        s ← β₂ s + (1 − β₂) g²         ŝ = s / (1 − β₂ᵗ)
        w ← w − lr · m̂ / (√ŝ + ε)
    """

    _state_slots = frozenset({"m", "s"})    # torch's exp_avg, exp_avg_sq

    def __init__(self, variables, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, **options):
        super().__init__(variables, lr, **options)
        if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
            raise UsageError(f"betas must be a pair (beta1, beta2), got {betas!r}"
                             + at_user_line())
        self.betas = (check_real("beta1", betas[0], 0.0, 1.0), check_real("beta2", betas[1], 0.0, 1.0))
        self.eps = check_real("eps", eps, 0.0)

    def _update(self, value, g, state, lr, t, xp):
        b1, b2 = self.betas
        m = b1 * state["m"] + (1 - b1) * g if "m" in state else (1 - b1) * g
        s = b2 * state["s"] + (1 - b2) * (g * g) if "s" in state else (1 - b2) * (g * g)
        m_hat = m / (1 - b1 ** t)
        s_hat = s / (1 - b2 ** t)
        return value - lr * m_hat / (xp.sqrt(s_hat) + self.eps), {"m": m, "s": s}


class AdamW(Adam):
    """Adam with *decoupled* weight decay (Loshchilov & Hutter), ``torch.optim.AdamW``:

        w ← w · (1 − lr · weight_decay)            (before the Adam update; the
        w ← w − lr · m̂ / (√ŝ + ε)                   gradient itself has no L2 term)
    """

    decoupled_weight_decay = True

    def __init__(self, variables, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                 weight_decay=1e-2, **options):
        super().__init__(variables, lr, betas, eps, weight_decay=weight_decay, **options)

    def _update(self, value, g, state, lr, t, xp):
        return Adam._update(self, value * (1 - lr * self.weight_decay), g, state, lr, t, xp)


class RMSProp(Optimizer):
    """``torch.optim.RMSprop``: a running mean of squared gradients scales each step.

        s ← α s + (1 − α) g²                        (s = 0 before the first step)
        d ← √s + ε,  or √(s − ḡ²) + ε with ``centered`` (ḡ ← α ḡ + (1 − α) g)
        w ← w − lr · g / d,  or with ``momentum`` μ:  b ← μ b + g / d,  w ← w − lr · b
    """

    def __init__(self, variables, lr=1e-2, alpha=0.99, eps=1e-8, momentum=0.0,
                 centered=False, **options):
        super().__init__(variables, lr, **options)
        self.alpha = check_real("alpha", alpha, 0.0, 1.0)
        self.eps = check_real("eps", eps, 0.0)
        self.momentum = check_real("momentum", momentum, 0.0, 1.0)
        self.centered = bool(centered)

    @property
    def _state_slots(self):
        # torch's square_avg, grad_avg (centered) and momentum_buffer (momentum > 0)
        return frozenset(["s"] + ["m"] * self.centered + ["b"] * bool(self.momentum))

    def _state_settings(self):
        return {"centered": self.centered, "with_momentum": bool(self.momentum)}

    def _update(self, value, g, state, lr, t, xp):
        a = self.alpha
        s = a * state["s"] + (1 - a) * (g * g) if "s" in state else (1 - a) * (g * g)
        new = {"s": s}
        if self.centered:
            m = a * state["m"] + (1 - a) * g if "m" in state else (1 - a) * g
            new["m"] = m
            d = xp.sqrt(s - m * m) + self.eps
        else:
            d = xp.sqrt(s) + self.eps
        if self.momentum:
            b = self.momentum * state["b"] + g / d if "b" in state else g / d
            new["b"] = b
            return value - lr * b, new
        return value - lr * (g / d), new


class Adagrad(Optimizer):
    """``torch.optim.Adagrad``: steps shrink with the sum of every squared gradient.

        Σ ← Σ + g²                                  (Σ = initial_accumulator_value at first)
        w ← w − lr / (1 + (t − 1)·lr_decay) · g / (√Σ + ε)
    """

    _state_slots = frozenset({"sum"})   # torch's sum

    def __init__(self, variables, lr=1e-2, lr_decay=0.0, eps=1e-10,
                 initial_accumulator_value=0.0, **options):
        super().__init__(variables, lr, **options)
        self.lr_decay = check_real("lr_decay", lr_decay, 0.0)
        self.eps = check_real("eps", eps, 0.0)
        self.initial_accumulator_value = check_real("initial_accumulator_value",
                                               initial_accumulator_value, 0.0)

    def _update(self, value, g, state, lr, t, xp):
        total = (state["sum"] if "sum" in state else self.initial_accumulator_value) + g * g
        rate = lr / (1 + (t - 1) * self.lr_decay)
        return value - rate * (g / (xp.sqrt(total) + self.eps)), {"sum": total}
