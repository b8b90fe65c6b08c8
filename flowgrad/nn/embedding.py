"""Embedding: rows of a table picked by integer indices (as ``torch.nn.Embedding``).

    emb = fg.nn.Embedding(1000, 16)           # variable embedding/table (1000, 16), N(0, 1)
    h = emb(tokens)                           # tokens (N, T) int → (N, T, 16)

The table's gradient adds the adjoints of repeated indices (``take``'s scatter-add).
An index outside [0, num) — a negative one too, which numpy would count from the end —
stops the run with ``fg.RunError`` (an ``IndexError``) naming the first bad value and
its position, on every path: ``embedding_index`` checks the indices before the lookup.
On dask the check is lazy: it runs when the outputs are computed, reading nothing
before, and its failure is the same RunError (flowgrad/engine/lazy_errors.py); indices
whose length dask learns only by computing them are checked when the step runs.
"""
from __future__ import annotations

import numbers

import numpy as np

from ..engine.lazy_errors import guard, is_lazy
from ..errors import ArgumentError
from ..ops.base import at_user_line, shape_error
from ..ops import NONDIFF, Op, apply
from .. import ops as _ops
from .. import random as _random
from . import init as _init
from .layers import Layer

__all__ = ["Embedding"]


def _check_forward(xp, idx, num):
    if is_lazy(xp, idx) and not any(n != n for n in idx.shape):
        # dask: checked when the outputs are computed, never by computing idx now
        return _lazy_check(idx, num)
    bad = (idx < 0) | (idx >= num)
    if bool(bad.any()):
        flat = xp.reshape(bad, (-1,))
        pos = int(xp.argmax(flat))       # the first bad entry, in C order
        _refuse(int(xp.reshape(idx, (-1,))[pos]), pos, idx.shape, num)
    return idx.copy()   # never the caller's own array, should this node be an output


def _refuse(value, pos, shape, num):
    where = tuple(int(i) for i in np.unravel_index(pos, shape))
    raise IndexError(f"Embedding: index {value} at position {where} is out of range "
                     f"for a table of {num} rows (valid: 0 … {num - 1})")


def _lazy_check(idx, num):
    """``idx`` (a dask array of known shape) with every block made to wait for a check
    of the whole array that raises numpy's IndexError: each block's first bad entry
    as a global C-order position (a block's own C order agrees with the whole's), the
    smallest over the blocks, and the value there."""
    shape, size = tuple(int(n) for n in idx.shape), int(np.prod(idx.shape, dtype=np.int64))
    one = tuple((1,) * len(c) for c in idx.chunks)
    firsts, values = (   # positions as int64; values in idx's dtype (a uint64 stays whole)
        idx.map_blocks(_first_bad, num, shape, size, of_value, chunks=one, dtype=t,
                       meta=np.empty((0,) * idx.ndim, t))
        for of_value, t in ((False, np.dtype(np.int64)), (True, idx.dtype)))
    pos = firsts.min()
    value = (values * (firsts == pos)).sum()
    return idx.map_blocks(guard(_verified), pos, value, num, shape, size, dtype=idx.dtype)


def _first_bad(block, num, shape, size, value, block_info=None):
    """One entry (shaped as ``block``'s rank): the global C-order position of the
    block's first entry outside [0, num), ``size`` if none; its value if ``value``."""
    bad = ((block < 0) | (block >= num)).reshape(-1)
    out = np.full((1,) * block.ndim, 0 if value else size,
                  block.dtype if value else np.int64)
    if bad.any():
        k = int(np.argmax(bad))
        if value:
            out[...] = block.reshape(-1)[k]
        else:
            start = [lo for lo, _ in block_info[0]["array-location"]]
            local = np.unravel_index(k, block.shape)
            out[...] = np.ravel_multi_index(tuple(s + i for s, i in zip(start, local)), shape)
    return out


def _verified(block, pos, value, num, shape, size):
    if int(pos) < size:
        _refuse(int(value), int(pos), shape, num)
    return block.copy()     # never the fed array itself, as on numpy


def _check_infer(idx, num):
    if idx.dtype.kind not in "iu":
        # a dtype that does not fit the op, as BatchNorm's float check: a ShapeError
        raise shape_error("Embedding", (idx,), f"indices must be integers, got {idx.dtype}")
    return idx.shape, idx.dtype


embedding_index = Op(
    "embedding_index", _check_forward, _check_infer, vjp=(NONDIFF,), jvp=(NONDIFF,),
    doc="The integer indices themselves, checked to lie in [0, num): the first one outside "
        "stops the run, naming its value and position. Integer-valued: zero derivative")


def _check_num(*idx, num):
    """The table's row count, as the layer and a graph file (embedding_index's
    ``check_attrs``, which also gets the index node) must give it: a positive int."""
    if isinstance(num, bool) or not isinstance(num, numbers.Integral) or num < 1:
        raise ArgumentError(f"Embedding: num must be a positive int, got {num!r}"
                            + at_user_line())


embedding_index.check_attrs = _check_num


class Embedding(Layer):
    """``table[indices]``: ``num`` rows of ``dim`` entries, one per index value.

    The variable ``table`` (num, dim) starts as N(0, 1) draws (as PyTorch) unless
    ``init=`` names another initialiser of :mod:`fg.nn.init`. ``seed``, ``dtype``: as
    :class:`Dense` (default float64).
    """

    default_name = "embedding"

    def __init__(self, num, dim, name=None, *, init="normal", seed=None, dtype=None):
        super().__init__(name)
        _check_num(num=num)
        if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or dim < 1:
            raise ArgumentError(f"Embedding: dim must be a positive int, got {dim!r}"
                                + at_user_line())
        self.num, self.dim = int(num), int(dim)
        self.init = _init.get(init)
        _init.rng(seed)
        self.seed, self.dtype = seed, dtype
        self.table = None

    def build(self, idx):
        dtype = np.dtype(self.dtype) if self.dtype is not None else np.dtype(np.float64)
        seed = self.seed if self.seed is not None else _random.derived_seed(idx.graph, "init")
        self.table = self.add_variable(
            self.init((self.num, self.dim), seed=_init.rng(seed), dtype=dtype), "table")

    def forward(self, idx):
        return _ops.take(self.table, apply(embedding_index, idx, num=self.num), axis=0)

    def _describe(self):
        return f"{self.num}x{self.dim}"
