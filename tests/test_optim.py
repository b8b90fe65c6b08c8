"""Optimizers against updates computed by hand, schedules, minimize, checkpoints,
the mini-batch iterator and the progress bar."""
import io
import math
from itertools import islice

import numpy as np
import pytest

import flowgrad as fg


def quadratic(w0, dtype=None):
    """loss = ½ Σ w², so the gradient is w itself: every update is easy by hand."""
    w = fg.variable(w0, name="w", dtype=dtype)
    loss = fg.l2(w)
    return w, fg.compile([loss, *fg.grad(loss, [w])])


def run_steps(opt, prog, n):
    return [float(opt.step(prog)) for _ in range(n)]


# -- the update rules, by hand -------------------------------------------------------
def test_sgd_steps_by_hand():
    w, prog = quadratic([1.0, -2.0])
    opt = fg.optim.SGD([w], lr=0.1)
    losses = run_steps(opt, prog, 2)
    # w ← w − 0.1 w = 0.9 w; the loss returned is the one *before* each update
    assert losses == pytest.approx([0.5 * (1 + 4), 0.5 * (0.81 + 3.24)], abs=1e-15)
    np.testing.assert_allclose(w.value, [0.81, -1.62], rtol=0, atol=1e-15)
    assert opt.iterations == 2


def test_momentum_heavy_ball_by_hand():
    w, prog = quadratic(1.0)
    opt = fg.optim.Momentum([w], lr=0.1, momentum=0.9)
    seen = []
    for _ in range(3):
        opt.step(prog)
        seen.append(float(w.value))
    # g=1: v=1, w=0.9 | g=0.9: v=1.8, w=0.72 | g=0.72: v=2.34, w=0.486
    assert seen == pytest.approx([0.9, 0.72, 0.486], abs=1e-14)
    assert float(opt.state[0]["v"]) == pytest.approx(2.34, abs=1e-14)


def test_momentum_nesterov_by_hand():
    w, prog = quadratic(1.0)
    opt = fg.optim.Momentum([w], lr=0.1, momentum=0.9, nesterov=True)
    seen = []
    for _ in range(3):
        opt.step(prog)
        seen.append(float(w.value))
    # g=1:      v=1,      w = 1 − 0.1(1 + 0.9·1)              = 0.81
    # g=0.81:   v=1.71,   w = 0.81 − 0.1(0.81 + 0.9·1.71)     = 0.5751
    # g=0.5751: v=2.1141, w = 0.5751 − 0.1(0.5751 + 0.9·2.1141) = 0.327321
    assert seen == pytest.approx([0.81, 0.5751, 0.327321], abs=1e-14)


def test_adam_bias_correction_by_hand():
    w, prog = quadratic(1.0)
    opt = fg.optim.Adam([w], lr=0.1, betas=(0.9, 0.999), eps=1e-8)
    seen = []
    for _ in range(3):
        opt.step(prog)
        seen.append(float(w.value))
    # t=1, g=1: m=0.1, s=0.001; m̂ = 0.1/0.1 = 1, ŝ = 0.001/0.001 = 1
    assert seen[0] == pytest.approx(1 - 0.1 / (1 + 1e-8), abs=1e-15)
    # t=2, g=0.900000001: m = 0.09 + 0.1 g, s = 0.000999 + 0.001 g²
    g = seen[0]
    m_hat = (0.09 + 0.1 * g) / (1 - 0.9 ** 2)
    s_hat = (0.000999 + 0.001 * g * g) / (1 - 0.999 ** 2)
    assert m_hat == pytest.approx(0.9473684215789473, rel=1e-12)
    assert s_hat == pytest.approx(0.9049524771385824, rel=1e-12)
    assert seen[1] == pytest.approx(g - 0.1 * m_hat / (math.sqrt(s_hat) + 1e-8), abs=1e-15)
    assert seen[1] == pytest.approx(0.8004122297123382, abs=1e-14)
    assert seen[2] == pytest.approx(0.701586274504415, abs=1e-14)


def test_adam_constant_gradient_moves_lr_per_step():
    """With a constant gradient, bias correction makes m̂ = g and ŝ = g² exactly, so
    every step moves each entry by lr·sign(g) — from the first step on."""
    a = np.array([3.0, -0.5, 1e-3])
    w = fg.variable(np.zeros(3), name="w")
    loss = fg.sum(w * a)
    prog = fg.compile([loss, *fg.grad(loss, [w])])
    opt = fg.optim.Adam([w], lr=0.01)
    for k in range(1, 4):
        opt.step(prog)
        np.testing.assert_allclose(w.value, -0.01 * k * np.sign(a), rtol=1e-5)


