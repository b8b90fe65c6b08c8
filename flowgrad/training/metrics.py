"""fg.metrics: evaluation metrics as graph nodes (scalars, no useful gradient).

    acc = fg.metrics.accuracy(logits, labels)      # labels: class indices or one-hot rows
    fg.run(acc, {x: X, t: T})

Build them next to the loss and hand them to ``opt.fit(…, metrics={"acc": acc})``.
"""
from __future__ import annotations

from ..ops.base import as_node, shape_error
from ..ops.classification import argmax
from ..ops.elementwise import equal, greater, where
from ..ops.reductions import mean

__all__ = ["accuracy"]


def accuracy(logits, labels, axis=-1):
    """The fraction of rows whose predicted class is right (float64, in [0, 1]).

    - multi-class: ``logits`` (…, classes) scored along ``axis``; ``labels`` integer
      class indices shaped like ``logits`` without that axis, or one-hot (or
      probability) rows shaped like ``logits`` (their argmax is the class).
    - binary: ``logits`` with no class axis (shape like ``labels``) or a class axis of
      length 1; the prediction is ``logit > 0`` and ``labels`` are 0/1 (ints, floats
      or bools; a float label counts as 1 above 0.5).
    """
    z, t = as_node(logits), as_node(labels)
    if not z.shape:
        raise shape_error("accuracy", (z, t), "logits need at least one axis (the rows)")
    nd = len(z.shape)
    ax = axis % nd
    if z.shape[ax] == 1 or (nd == 1 and len(t.shape) == 1):   # binary: logit > 0
        if z.shape[ax] == 1 and len(t.shape) == nd - 1:
            z = z[(slice(None),) * ax + (0,)]
        if len(t.shape) != len(z.shape):
            raise shape_error("accuracy", (z, t), "binary labels must be shaped like the "
                                                  "logits")
        pred = greater(z, 0)
        truth = t if t.dtype.kind == "b" else greater(t, 0.5)
    elif t.dtype.kind in "iu":
        want = z.shape[:ax] + z.shape[ax + 1:]
        if len(t.shape) != len(want) or any(a is not None and b is not None and a != b
                                            for a, b in zip(t.shape, want)):
            raise shape_error("accuracy", (z, t), "integer labels must have the logits' "
                                                  "shape without the class axis")
        pred, truth = argmax(z, axis=ax), t
    else:
        if len(t.shape) != len(z.shape) or any(
                a is not None and b is not None and a != b for a, b in zip(t.shape, z.shape)):
            raise shape_error("accuracy", (z, t), "one-hot labels must be shaped like the "
                                                  "logits (or pass integer class indices)")
        pred, truth = argmax(z, axis=ax), argmax(t, axis=ax)
    return mean(where(equal(pred, truth), 1.0, 0.0))


def __dir__():
    # the public names only: dir(fg.metrics) shows no np, math or threading
    return sorted(__all__)
