"""fg.precision_audit (issue 23): each node's float32 error against float64, and the node
where digits are lost marked, with the stable form suggested."""
import numpy as np
import pytest

import flowgrad as fg


@pytest.fixture
def g():
    with fg.Graph() as graph:
        yield graph


def test_cancellation_is_the_worst_node(g):
    x = fg.placeholder("x", (3,))
    w = fg.variable(np.array([0.5, 2.0, -1.0]), name="w")
    onepx = (1 + x).named("onepx")
    cancel = (onepx - 1).named("cancel")
    loss = fg.sum(cancel * w).named("loss")
    X = np.array([1e-6, 2e-7, 3e-8])
    aud = fg.precision_audit(loss, {x: X}, dtype="float32")
    assert aud.worst is cancel
    # the error by hand, in numpy: float32 (1 + x) − 1 against float64
    x32 = X.astype(np.float32)
    by_hand = np.max(np.abs(((np.float32(1) + x32) - np.float32(1)).astype(float) - ((1 + X) - 1)))
    assert aud.error(cancel) == pytest.approx(by_hand / np.max(np.abs((1 + X) - 1)), rel=1e-12)
    assert aud.error(onepx) < 1e-7                      # one rounding: not marked
    assert [r.node for r in aud.marked] == [cancel]    # the loss only inherits it
    row = aud.marked[0]
    assert row.digits > 4 and "(1 + x) − 1 cancels" in row.suggestion
    assert "'cancel' (sub)" in aud.table() and "digits lost" in aud.table()


@pytest.mark.parametrize("build, hint", [
    (lambda x: fg.log(1 + x), "fg.log1p"),
    (lambda x: 1 - fg.sigmoid(x + 17.0), "fg.sigmoid(−z)"),
])
def test_unstable_forms_are_marked_with_their_stable_form(g, build, hint):
    x = fg.placeholder("x", (2,))
    y = build(x)
    aud = fg.precision_audit(fg.sum(y), {x: np.array([3e-8, 1e-7])})
    assert aud.worst is y or aud.worst in y.inputs
    assert any(hint in (r.suggestion or "") for r in aud.marked)


def test_stable_forms_are_not_marked(g):
    x = fg.placeholder("x", (2,))
    loss = fg.sum(fg.log1p(x) + fg.sigmoid(-(x + 17.0)))
    aud = fg.precision_audit(loss, {"x": np.array([3e-8, 1e-7])})
    assert aud.marked == []
    assert max(r.error for r in aud.rows) < 1e-6


def test_same_precision_has_no_error_and_ints_pass_through(g):
    x = fg.placeholder("x", (3,))
    i = fg.placeholder("i", (), dtype="int64")
    y = fg.sum(x * 3.0) + i
    aud = fg.precision_audit(y, {x: np.array([0.1, 0.2, 0.3]), i: 7}, dtype="float64")
    assert all(r.error == 0.0 for r in aud.rows) and aud.marked == []


def test_bad_dtype_is_a_usage_error(g):
    x = fg.placeholder("x", ())
    with pytest.raises(fg.UsageError, match="must be a float dtype, got int32"):
        fg.precision_audit(x * 2, {x: 1.0}, dtype="int32")
    with pytest.raises(fg.UsageError, match="not one flowgrad knows"):
        fg.precision_audit(x * 2, {x: 1.0}, dtype="f32")
    with pytest.raises(KeyError, match="not part of this audit"):
        fg.precision_audit(x * 2, {x: 1.0}).error(fg.placeholder("other", ()))


def test_draw_audit_shades_where_digits_are_lost(g):
    x = fg.placeholder("x", (3,))
    cancel = ((1 + x) - 1).named("cancel")
    loss = fg.sum(cancel * cancel).named("loss")
    aud = fg.precision_audit(loss, {x: np.array([1e-6, 2e-7, 3e-8])})
    src = fg.viz.draw(aud).source
    assert "digits lost here" in src and "#F08A5D" in src
    assert "digits lost (inherited)" in src       # the loss carries the error on
    colours, captions = aud.shading()
    assert colours[cancel] == "#F08A5D" and captions[loss].endswith("(inherited)")


def test_a_nan_in_both_precisions_is_no_lost_digit(g):
    """sqrt(−1) is NaN in float64 and float32 alike: they agree there, and the error is
    that of the finite entries (found by helper qa-viz: NaN != NaN made it an infinite
    error, the sqrt marked as losing all 7.2 digits and named the worst node)."""
    x = fg.placeholder("x", (3,))
    root = fg.sqrt(x).named("root")
    loss = fg.sum(fg.where(x > 0, root, 0.0) * 2.0)
    X = np.array([-1.0, 2.0, 3.0])
    with np.errstate(invalid="ignore"):
        aud = fg.precision_audit(loss, {x: X}, dtype="float32")
        r64, r32 = np.sqrt(X), np.sqrt(X.astype(np.float32)).astype(float)
    by_hand = np.max(np.abs(r32[1:] - r64[1:])) / np.max(np.abs(r64[1:]))
    assert aud.error(root) == pytest.approx(by_hand, rel=1e-12) and 0 < by_hand < 6e-8
    assert aud.marked == []
    # a NaN in one precision only is still every digit lost
    y = fg.placeholder("y", ())
    big = fg.exp(y).named("big")              # exp(100) overflows in float32 only
    fin = fg.exp(y - 99.0).named("fin")
    aud = fg.precision_audit(fg.sum(big - big * 1.0 + fin), {y: 100.0}, dtype="float32")
    assert aud.error(big) == np.inf and aud.worst is big
