"""Dropout: zero each entry with probability ``rate`` while training, scale the rest by
1/(1 − rate) so the expected value is unchanged; the identity otherwise.

The mask is one random node (``fg.random.bernoulli``) that the forward product and its
gradient both read, so within a run the backward pass uses exactly the forward mask.
"""
from __future__ import annotations

import numbers

import numpy as np

from ..errors import ArgumentError, UsageError
from ..graph import Node
from ..ops.base import as_node, at_user_line, shape_error
from ..ops.elementwise import where
from .. import random as _random
from .scopes import in_scope, unique_scope


def check_arguments(rate, training, seed):
    """Refuse a rate outside [0, 1), a ``training`` that is neither a bool nor a node,
    and a seed that is not a non-negative int: for :func:`dropout` and for the
    Dropout layer when it is made, not first when it is called."""
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0 <= rate < 1:
        raise ArgumentError(f"dropout: rate must be a number in [0, 1), got {rate!r}"
                            + at_user_line())
    if not isinstance(training, (bool, np.bool_, Node)):
        raise UsageError(f"dropout: training must be a bool or a boolean placeholder, "
                         f"got {training!r}" + at_user_line())
    if seed is not None:
        _random.checked_seed(seed, "dropout: seed")


def dropout(x, rate, training=True, seed=None, name=None):
    """``x`` with entries zeroed at random (probability ``rate``) and the rest scaled by
    1/(1 − rate) when ``training``; ``x`` itself when not.

    ``training`` is a Python bool (``False`` returns ``x``: nothing is added to the
    graph) or a boolean 0-d placeholder, chosen per run (``fg.where`` selects).
    """
    x = as_node(x)
    check_arguments(rate, training, seed)
    if isinstance(training, (bool, np.bool_)):
        training = bool(training)
        if not training:
            return x
    elif training.dtype != np.bool_ or training.shape != ():
        raise shape_error("dropout", (x, training),
                          f"training must be a 0-d bool node (a placeholder), got "
                          f"dtype {training.dtype}")
    if x.dtype.kind != "f":
        raise shape_error("dropout", (x,), f"needs a float input, not {x.dtype}")
    if rate == 0:
        return x
    g = x.graph
    keep = 1.0 - float(rate)
    with in_scope(g, unique_scope(g, name or "dropout")):
        mask = _random.bernoulli(None, p=keep, like=x, dtype=x.dtype, seed=seed, name="mask")
        y = x * (mask * (1.0 / keep))
        if training is not True:
            y = where(training, y, x)
    return y
