"""Array helpers that conv2d and the pooling ops share (values in, value out; xp is the
backend's namespace). No ops here.

* ``strided_view(xp)``: numpy's and cupy's ``as_strided``, or None where the namespace
  has none (dask): the in-memory namespaces build im2col's columns as one strided view
  and one copy, and may look at a value (is there a NaN?) to skip work;
* ``select(xp, mask, v)``: ``xp.where(mask, v, 0)`` bit for bit, faster;
* ``matmul_wide`` / ``matmul_deep``: a 2-d product whose small sides are tiny and whose
  third side is long, in blocks of the long side on numpy (see ``long_blocks``).
"""
from __future__ import annotations

import numpy as np

_UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}


def strided_view(xp):
    """``xp.lib.stride_tricks.as_strided`` where the namespace has it (numpy, cupy: arrays
    in memory with byte strides), else None (dask has only sliding_window_view there)."""
    tricks = getattr(getattr(xp, "lib", None), "stride_tricks", None)
    return getattr(tricks, "as_strided", None)


def select(xp, mask, v):
    """v where ``mask``, +0.0 elsewhere: exactly ``xp.where(mask, v, 0)`` (its dtype, NaN,
    inf and −0.0 kept where mask holds). numpy's where branches per element and runs at
    ~2 ns an entry on a random mask; for floats on numpy and cupy this ANDs v's bits with
    all ones or all zeros instead (zero bits are +0.0), 7× as fast. v may be a strided view
    (the view's dtype has v's itemsize)."""
    uint = _UINT.get(v.dtype.itemsize) if v.dtype.kind == "f" else None
    if uint is None or strided_view(xp) is None:
        return xp.where(mask, v, 0)
    ones = -mask.astype(uint)      # True → 0xFF…F (unsigned wrap-around), False → 0
    return (v.view(uint) & ones).view(v.dtype)


#: OpenBLAS (numpy's wheels) multiplies a product of m·n·k ≤ 10⁶ multiply-adds by a direct
#: small-matrix kernel; a conv's skinny products (6 × 25 by 147456 at a LeNet size) run
#: 2–3× as fast in blocks under that size as in one call of its general path (measured:
#: benchmarks/RESULTS.md, "conv2d at a LeNet size"). Products with larger small sides
#: (16 × 150) gain nothing, nor would cupy's or dask's: those take one call.
_SMALL_PRODUCT = 1_000_000


#: The dtypes whose deep products (a conv's w̄: 16 × 16384 by 16384 × 150 at LeNet's
#: second layer) OpenBLAS computes faster transposed, as the long side's rows times the
#: short side: in float32 0.57–0.77× the time at five conv shapes (LeNet's w̄ 3.3 → 1.9
#: ms; the LeNet step of bench_conv.py −7 %), in float64 0.87–1.10× (kept as it was).
_DEEP_TRANSPOSED = frozenset({np.dtype(np.float32)})


def long_blocks(xp, small, length):
    """Slices of the long side, each with ``small`` · block ≤ 10⁶, where that pays
    (numpy, small sides m·n ≤ 1000, a long side beyond one block); else None."""
    if xp is not np or small > 1000 or small * length <= _SMALL_PRODUCT:
        return None
    block = _SMALL_PRODUCT // small
    return [slice(s, s + block) for s in range(0, length, block)]


def matmul_wide(xp, a, b):
    """a (m, k) @ b (k, L) with L long: the columns of the result block by block (each
    entry is the same dot product as in one call)."""
    blocks = long_blocks(xp, a.shape[0] * a.shape[1], b.shape[1])
    if blocks is None:
        return xp.matmul(a, b)
    out = xp.empty((a.shape[0], b.shape[1]), dtype=xp.result_type(a, b))
    for cols in blocks:
        out[:, cols] = xp.matmul(a, b[:, cols])
    return out


def matmul_deep(xp, a, b):
    """a (m, L) @ b (L, n) with L long: the sum of the blocks' products (the order of
    the additions differs from one call's: float rounding). Unblocked float32 products
    on numpy are taken as (bᵀ aᵀ)ᵀ, copied to C order (see ``_DEEP_TRANSPOSED``)."""
    blocks = long_blocks(xp, a.shape[0] * b.shape[1], a.shape[1])
    if blocks is None:
        if xp is np and a.dtype == b.dtype and a.dtype in _DEEP_TRANSPOSED:
            return xp.ascontiguousarray(xp.matmul(b.T, a.T).T)   # (m·n entries: small)
        return xp.matmul(a, b)
    out = xp.matmul(a[:, blocks[0]], b[blocks[0]])
    for part in blocks[1:]:
        out += xp.matmul(a[:, part], b[part])
    return out
