"""How much memory reading a file may cost: a budget stated as a multiple of its size.

A graph file is compressed, and an ONNX model can ask for constants of any shape
(``ConstantOfShape``), so without a bound a file of a few kilobytes could make the
reader allocate gigabytes. Every reader in this package therefore takes
``max_bytes=``: the most bytes of data (decompressed members, arrays, constants) that
one file may make it allocate. Left out, it is ``RATIO`` times the file's own size,
and at least ``FLOOR`` bytes, so that a small file may still hold a few ordinary
constants. Each allocation is checked against what is left *before* it is made.

The budget counts data: a graph file's members as they decompress (``graph.json``'s
text and every array), an ONNX model's tensors. Parsing ``graph.json`` makes Python
objects: ~7 bytes per byte of text in a file ``save_graph`` wrote (100–160× the file's
size), but up to ~24 for text made to inflate (``{},`` repeated: an empty dict and a list
slot per three bytes), 1500× a file's size at the text's limit. So before parsing, the
objects are estimated from the text's brackets and commas (``parsed_estimate``: an
overestimate of every kind of JSON value) and may come to at most ``PARSE_RATIO`` times the
budget (``check_parse``). The nodes built from those objects take memory in proportion to
their number, as any graph of that many nodes does, so a file's whole cost stays within
a fixed multiple of its size.
"""
from __future__ import annotations

import os

from flowgrad.errors import GraphFileError

#: default budget: this many bytes of data for each byte of the file ...
RATIO = 64
#: ... but never less than this (bytes)
FLOOR = 1 << 20
#: graph.json's parsed objects, estimated before parsing, may take this many times the
#: budget (a file save_graph wrote estimates at ~150× its size, within 4 × 64)
PARSE_RATIO = 4
#: the estimate's bytes per container ({ or [: a dict or list and its slot) and per comma
#: (a list slot or dict entry and a small value); every byte of text besides (strings)
_PER_CONTAINER, _PER_COMMA = 100, 48


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


def parsed_estimate(text: bytes) -> int:
    """Bytes of Python objects ``json.loads(text)`` may make, from a count of brackets and
    commas (C-level scans, ~10 ms for 64 MB): at least what any JSON text of that shape
    takes, within ~1.3× for graph.json as ``save_graph`` writes it."""
    containers = text.count(b"{") + text.count(b"[")
    return _PER_CONTAINER * containers + _PER_COMMA * text.count(b",") + len(text)


def check_parse(budget: "Budget", text: bytes, what: str):
    """Refuse, before parsing, a JSON text whose objects would take more than
    ``PARSE_RATIO`` times ``budget``'s limit (the reader's error, as ``take``'s)."""
    need = parsed_estimate(text)
    if need > PARSE_RATIO * budget.limit:
        raise budget.error(
            f"{budget.path}: {what} would parse to about {need} bytes of objects, over "
            f"{PARSE_RATIO}× the {budget.limit}-byte budget for this file; "
            + ("raise max_bytes= if you trust the file" if budget.explicit else
               "pass max_bytes= to allow more if you trust it"))
