"""Batching rules of indexing (``getitem``, ``scatter_add``), for ``fg.vectorize``.

The easy case puts a full slice in front of the index: the batch axis is read whole.
That is wrong in two cases, which take the general path here:

* an integer index *node* carries the batch (an embedding lookup of a batch of token
  sequences, ``take`` with per-example positions): example b must read its own indices;
* the per-example index has advanced indices separated by a slice (``x[[0, 1], :, [1, 0]]``):
  numpy puts their broadcast shape first, in front of a leading slice.

The general path makes the batch axis an advanced index too: ``arange(B)`` shaped
``(B, 1, …, 1)`` (one 1 per axis of the per-example broadcast index shape) in front of
the index of a batched x; the batched index nodes get length-1 axes after their batch
axis so that every index broadcasts to ``(B,) + bshape``. numpy then puts that block
first, ``(B,) + bshape + basic``; where the per-example result has it elsewhere (after
``at`` basic axes), a transpose moves it there. An unbatched x needs no batch index:
the batched index nodes alone give the result its batch axis.
"""
from __future__ import annotations

import numpy as np

from flowgrad.ops import apply, astype, cumsum, expand_dims, ones_like, transpose

_FULL = ("s", None, None, None)
_CONSUMING = ("i", "s", "a", "t")


class Layout:
    """Where a per-example index's advanced block lands: ``items`` (the ellipsis
    expanded), ``simple`` (a leading full slice batches it: no advanced block, or an
    adjacent one), ``at`` (the basic axes of the result before the block), ``nb`` (the
    block's rank)."""

    def __init__(self, index, x_rank, out_rank):
        used = sum(1 for it in index if it[0] in _CONSUMING)
        fill = (_FULL,) * (x_rank - used)
        kinds = [it[0] for it in index]
        k = kinds.index("e") if "e" in kinds else len(index)
        self.items = tuple(index[:k]) + fill + tuple(index[k + 1:])
        kinds = [it[0] for it in self.items]
        array = any(c in ("a", "t") for c in kinds)
        adv = [p for p, c in enumerate(kinds) if c in ("a", "t") or c == "i" and array]
        adjacent = adv == list(range(adv[0], adv[0] + len(adv))) if adv else True
        self.simple = adjacent
        self.at = adv[0] if adv and adjacent else 0   # only s/n items stand before it
        self.nb = out_rank - sum(1 for c in kinds if c in ("s", "n"))


def _batch_item(b, layout, count):
    """The index item of the batch axis and the extra index input it needs, if any:
    arange(B) shaped (B,) + (1,) * nb, a constant when B is static."""
    if b.length is not None:
        arr = np.arange(b.length, dtype=np.intp).reshape((b.length,) + (1,) * layout.nb)
        arr.setflags(write=False)
        return ("a", arr), []
    ones = ones_like(astype(b.lead(0), np.int64))
    pos = cumsum(ones, 0) - ones                       # 0, 1, …, B − 1 at run time
    if layout.nb:
        pos = expand_dims(pos, tuple(range(1, layout.nb + 1)))
    return ("t", count), [pos]


def _block_moved(x, at, nb, to_front):
    """Batched ``x``: the nb-axis block moved from after ``at`` basic axes to right
    behind the batch axis (``to_front``), or back."""
    if not at or not nb:
        return x
    n = len(x.shape)
    if to_front:
        perm = (0,) + tuple(range(1 + at, 1 + at + nb)) + tuple(range(1, 1 + at))
    else:
        perm = (0,) + tuple(range(1 + nb, 1 + nb + at)) + tuple(range(1, 1 + nb))
    return transpose(x, perm + tuple(range(1 + at + nb, n)))


def _aligned(b, tensors, flags, nb):
    return [b.align(t, nb) if f else t for t, f in zip(tensors, flags)]


def getitem(b, node, ins, bat):
    x, tensors = ins[0], list(ins[1:])
    layout = Layout(node.attrs["index"], rank_of(x, bat[0]), len(node.shape))
    if not any(bat[1:]) and layout.simple:
        return apply(node.op, x, *tensors, index=(_FULL,) + tuple(node.attrs["index"]))
    tensors = _aligned(b, tensors, bat[1:], layout.nb)
    if not bat[0]:
        # only index nodes carry the batch: numpy puts (B,) + bshape where the block
        # stands (after `at` basic axes), or first
        out = apply(node.op, x, *tensors, index=layout.items)
        if layout.at:
            n = len(out.shape)
            out = transpose(out, (layout.at,) + tuple(k for k in range(n) if k != layout.at))
        return out
    item, extra = _batch_item(b, layout, len(tensors))
    out = apply(node.op, x, *tensors, *extra, index=(item,) + layout.items)
    return _block_moved(out, layout.at, layout.nb, to_front=False)


def scatter_add(b, node, ins, bat):
    """getitem's adjoint: zeros of x's shape with g added at the index."""
    g, x, tensors = ins[0], ins[1], list(ins[2:])
    layout = Layout(node.attrs["index"], len(node.shape), len(node.inputs[0].shape))
    g, x = [v if f else b.materialize(v) for v, f in zip((g, x), bat[:2])]
    if not any(bat[2:]) and layout.simple:
        return apply(node.op, g, x, *tensors, index=(_FULL,) + tuple(node.attrs["index"]))
    tensors = _aligned(b, tensors, bat[2:], layout.nb)
    item, extra = _batch_item(b, layout, len(tensors))
    g = _block_moved(g, layout.at, layout.nb, to_front=True)
    return apply(node.op, g, x, *tensors, *extra, index=(item,) + layout.items)


def rank_of(x, batched):
    return len(x.shape) - (1 if batched else 0)