def test_state_is_per_variable_and_updates_are_out_of_place():
    w = fg.variable([1.0, 2.0], name="w")
    b = fg.variable(-3.0, name="b")
    loss = fg.l2(w) + 2.0 * b          # ∂/∂w = w, ∂/∂b = 2
    prog = fg.compile([loss, *fg.grad(loss, [w, b])])
    opt = fg.optim.Momentum([w, b], lr=0.5, momentum=0.5)
    before = w.value
    opt.step(prog)
    opt.step(prog)
    # w: v=[1,2], w=[0.5,1] | v=[1,2]·0.5+[0.5,1]=[1,2], w=[0,0]
    np.testing.assert_allclose(w.value, [0.0, 0.0], atol=1e-15)
    # b: v=2, b=−4 | v=3, b=−5.5
    assert float(b.value) == pytest.approx(-5.5, abs=1e-15)
    np.testing.assert_array_equal(before, [1.0, 2.0])   # the old array was not mutated
    opt.reset()
    assert opt.iterations == 0 and opt.state == [{}, {}]


def test_float32_variable_stays_float32():
    w, prog = quadratic(np.array([1.0, 2.0], dtype=np.float32))
    opt = fg.optim.Adam([w], lr=0.1)
    opt.step(prog)
    assert w.value.dtype == np.float32 and w.dtype == np.float32
    np.testing.assert_allclose(w.value, [0.9, 1.9], rtol=1e-6)


# -- schedules ---------------------------------------------------------------------
def test_schedule_callable_of_the_iteration():
    w, prog = quadratic(1.0)
    opt = fg.optim.SGD([w], lr=lambda k: 0.1 / (k + 1))
    seen = []
    for _ in range(3):
        seen.append(opt.learning_rate())
        opt.step(prog)
    assert seen == pytest.approx([0.1, 0.05, 0.1 / 3], abs=1e-15)
    # 1 → 0.9 → 0.9·0.95 = 0.855 → 0.855·(1 − 1/30) = 0.8265
    assert float(w.value) == pytest.approx(0.8265, abs=1e-14)


def test_schedule_helpers():
    exp = fg.optim.exponential_decay(0.1, 0.5, every=2)
    assert [exp(k) for k in range(5)] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])
    cos = fg.optim.cosine_decay(1.0, 4)
    assert [cos(k) for k in (0, 1, 2, 4, 10)] == pytest.approx(
        [1.0, 0.5 + 0.5 * math.cos(math.pi / 4), 0.5, 0.0, 0.0], abs=1e-15)
    assert fg.optim.cosine_decay(1.0, 4, final=0.1)(2) == pytest.approx(0.55)


# -- minimize, extras, errors ----------------------------------------------------------
def test_minimize_solves_least_squares(rng):
    A = rng.normal(size=(40, 3))
    y_true = A @ np.array([1.5, -2.0, 0.5]) + 0.3 + 0.01 * rng.normal(size=40)
    x = fg.placeholder("x", shape=(None, 3))
    t = fg.placeholder("t", shape=(None,))
    w = fg.variable(np.zeros(3), name="w")
    b = fg.variable(0.0, name="b")
    loss = fg.mse(fg.linear(x, w, b), t)
    train = fg.optim.Momentum([w, b], lr=0.1, momentum=0.9, nesterov=True).minimize(loss)
    losses = [float(train(x=A, t=y_true)) for _ in range(400)]
    coef, *_ = np.linalg.lstsq(np.hstack([A, np.ones((40, 1))]), y_true, rcond=None)
    np.testing.assert_allclose(np.append(w.value, b.value), coef, atol=1e-8)
    assert losses[-1] < 1e-3 < losses[0]


def test_minimize_with_extras_returns_them():
    w = fg.variable(2.0, name="w")
    loss = fg.l2(w)
    train = fg.optim.SGD(w, lr=0.5).minimize(loss, extras=[w * 10.0])
    loss_v, ten_w = train()
    assert float(loss_v) == 2.0 and float(ten_w) == 20.0 and float(w.value) == 1.0


