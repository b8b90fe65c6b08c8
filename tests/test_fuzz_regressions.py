"""Bugs the fuzzer (tests/test_fuzz.py) found, one regression test each: the op accepted
operands it cannot take and failed later with a raw Python/numpy error, or silently did
something else."""
import numpy as np
import pytest

import flowgrad as fg


def test_logsumexp_of_an_empty_axis_is_refused_when_built():
    # 1.0: built fine, then numpy's "zero-size array to reduction operation maximum"
    x = fg.placeholder("x", shape=(0, 2))
    with pytest.raises(fg.ShapeError, match="logsumexp.*zero-size axis"):
        fg.logsumexp(x, axis=0)
    with pytest.raises(fg.ShapeError, match="zero-size axis"):
        fg.log_softmax(x, axis=0)
    assert fg.logsumexp(x, axis=1).shape == (0,)      # reducing the other axis is fine


def test_concatenate_of_zero_dimensional_operands_is_a_shape_error():
    # 1.0: ZeroDivisionError (axis % 0)
    a, b = fg.placeholder("a"), fg.placeholder("b")
    with pytest.raises(fg.ShapeError, match="zero-dimensional.*fg.stack"):
        fg.concatenate([a, b])
    assert fg.stack([a, b]).shape == (2,)


def test_transpose_axes_out_of_range_are_refused_not_wrapped():
    # 1.0: transpose(x, (1,)) of a 1-d x wrapped 1 % 1 = 0 and returned x
    x = fg.placeholder("x", shape=(3,))
    with pytest.raises(fg.ShapeError, match=r"axes \(1,\) are out of range"):
        fg.transpose(x, (1,))
    y = fg.placeholder("y", shape=(2, 3))
    with pytest.raises(fg.ShapeError, match="out of range"):
        fg.transpose(y, (0, 2))
    assert fg.transpose(y, (-1, 0)).shape == (3, 2)


def test_broadcast_to_a_negative_length_is_a_shape_error():
    # 1.0: built with shape (-1,), then numpy's "all elements of broadcast shape must be
    # non-negative" at run time
    with pytest.raises(fg.ShapeError, match="negative length"):
        fg.broadcast_to(fg.placeholder("x"), (-1,))
    assert fg.run(fg.broadcast_to(fg.constant(np.float64(2.0)), (2,)), {}).tolist() == [2.0, 2.0]
