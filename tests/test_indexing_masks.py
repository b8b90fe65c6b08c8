"""A constant boolean mask must have the shape of the axes it covers, as numpy requires.

The mask becomes integer arrays (its nonzero positions) when the graph is built; before
this check a mask shorter than its axis silently selected from the axis's head
(x[[True, False, True]] of a length-5 x gave x[[0, 2]], where numpy raises), and a mask
over an axis of run-time length could not be checked at all (now refused)."""
import numpy as np
import pytest

import flowgrad as fg


@pytest.mark.parametrize("mask", [[True, False, True, False], [True] * 4 + [False] * 2])
def test_a_mask_of_another_length_is_numpys_error(mask):
    x_val = np.arange(5.0)
    with pytest.raises(IndexError):
        x_val[np.array(mask)]                     # numpy refuses it
    with fg.Graph():
        x = fg.placeholder("x", shape=(5,))
        with pytest.raises(fg.ShapeError, match="boolean index did not match.*size of "
                           f"axis is 5 but size of corresponding boolean axis is {len(mask)}"):
            x[np.array(mask)]


def test_a_two_d_mask_checks_both_axes_and_ellipsis_positions():
    with fg.Graph():
        x = fg.placeholder("x", shape=(2, 3, 4))
        with pytest.raises(fg.ShapeError, match="along axis 2; size of axis is 4 but .* 3"):
            x[..., np.ones((3, 3), bool)]
        with pytest.raises(fg.ShapeError, match="along axis 1; size of axis is 3 but .* 2"):
            x[:, np.ones(2, bool), None]


def test_a_mask_on_a_run_time_axis_is_refused():
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 3))
        with pytest.raises(fg.ShapeError, match="axis 0, whose length is known only at run"):
            x[np.array([True, False, True])]
        y = x[:, np.array([True, False, True])]   # a known axis is fine
        assert y.shape == (None, 2)


@pytest.mark.parametrize("codegen", [True, False])
def test_a_matching_mask_selects_and_its_gradient_scatters(codegen):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 4))
    m = np.array([[True, False, True, True]] * 3)
    m[1, 0] = False
    with fg.Graph():
        x = fg.placeholder("x", shape=(3, 4))
        y = x[m]
        prog = fg.compile([y, fg.grad(fg.sum(y * y), x)], codegen=codegen)
        got, g = prog(x=a)
    np.testing.assert_array_equal(got, a[m])
    np.testing.assert_array_equal(g, np.where(m, 2 * a, 0.0))