def test_step_errors():
    w, prog = quadratic([1.0, 2.0])
    b = fg.variable(0.0, name="b")
    with pytest.raises(ValueError, match="2 outputs"):
        fg.optim.SGD([w], lr=0.1).step(fg.compile(fg.l2(w)))
    loss = fg.l2(w) + b
    swapped = fg.compile([loss, *fg.grad(loss, [b, w])])
    with pytest.raises(ValueError, match="not the gradient of the loss .* variable 'w'"):
        fg.optim.SGD([w, b], lr=0.1).step(swapped)
    np.testing.assert_array_equal(w.value, [1.0, 2.0])  # nothing was updated
    with pytest.raises(TypeError, match="fg.variable"):
        fg.optim.SGD([fg.placeholder("p")], lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        fg.optim.Adam([w], lr=-1.0)
    with pytest.raises(ValueError, match="momentum"):
        fg.optim.Momentum([w], lr=0.1, momentum=1.0)
    with pytest.raises(ValueError, match="twice"):
        fg.optim.SGD([w, w], lr=0.1)


def test_api_md_training_snippet():
    """§4 of API.md, verbatim in spirit: compile by hand, then minimize."""
    x = fg.placeholder("x", shape=(None, 2))
    t = fg.placeholder("t", shape=(None,))
    w = fg.variable(np.zeros(2), name="w")
    b = fg.variable(0.0, name="b")
    loss = fg.bce_with_logits(fg.linear(x, w, b), t) + 0.1 * fg.l2(w)
    X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, -1.0]])
    T = np.array([1.0, 0.0, 1.0, 0.0])
    opt = fg.optim.SGD([w, b], lr=0.1)
    prog = fg.compile([loss, *fg.grad(loss, [w, b])])
    first = float(opt.step(prog, x=X, t=T))
    assert first == pytest.approx(math.log(2), abs=1e-15)   # logits 0: BCE = log 2
    # ∂/∂w at 0 = mean((σ(0) − t) x) = ¼([−½, 0] + [0, ½] + [−½, −½] + [−½, −½])
    #           = [−0.375, −0.125];  ∂/∂b = mean(½ − t) = 0
    np.testing.assert_allclose(w.value, [0.0375, 0.0125], atol=1e-15)
    assert float(b.value) == 0.0
    train = opt.minimize(loss)
    for _ in range(50):
        last = float(train(x=X, t=T))
    assert last < first


# -- checkpoints ---------------------------------------------------------------------
def _model():
    with fg.name_scope("layer"):
        W = fg.variable(np.arange(6.0).reshape(2, 3), name="W")
        b = fg.variable(np.array([0.5, -0.5, 1.5]), name="b")
    s = fg.variable(np.float32(2.5), name="scale")
    return W, b, s


def test_save_load_round_trip_graph(tmp_path):
    with fg.Graph() as g:
        W, b, s = _model()
        path = fg.save_variables(tmp_path / "ckpt", g)
        assert path == tmp_path / "ckpt.npz"
        with np.load(path, allow_pickle=False) as f:
            # names are data, values arr "0", "1", … in the same order
            assert f["names"].tolist() == ["layer/W", "layer/b", "scale"]
            np.testing.assert_array_equal(f["0"], np.arange(6.0).reshape(2, 3))
        W.value, b.value, s.value = np.zeros((2, 3)), np.zeros(3), 0.0
        assert fg.load_variables(path, g) == ["layer/W", "layer/b", "scale"]
        np.testing.assert_array_equal(W.value, np.arange(6.0).reshape(2, 3))
        np.testing.assert_array_equal(b.value, [0.5, -0.5, 1.5])
        assert s.value.dtype == np.float32 and float(s.value) == 2.5


def test_save_load_list_and_dict_names(tmp_path):
    W, b, s = _model()
    fg.save_variables(tmp_path / "a.npz", {"weights": W, "bias": b})
    with np.load(tmp_path / "a.npz") as f:
        assert sorted(f["names"].tolist()) == ["bias", "weights"]
    with fg.Graph():  # a fresh model of the same shapes, loaded by a dict of new names
        W2 = fg.variable(np.zeros((2, 3)), name="W2")
        b2 = fg.variable(np.zeros(3), name="b2")
        fg.load_variables(tmp_path / "a.npz", {"weights": W2, "bias": b2})
        np.testing.assert_array_equal(W2.value, W.value)
        np.testing.assert_array_equal(b2.value, [0.5, -0.5, 1.5])
    fg.save_variables(tmp_path / "b.npz", [s])
    s.value = -1.0
    fg.load_variables(tmp_path / "b.npz", [s])
    assert float(s.value) == 2.5


