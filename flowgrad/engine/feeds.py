"""One feed spec per program: its placeholders (names, dtypes, shapes with run-time
lengths) and variables, declared once and rendered two ways.

- the **reference**: ``FeedSpec.plain(leaf, value)`` (is a feed the plain kind the fast
  path may take as it is, and what is bound) and ``FeedSpec.check_lengths(vals)`` (the
  run-time lengths that must agree: flowgrad/engine/lengths.py's LengthCheck);
- the **generated binder** (flowgrad/engine/codegen.py's ``fast_binder``): the same tests as
  source lines, ``plain_source`` and ``lengths_source``.

A generated binder accepts only plain feeds and hands any other call to the general
binder (``Program.bind``: flowgrad/engine/binding.py's conversions and messages); where it
accepts, it must bind what the reference binds, and where lengths disagree it must
raise the reference's FeedError. tests/test_feed_spec.py cross-checks the two
renderings on fuzzed feeds (a length check tested through one copy only let two
mutants survive).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LeafSpec", "FeedSpec"]

_F64 = np.dtype(np.float64)


@dataclass(frozen=True, slots=True)
class LeafSpec:
    """One placeholder: its node id, feed name, slot, dtype and shape (None: a length
    known only when fed). ``float_scalar``: a 0-d float64, which also takes a Python or
    numpy float as is."""
    node: int
    name: str
    slot: int
    dtype: np.dtype
    shape: tuple

    @property
    def float_scalar(self) -> bool:
        return self.shape == () and self.dtype == _F64

    @property
    def fixed(self) -> tuple:
        """``(axis, length)`` of every axis whose length is declared."""
        return tuple((ax, d) for ax, d in enumerate(self.shape) if d is not None)


@dataclass(slots=True)
class FeedSpec:
    """The feeds of one program: ``placeholders`` (LeafSpec, in the program's order),
    ``variables`` ((slot, node) pairs: bound from their values unless fed), and
    ``lengths`` (the run-time length check, or None when nothing can disagree)."""
    placeholders: tuple
    variables: tuple
    lengths: object = None

    @classmethod
    def of(cls, prog) -> "FeedSpec":
        leaves = tuple(LeafSpec(nid, p.name, prog.slot_of[nid], np.dtype(p.dtype),
                                tuple(p.shape)) for nid, p in prog.placeholders.items())
        return cls(leaves, tuple(prog.variable_slots), prog.check_lengths)

    # -- the reference -------------------------------------------------------------
    @staticmethod
    def plain(leaf, value):
        """The value a plain feed binds (a numpy array of exactly the leaf's dtype, rank
        and declared lengths; a Python or numpy float for a 0-d float64 leaf), else None
        (the general binder decides)."""
        tv = type(value)
        if tv is np.ndarray:
            d = value.dtype
            if (d is not leaf.dtype and d != leaf.dtype) or value.ndim != len(leaf.shape):
                return None
            shape = value.shape
            for ax, n in leaf.fixed:
                if shape[ax] != n:
                    return None
            return value
        if leaf.float_scalar and (tv is float or tv is np.float64):
            return np.asarray(value, np.float64)
        return None

    def check_lengths(self, vals):
        """FeedError where run-time lengths that must agree do not (the bound slots)."""
        if self.lengths is not None:
            self.lengths(vals)

    # -- the generated rendering -----------------------------------------------------
    def plain_source(self, i, miss) -> tuple[dict, list]:
        """``plain`` for placeholder ``i`` as source: the feed in local ``p<i>``, its shape
        left in ``s<i>``; ``miss`` is the line that gives up (to the general binder).
        Returns (globals the lines need, lines)."""
        leaf = self.placeholders[i]
        p = f"p{i}"
        ns = {f"D{i}": leaf.dtype}
        if leaf.float_scalar:           # a Python or numpy float is welcome
            lines = [f"if type({p}) is not ndarray:",
                     f"    if type({p}) is float or type({p}) is float64:",
                     f"        {p} = asarray({p}, float64)",
                     "    else:",
                     "        " + miss]
        else:
            lines = [f"if type({p}) is not ndarray:", "    " + miss]
        lines += [f"d = {p}.dtype",
                  f"if d is not D{i} and d != D{i}:", "    " + miss,
                  f"s{i} = {p}.shape"]
        tests = [f"len(s{i}) != {len(leaf.shape)}"] + [f"s{i}[{ax}] != {n}"
                                                       for ax, n in leaf.fixed]
        lines += [f"if {' or '.join(tests)}:", "    " + miss]
        return ns, lines

    def lengths_source(self, fail_name) -> tuple[dict, list]:
        """``check_lengths`` as source over the ``s<i>`` shape locals of
        ``plain_source``: (globals, lines); none without run-time lengths."""
        if self.lengths is None:
            return {}, []
        shapes = {leaf.slot: f"s{i}" for i, leaf in enumerate(self.placeholders)}
        return {fail_name: self.lengths.fail}, self.lengths.source(shapes, fail_name)
