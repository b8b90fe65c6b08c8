"""What an optimizer's step does to the gradients before its update rule sees them:
the finiteness check (``check_finite``) and gradient clipping (``clipnorm``,
``clipvalue``, ``global_clipnorm``). Package-internal; ``flowgrad.training.optim`` calls these
inside its atomic step, on the backend's arrays (``xp`` is the backend's namespace).

Clipping follows ``torch.nn.utils``: ``clip_grad_norm_`` scales by
``min(1, max_norm / (norm + 1e-6))`` (per variable for ``clipnorm``, over all of them
for ``global_clipnorm``), ``clip_grad_value_`` clamps to ``[−c, c]``.
"""
from __future__ import annotations

import cmath

import numpy as np

#: added to the norm before dividing, as torch.nn.utils.clip_grad_norm_ does
NORM_EPS = 1e-6


def _squared_norm(g, xp):
    if g.dtype == np.float16:
        # g² in float32 (as torch's half vector_norm): 300² is inf in float16, which made
        # the norm inf and the clipping scale 0, so the step vanished; its sum stays
        # float32 too and the scale is rounded to float16 once (``_scaled``)
        g = g.astype(np.float32)
    if g.dtype.kind == "c":
        return xp.sum(g.real * g.real + g.imag * g.imag)
    return xp.sum(g * g)


def _scaled(g, norm, max_norm, xp):
    # multiplying by exactly 1.0 leaves g's bits as they were, so no branch (and no
    # device synchronisation) is needed to skip gradients under the limit
    return g * xp.minimum(max_norm / (norm + NORM_EPS), 1.0).astype(g.real.dtype)


def clip(grads, xp, clipnorm=None, clipvalue=None, global_clipnorm=None):
    """The gradients after clipping (new arrays; ``grads`` is not changed). At most one
    of the three settings is given (the optimizer checks that)."""
    if clipvalue is not None:
        return [xp.clip(g, -clipvalue, clipvalue) for g in grads]
    if clipnorm is not None:
        return [_scaled(g, xp.sqrt(_squared_norm(g, xp)), clipnorm, xp) for g in grads]
    total = None
    for g in grads:
        s = _squared_norm(g, xp)
        total = s if total is None else total + s
    norm = xp.sqrt(total)
    return [_scaled(g, norm, global_clipnorm, xp) for g in grads]


def first_non_finite(loss, grads, xp):
    """None when the loss and every gradient are finite; else ``-1`` (the loss) or the
    index of the first gradient holding a NaN or ±inf, and how many entries do.

    One number decides the common case: the loss plus every gradient's sum is finite
    exactly when every entry is, unless finite entries overflow the sum; only a
    non-finite total pays for the entry-by-entry search (which tells the two apart)."""
    # on Python numbers, which never warn: inf − inf is a quiet NaN here, where numpy
    # would add a RuntimeWarning of its own to the user's. The sums themselves are
    # numpy's: finite entries whose sum overflows (float16's 65504 is soon reached) must
    # not warn either, or a healthy step would raise under warnings-as-errors
    total = abs(complex(loss))
    with np.errstate(over="ignore"):      # (one errstate per use: not reentrant)
        for g in grads:
            total += abs(complex(g.sum() if hasattr(g, "sum") else g))
    if total - total == 0:            # x − x is 0 for a finite x, NaN for ±inf and NaN
        return None
    if not cmath.isfinite(complex(loss)):
        return -1, 1
    for k, g in enumerate(grads):
        bad = int(xp.sum(~xp.isfinite(g)))
        if bad:
            return k, bad
    return None                       # the finite sums overflowed: nothing is wrong