def test_load_errors_change_nothing(tmp_path):
    W, b, s = _model()
    path = fg.save_variables(tmp_path / "m.npz", [W, b])
    with fg.Graph():
        W2 = fg.variable(np.zeros((3, 2)), name="layer/W")   # wrong shape
        b2 = fg.variable(np.full(3, 7.0), name="layer/b")
        with pytest.raises(fg.CheckpointError, match=r"'layer/W'.*\(2, 3\).*\(3, 2\)"):
            fg.load_variables(path, [W2, b2])
        np.testing.assert_array_equal(b2.value, np.full(3, 7.0))  # all or nothing
    with pytest.raises(fg.CheckpointError, match=r"missing from the file: \['scale'\]"):
        fg.load_variables(path, [W, b, s])
    with pytest.raises(fg.CheckpointError, match=r"match no variable: \['layer/b'\]"):
        fg.load_variables(path, [W])
    W.value = np.ones((2, 3))
    assert fg.load_variables(path, [W, s], strict=False) == ["layer/W"]
    np.testing.assert_array_equal(W.value, np.arange(6.0).reshape(2, 3))
    with fg.Graph():
        i = fg.variable(np.zeros(3, dtype=np.int64), name="layer/b")
        with pytest.raises(fg.CheckpointError, match="dtype"):
            fg.load_variables(path, [i], strict=False)


def test_load_refuses_pickles(tmp_path):
    W, b, s = _model()
    np.savez(tmp_path / "evil.npz", **{"layer/W": np.array([object()], dtype=object)})
    with pytest.raises(ValueError, match="allow_pickle"):
        fg.load_variables(tmp_path / "evil.npz", [W], strict=False)


def test_save_rejects_non_variables(tmp_path):
    x = fg.placeholder("x")
    with pytest.raises(TypeError, match="fg.variable"):
        fg.save_variables(tmp_path / "x.npz", [x])
    with fg.Graph():
        a = fg.variable(1.0, name="v")
    with fg.Graph():
        c = fg.variable(2.0, name="v")
    with pytest.raises(ValueError, match="share the name 'v'"):
        fg.save_variables(tmp_path / "v.npz", [a, c])
    assert not list(tmp_path.iterdir())   # nothing half-written


# -- batches -----------------------------------------------------------------------
def test_batches_sizes_and_last_partial_batch():
    X, T = np.arange(20.0).reshape(10, 2), np.arange(10)
    it = fg.batches(X, T, batch_size=4, shuffle=False)
    got = list(it)
    assert len(it) == 3 and [len(tb) for _, tb in got] == [4, 4, 2]
    np.testing.assert_array_equal(got[2][1], [8, 9])
    np.testing.assert_array_equal(got[1][0], X[4:8])
    it = fg.batches(X, T, batch_size=4, shuffle=False, drop_last=True, epochs=3)
    assert len(it) == 6 and [len(tb) for _, tb in it] == [4, 4] * 3


def test_batches_shuffle_is_a_permutation_per_epoch_and_seeded():
    T = np.arange(10)
    it = fg.batches(T, batch_size=3, seed=7, epochs=2)
    epochs = []
    for tb in it:
        if it.epoch == len(epochs):
            epochs.append([])
        epochs[-1].extend(tb.tolist())
    assert [sorted(e) for e in epochs] == [list(range(10))] * 2
    assert epochs[0] != epochs[1] and epochs[0] != list(range(10))
    again = [tb.tolist() for tb in fg.batches(T, batch_size=3, seed=7, epochs=2)]
    assert sum(again, []) == epochs[0] + epochs[1]


def test_batches_keywords_yield_feeds_and_rows_stay_aligned():
    X = np.arange(12.0).reshape(6, 2)
    T = X[:, 0] * 10
    for feed in fg.batches(x=X, t=T, batch_size=4, seed=0):
        assert set(feed) == {"x", "t"}
        np.testing.assert_array_equal(feed["x"][:, 0] * 10, feed["t"])
    forever = fg.batches(T, batch_size=4, epochs=None, shuffle=False)
    assert [len(b) for b in islice(forever, 5)] == [4, 2, 4, 2, 4]
    with pytest.raises(TypeError, match="no length"):
        len(forever)


