"""Linear algebra: matmul (numpy semantics: 1-d operands, batched leading axes)."""
from __future__ import annotations

from .base import Op, apply, broadcast_shapes, result_dtype, shape_error
from .shape import expand_dims, squeeze, swap_last_axes, transpose


def _matmul_infer(a, b):
    if not a.shape or not b.shape:
        raise shape_error("matmul", (a, b), "operands must be at least 1-d (use mul for scalars)")
    ka = a.shape[-1]
    kb = b.shape[0] if len(b.shape) == 1 else b.shape[-2]
    if ka is not None and kb is not None and ka != kb:
        raise shape_error("matmul", (a, b), f"inner dimensions differ ({ka} vs {kb})")
    if len(a.shape) == 1 and len(b.shape) == 1:
        return (), result_dtype(a, b)
    if len(b.shape) == 1:
        return a.shape[:-1], result_dtype(a, b)
    if len(a.shape) == 1:
        return b.shape[:-2] + b.shape[-1:], result_dtype(a, b)
    batch = broadcast_shapes("matmul", _Shape(a.shape[:-2]), _Shape(b.shape[:-2]))
    return batch + (a.shape[-2], b.shape[-1]), result_dtype(a, b)


class _Shape:
    """Just enough of a node for broadcast_shapes on batch dimensions."""
    def __init__(self, shape):
        self.shape, self.name = shape, "batch"


def _matmul_da(g, ans, a, b):
    """Ā = Ḡ Bᵀ (1-d operands promoted to matrices, then squeezed back)."""
    if len(a.shape) == 1 and len(b.shape) == 1:
        return g * b
    if len(b.shape) == 1:
        return expand_dims(g, -1) * b                      # outer product, batched
    gm = expand_dims(g, -2) if len(a.shape) == 1 else g
    out = matmul(gm, swap_last_axes(b))
    return squeeze(out, -2) if len(a.shape) == 1 else out


def _matmul_db(g, ans, a, b):
    """B̄ = Aᵀ Ḡ (1-d operands promoted to matrices, then squeezed back)."""
    if len(a.shape) == 1 and len(b.shape) == 1:
        return g * a
    if len(a.shape) == 1:
        return expand_dims(a, -1) * expand_dims(g, -2)     # outer product, batched
    if len(a.shape) == 2 and len(b.shape) == 1:
        return matmul(transpose(a), g)                     # the common X @ w case: one gemv
    gm = expand_dims(g, -1) if len(b.shape) == 1 else g
    out = matmul(swap_last_axes(a), gm)
    return squeeze(out, -1) if len(b.shape) == 1 else out


_matmul = Op("matmul", lambda xp, a, b: xp.matmul(a, b), _matmul_infer,
             vjp=(_matmul_da, _matmul_db), multilinear=True,
             doc="a @ b.  Ā = Ḡ Bᵀ, B̄ = Aᵀ Ḡ; forward rule Ȧ B + A Ḃ.")


def matmul(a, b):
    """a @ b with numpy's rules (1-d operands, broadcast batch axes)."""
    return apply(_matmul, a, b)
