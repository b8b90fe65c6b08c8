"""fg.batches: mini-batches over numpy arrays, for a training loop.

    for xb, tb in fg.batches(X, T, batch_size=64, epochs=10, seed=0):
        loss = opt.step(prog, x=xb, t=tb)

    for feed in fg.batches(x=X, t=T, batch_size=64):     # keywords: dicts of feeds
        loss = opt.step(prog, **feed)

Rows (axis 0) are batched together across all arrays. Each epoch visits every row
once, in a fresh random order when ``shuffle`` (reproducible with ``seed``). The
last batch of an epoch holds the rows left over and may be smaller than
``batch_size`` (placeholders with a ``None`` length accept it); ``drop_last=True``
skips it instead. The iterator has a ``len`` (batches in all epochs), so a
progress bar knows its total, and ``.epoch`` tells which epoch a batch came from.
"""
from __future__ import annotations

import numpy as np

from ..errors import ArgumentError, UsageError
from ..ops.base import at_user_line

__all__ = ["batches", "Batches"]


class Batches:
    """The iterable returned by :func:`batches`; each ``iter()`` starts over, reseeded."""

    def __init__(self, arrays, names, batch_size, shuffle, seed, epochs, drop_last):
        self.arrays, self.names = arrays, names
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.epochs, self.drop_last = epochs, drop_last
        self.n = len(arrays[0])
        self.epoch = 0

    @property
    def batches_per_epoch(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def __len__(self) -> int:
        if self.epochs is None:
            raise UsageError("batches(..., epochs=None) never ends and has no length"
                             + at_user_line())
        return self.epochs * self.batches_per_epoch

    def __iter__(self):
        rng = np.random.default_rng(self.seed)
        size, stop = self.batch_size, self.batches_per_epoch * self.batch_size
        epoch = 0
        while self.epochs is None or epoch < self.epochs:
            self.epoch = epoch
            order = rng.permutation(self.n) if self.shuffle else None
            for start in range(0, stop, size):
                rows = slice(start, start + size) if order is None else \
                    order[start:start + size]
                yield self._pack([a[rows] for a in self.arrays])
            epoch += 1

    def _pack(self, parts):
        if self.names is not None:
            return dict(zip(self.names, parts))
        return parts[0] if len(parts) == 1 else tuple(parts)

    def __repr__(self):
        return (f"<flowgrad.Batches {self.n} rows, batch_size={self.batch_size}, "
                f"epochs={self.epochs}, shuffle={self.shuffle}>")


def batches(*arrays, batch_size: int, shuffle: bool = True, seed=None, epochs: int | None = 1,
            drop_last: bool = False, **named) -> Batches:
    """Mini-batches of rows of ``arrays`` (positional: yields a tuple, or the array
    itself when there is one) or of ``named`` arrays (keywords: yields ``{name: batch}``
    dicts, ready for ``opt.step(prog, **feed)``).

    - ``batch_size``: rows per batch; the last batch of an epoch may be smaller
      unless ``drop_last=True``.
    - ``shuffle``: a new random order every epoch, from ``np.random.default_rng(seed)``.
    - ``epochs``: passes over the data (``None``: forever).

    Keyword arrays cannot be named like the options (``batch_size``, ``shuffle``,
    ``seed``, ``epochs``, ``drop_last``); pass those positionally instead.
    """
    if arrays and named:
        raise UsageError("pass the arrays either all positionally or all by name" + at_user_line())
    names = list(named) if named else None
    arrays = [np.asarray(a) if not hasattr(a, "shape") else a
              for a in (named.values() if named else arrays)]
    if not arrays:
        raise UsageError("batches needs at least one array" + at_user_line())
    if any(a.ndim == 0 for a in arrays):
        raise ArgumentError("batches splits arrays along axis 0; a 0-d array has no rows"
                            + at_user_line())
    lengths = {len(a) for a in arrays}
    if len(lengths) != 1:
        raise ArgumentError(f"all arrays must have the same number of rows, got "
                            f"{[len(a) for a in arrays]}" + at_user_line())
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ArgumentError(f"batch_size must be a positive int, got {batch_size!r}"
                            + at_user_line())
    if epochs is not None and (not isinstance(epochs, (int, np.integer)) or epochs < 0):
        raise ArgumentError(f"epochs must be a non-negative int or None, got {epochs!r}"
                            + at_user_line())
    it = Batches(arrays, names, int(batch_size), shuffle, seed, epochs, drop_last)
    if it.n == 0 or it.batches_per_epoch == 0:
        raise ArgumentError(f"{it.n} rows make no batch of {batch_size}"
                            + (" with drop_last=True" if drop_last else "") + at_user_line())
    return it