def test_batches_errors():
    with pytest.raises(ValueError, match=r"same number of rows, got \[3, 4\]"):
        fg.batches(np.zeros(3), np.zeros(4), batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        fg.batches(np.zeros(3), batch_size=0)
    with pytest.raises(ValueError, match="no batch"):
        fg.batches(np.zeros(3), batch_size=4, drop_last=True)
    with pytest.raises(TypeError, match="positionally or all by name"):
        fg.batches(np.zeros(3), t=np.zeros(3), batch_size=2)


def test_minibatch_training_loop():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 2))
    T = X @ np.array([2.0, -1.0]) + 0.5
    x = fg.placeholder("x", shape=(None, 2))
    t = fg.placeholder("t", shape=(None,))
    w = fg.variable(np.zeros(2), name="w")
    b = fg.variable(0.0, name="b")
    train = fg.optim.Adam([w, b], lr=0.05).minimize(fg.mse(fg.linear(x, w, b), t))
    for feed in fg.batches(x=X, t=T, batch_size=10, epochs=60, seed=1):
        train(**feed)
    np.testing.assert_allclose(np.append(w.value, b.value), [2.0, -1.0, 0.5], atol=1e-3)


# -- progress ------------------------------------------------------------------------
def test_progress_shows_metrics_live():
    buf = io.StringIO()
    bar = fg.progress(range(3), desc="fit", disable=False, file=buf, mininterval=0)
    for k in bar:
        bar.update_metrics(loss=np.float64(0.5) / (k + 1), acc=np.array(0.25 * k))
    text = buf.getvalue()
    assert "fit" in text and "3/3" in text
    assert "loss=0.5," in text and "loss=0.1667" in text and "acc=0.5" in text
    assert bar.metrics["loss"] == pytest.approx(0.5 / 3)


def test_progress_silent_off_a_terminal_or_when_asked(capsys):
    bar = fg.progress(range(4))            # pytest's stderr is no terminal
    assert bar.disable
    for k in bar:
        bar.update_metrics(loss=float(k))
    assert bar.metrics == {"loss": 3.0}
    buf = io.StringIO()
    for _ in fg.progress(range(2), disable=True, file=buf):
        pass
    assert buf.getvalue() == "" and capsys.readouterr().err == ""


# -- backends: updates and state stay arrays of the program's backend ---------------------
class _Device(np.ndarray):
    """Stands in for a device array type (cupy's): numpy ops keep the subclass."""


class _DeviceBackend(fg.backends.base.Backend):
    name = "fake-device"
    xp = np

    def asarray(self, value, dtype=None):
        return np.asarray(value, dtype=dtype).view(_Device)

    def owns(self, array):
        return isinstance(array, _Device)

    def to_numpy(self, array):
        return np.asarray(array).view(np.ndarray)


@pytest.mark.parametrize("make", [
    lambda v: fg.optim.SGD(v, lr=0.1),
    lambda v: fg.optim.Momentum(v, lr=0.1, momentum=0.9, nesterov=True),
    lambda v: fg.optim.Adam(v, lr=0.1),
    lambda v: fg.optim.AdamW(v, lr=0.1, clipnorm=0.5),
    lambda v: fg.optim.RMSProp(v, lr=0.1, momentum=0.5, centered=True, weight_decay=0.1),
    lambda v: fg.optim.Adagrad(v, lr=0.1, global_clipnorm=0.3, check_finite=True),
    lambda v: fg.optim.SGD(v, lr=0.1, clipvalue=0.5),
])
def test_updates_stay_on_the_programs_backend(make):
    results = []
    for backend in ("numpy", _DeviceBackend()):
        with fg.Graph():
            w = fg.variable(np.array([1.0, -2.0]), name="w")
            loss = fg.l2(w) + fg.sum(fg.exp(w))
            opt = make([w])
            train = opt.minimize(loss, backend=backend)
            for _ in range(3):
                train()
            on_device = isinstance(backend, _DeviceBackend)
            assert isinstance(w.value, _Device) == on_device
            for state in opt.state[0].values():
                assert isinstance(state, _Device) == on_device
            results.append(fg.to_numpy(w.value))
    np.testing.assert_array_equal(results[0], results[1])
    assert not np.allclose(results[0], [1.0, -2.0])
