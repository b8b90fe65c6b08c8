"""How much memory reading a file may cost: a budget stated as a multiple of its size.

A graph file is compressed, and an ONNX model can ask for constants of any shape
(``ConstantOfShape``), so without a bound a file of a few kilobytes could make the
reader allocate gigabytes. Every reader in this package therefore takes
``max_bytes=``: the most bytes of data (decompressed members, arrays, constants) that
one file may make it allocate. Left out, it is ``RATIO`` times the file's own size,
and at least ``FLOOR`` bytes, so that a small file may still hold a few ordinary
constants. Each allocation is checked against what is left *before* it is made.

The budget counts data: a graph file's members as they decompress (``graph.json``'s
text and every array), an ONNX model's tensors. The nodes built from that data take
memory in proportion to their number, as any graph of that many nodes does (parsing
``graph.json`` costs at most a few tens of bytes per byte of its text), so a file's
whole cost stays within a fixed multiple of its size.
"""
from __future__ import annotations

import os

from flowgrad.errors import GraphFileError

#: default budget: this many bytes of data for each byte of the file ...
RATIO = 64
#: ... but never less than this (bytes)
FLOOR = 1 << 20


def default_budget(file_size: int) -> int:
    """The budget of a file of ``file_size`` bytes when the caller gives no max_bytes."""
    return max(RATIO * int(file_size), FLOOR)


def check_max_bytes(max_bytes):
    """``max_bytes`` as given by a caller: None or a non-negative int."""
    if max_bytes is None:
        return None
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
        raise TypeError(f"max_bytes must be None or a non-negative int, got {max_bytes!r}")
    return max_bytes


class Budget:
    """Bytes a file may still make its reader allocate; ``take`` refuses before the fact."""

    def __init__(self, path, file_size: int, max_bytes=None, error=GraphFileError):
        self.path = os.fspath(path) if not hasattr(path, "read") else repr(path)
        given = check_max_bytes(max_bytes)
        self.limit = default_budget(file_size) if given is None else given
        self.explicit = given is not None
        self.left = self.limit
        self.error = error         # the reader's own GraphFileError subclass

    def take(self, nbytes: int, what: str):
        """Charge ``nbytes`` for ``what``, or raise the reader's error if over the budget."""
        if nbytes > self.left:
            raise self.error(
                f"{self.path}: {what} would take {nbytes} bytes, over what is left of the "
                f"{self.limit}-byte budget for this file ({self.left} bytes); "
                + ("raise max_bytes= if you trust the file" if self.explicit else
                   f"by default a file may ask for {RATIO}× its own size (at least "
                   f"{FLOOR} bytes): pass max_bytes= to allow more if you trust it"))
        self.left -= nbytes
