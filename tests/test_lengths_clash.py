"""A class of run-time lengths pinned to two known lengths (engine/lengths.py): no feed
can satisfy it, and checking only the first pin let the second node be broadcast."""
import numpy as np
import pytest

import flowgrad as fg


@pytest.mark.parametrize("codegen", [True, False])
def test_a_length_pinned_twice_is_checked_against_both(codegen):
    """x + zeros(3) pins x's length to 3; the (1,) tangent of fg.jvp, held to x's shape,
    pins it to 1. Only the first was checked, so a length-3 x ran with the tangent
    broadcast: jvp of Σx² gave 2·Σ 2x = 12 instead of an error."""
    with fg.Graph():
        x = fg.placeholder("x", shape=(None,))
        z = x + np.zeros(3)
        j = fg.jvp(fg.sum(x * x), x, np.array([2.0]))
        prog = fg.compile([z, j], codegen=codegen)
        with pytest.raises(fg.FeedError, match="'x' has length 3.*'tangent for x' has length 1"):
            prog(x=np.ones(3))
        with pytest.raises(fg.FeedError, match="'x' has length 1.*has length 3"):
            prog(x=np.ones(1))
        alone = fg.compile(j, codegen=codegen)           # one pin: length 1 runs
        assert alone(x=np.array([1.5])) == pytest.approx(2 * 1.5 * 2.0 * 1.0)
