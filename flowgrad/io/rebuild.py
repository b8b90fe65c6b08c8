"""Rebuilding one op node of a file without running the op.

``ops.base.apply`` *evaluates* an op whose inputs are all weak Python-number constants
(``2.0 * 3``), so that arithmetic on scalars folds at once; it keeps the value only when
it is 0-d. A file can name any op over such inputs, with any attributes its checks allow
(a random draw of shape (2³³,) over a weak ``like``), and the loader would then run that
op on the host while building the graph: gigabytes and seconds asked for by a few
hundred bytes of file, before any shape was compared with the record.

A file written by ``save_graph`` never needs that evaluation: a 0-d result would have
been folded when the graph was built (so the record does not describe a built graph),
and any other result is discarded by apply, which then adds the node. ``apply_record``
therefore runs the op's shape inference first: a 0-d result is refused, a small one
(at most ``TRIAL_MAX`` entries) goes through apply as before, so that an op that fails
on Python numbers (``sum_to`` reads ``.ndim``) is refused as the builder would fail,
and a larger one (only ``broadcast_to`` makes one in a built graph) is added from its
inference alone, never run.
"""
from __future__ import annotations

import math

import numpy as np

from flowgrad.errors import GraphFileError

#: the most entries an op over weak scalars may be evaluated to while loading (as the
#: simplifier's constant folding, engine/simplify.FOLD_MAX)
TRIAL_MAX = 1 << 16


def apply_record(op, ins, attrs, where):
    """``apply(op, *ins, **attrs)`` for a record read from a file; an op over weak
    scalar constants only is evaluated only when its result is small (see above)."""
    from flowgrad.ops.base import apply
    if not ins or not all(n.op is None and n.weak for n in ins):
        return apply(op, *ins, **attrs)
    shape, dtype = op.infer(*ins, **attrs)
    shape = tuple(shape)
    if shape == ():
        # apply would fold it to a weak constant: no built graph holds such a node
        raise GraphFileError(f"{where}: {op.name} of Python-number constants folds to a "
                             "constant; the file does not describe a built graph")
    if None not in shape and math.prod(shape) <= TRIAL_MAX:
        return apply(op, *ins, **attrs)      # a few KiB: evaluated as when it was built
    return ins[0].graph.add_node(op, tuple(ins), attrs, shape, np.dtype(dtype))
