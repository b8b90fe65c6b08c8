"""fit's guards and callbacks: TerminateOnNaN (a non-finite loss or gradient stops fit
before the step writes), the per-batch hooks, ModelCheckpoint, ReduceLROnPlateau."""
import warnings

import numpy as np
import pytest

import flowgrad as fg


def _diverging():
    """Least squares with x = 3 and SGD(lr=1): each step multiplies w − 2/3 by −17, so
    the loss overflows to inf after some 250 steps."""
    x = fg.placeholder("x", shape=(None, 1))
    t = fg.placeholder("t", shape=(None, 1))
    w = fg.variable(np.zeros((1, 1)), name="w")
    b = fg.variable(np.zeros(1), name="b")
    loss = fg.mse(x @ w + b, t)
    return {x: np.full((4, 1), 3.0), t: np.full((4, 1), 2.0)}, w, b, loss


class Recorder(fg.Callback):
    def __init__(self, variables):
        self.variables, self.begins, self.ends = variables, [], []

    def on_batch_begin(self, batch, logs, state):
        self.begins.append((state.epoch, batch, [v.value.copy() for v in self.variables],
                            state.optimizer.iterations))

    def on_batch_end(self, batch, logs, state):
        self.ends.append((state.epoch, batch, dict(logs)))


def test_a_diverging_fit_stops_before_the_bad_step_writes():
    with fg.Graph():
        data, w, b, loss = _diverging()
        opt = fg.optim.SGD([w, b], lr=1.0)
        rec = Recorder([w, b])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)    # numpy's overflow on the way
            with pytest.raises(fg.NumericsError) as info:
                opt.fit(loss, data=data, epochs=1000, batch_size=2, shuffle=False,
                        callbacks=[rec])
    err = info.value
    epoch, batch, before, steps = rec.begins[-1]
    assert (err.epoch, err.batch) == (epoch, batch) and batch in (0, 1)
    assert f"epoch {epoch + 1}/1000, batch {batch + 1}/2" in str(err)
    assert "loss" in str(err) and "inf" in str(err) and err.node is loss
    # the refused step wrote nothing: the values and the count from before it
    np.testing.assert_array_equal(w.value, before[0])
    np.testing.assert_array_equal(b.value, before[1])
    assert np.isfinite(w.value).all() and opt.iterations == steps
    assert len(rec.ends) == len(rec.begins) - 1 and np.isfinite(rec.ends[-1][2]["loss"])
    assert opt.check_finite is False                  # fit put the setting back


def test_terminate_on_nan_can_be_turned_off():
    with fg.Graph():
        data, w, b, loss = _diverging()
        opt = fg.optim.SGD([w, b], lr=1.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            hist = opt.fit(loss, data=data, epochs=400, batch_size=None,
                           terminate_on_nan=False)
    assert not np.isfinite(hist["loss"][-1]) and not np.isfinite(w.value).all()


def test_a_non_finite_gradient_with_a_finite_loss_is_refused():
    with fg.Graph():
        x = fg.placeholder("x", shape=(None,))
        w = fg.variable(np.array([1.0, 0.0, 4.0]), name="w")
        v = fg.variable(1.0, name="v")
        loss = fg.sum(fg.sqrt(w)) * fg.mean(x) + v * v     # ∂/∂w at w = 0: inf
        opt = fg.optim.Adam([v, w], lr=0.1)
        with pytest.raises(fg.NumericsError,
                           match=r"batch 1/1 .*gradient w.r.t. variable 'w' holds 1 "
                                 r"non-finite entry \(of 3\)"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)       # sqrt's 1/0
            opt.fit(loss, data={x: np.ones(3)}, batch_size=None)
        assert opt.iterations == 0 and opt.state == [{}, {}] and float(v.value) == 1.0
        # a plain step checks only when asked
        prog = opt.training_program(loss)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            opt.step(prog, x=np.ones(3))
        assert opt.iterations == 1 and np.isnan(w.value[1])


def test_finite_gradients_whose_sum_overflows_are_accepted():
    with fg.Graph():
        w = fg.variable(np.array([0.5, 0.5]), name="w")
        loss = fg.sum(w * np.array([1.5e308, 1.5e308]))   # 1.5e308; gradient finite too
        opt = fg.optim.SGD([w], lr=1e-308, check_finite=True)
        with warnings.catch_warnings():
            warnings.simplefilter("error")       # the check's overflowing sum is silent
            assert float(opt.minimize(loss)()) == 1.5e308
        np.testing.assert_allclose(w.value, [-1.0, -1.0], rtol=1e-12)   # 0.5 − 1.5
        opt_nan = fg.optim.SGD([w], lr=0.1, check_finite=True)
        with pytest.raises(fg.NumericsError, match=r"step 1: the loss .* is nan"):
            opt_nan.minimize(fg.sum(w) * np.nan)()


def test_batch_hooks_see_each_batch_in_order():
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 1))
        w = fg.variable(np.zeros(1), name="w")
        loss = fg.mean(x) + 0.0 * fg.sum(w)
        rec = Recorder([w])
        opt = fg.optim.SGD([w], lr=0.1)
        opt.fit(loss, data={x: np.arange(5.0)[:, None]}, epochs=2, batch_size=2,
                shuffle=False, metrics={"top": fg.max(x)}, callbacks=[rec])
    assert [(e, k) for e, k, _, _ in rec.begins] == [(0, 0), (0, 1), (0, 2),
                                                     (1, 0), (1, 1), (1, 2)]
    assert [logs for _, _, logs in rec.ends[:3]] == [
        {"loss": 0.5, "size": 2, "top": 1.0}, {"loss": 2.5, "size": 2, "top": 3.0},
        {"loss": 4.0, "size": 1, "top": 4.0}]
    assert [s for _, _, _, s in rec.begins] == [0, 1, 2, 3, 4, 5]


def test_a_batch_hook_may_stop_training():
    class StopAfterTwo(fg.Callback):
        def on_batch_end(self, batch, logs, state):
            if batch == 1:
                state.stop = True
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 1))
        w = fg.variable(np.zeros(1), name="w")
        opt = fg.optim.SGD([w], lr=0.1)
        hist = opt.fit(fg.mean(x * w), data={x: np.ones((6, 1))}, epochs=5, batch_size=2,
                       callbacks=[StopAfterTwo()])
    assert hist.stopped_early and hist.epochs == 1 and opt.iterations == 3


def _regression(lr=0.15):
    """Training pulls w to 2 while the validation target is 1 (val_loss falls, then rises)."""
    x = fg.placeholder("x", shape=(None, 1))
    t = fg.placeholder("t", shape=(None, 1))
    w = fg.variable(np.zeros((1, 1)), name="w")
    loss = fg.mse(x @ w, t)
    X = np.ones((8, 1))
    return w, loss, {x: X, t: 2 * X}, {x: X, t: X}, fg.optim.SGD([w], lr=lr)


def test_model_checkpoint_every_epoch_and_best_only(tmp_path):
    with fg.Graph() as g:
        w, loss, data, val, opt = _regression()
        after = []
        every = fg.ModelCheckpoint(tmp_path / "e{epoch:02d}-{val_loss:.3f}.npz",
                                   save_best_only=False)
        best = fg.ModelCheckpoint(tmp_path / "best.npz", monitor="val_loss",
                                  save_best_only=True)
        hist = opt.fit(loss, data=data, val=val, epochs=6, batch_size=None,
                       callbacks=[lambda e, logs: after.append(w.value.copy()), every, best])
        assert [p.name for p in every.saved] == [
            f"e{k + 1:02d}-{v:.3f}.npz" for k, v in enumerate(hist["val_loss"])]
        k_best = int(np.argmin(hist["val_loss"]))
        assert 0 < k_best < 5                                  # falls, then rises
        assert len(best.saved) == k_best + 1                   # saved while improving only
        for k, path in enumerate(every.saved):
            fg.load_variables(path, g)
            np.testing.assert_array_equal(w.value, after[k])
        fg.load_variables(best.saved[-1], g)
        np.testing.assert_array_equal(w.value, after[k_best])
        with pytest.raises(ValueError, match="ModelCheckpoint monitors 'val_acc'"):
            opt.fit(loss, data=data, callbacks=[fg.ModelCheckpoint(
                tmp_path / "x.npz", monitor="val_acc", save_best_only=True)])


def test_reduce_lr_on_plateau_matches_torch():
    torch = pytest.importorskip("torch")
    losses = [1.0, 0.9, 0.95, 0.92, 0.91, 0.93, 0.8, 0.85, 0.86, 0.87, 0.88, 0.89, 0.9, 0.7,
              0.75, 0.76, 0.77, 0.78, 0.79, 0.8, 0.81]
    for patience, cooldown in ((2, 0), (1, 2), (0, 1)):
        p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
        topt = torch.optim.SGD([p], lr=1.0)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            topt, mode="min", factor=0.5, patience=patience, threshold=0.0,
            threshold_mode="abs", cooldown=cooldown, min_lr=0.05)
        with fg.Graph():
            w = fg.variable(0.0, name="w")
            opt = fg.optim.SGD([w], lr=1.0)
            cb = fg.ReduceLROnPlateau("val_loss", factor=0.5, patience=patience,
                                      cooldown=cooldown, min_lr=0.05)

            class State:
                optimizer = opt
            cb.on_train_begin(State)
            for epoch, v in enumerate(losses):
                sched.step(v)
                cb.on_epoch_end(epoch, {"val_loss": v}, State)
                assert opt.lr == topt.param_groups[0]["lr"], (patience, cooldown, epoch)
        assert cb.reductions and opt.lr < 1.0


def test_reduce_lr_on_plateau_in_fit_and_its_errors():
    with fg.Graph():
        w, loss, data, val, opt = _regression()
        cb = fg.ReduceLROnPlateau("val_loss", factor=0.5, patience=0)
        hist = opt.fit(loss, data=data, val=val, epochs=8, batch_size=None, callbacks=[cb])
        rises = [k for k in range(1, 8) if hist["val_loss"][k] >= min(hist["val_loss"][:k])]
        assert [e for e, _ in cb.reductions] == rises
        assert opt.lr == 0.15 * 0.5 ** len(rises)
        opt2 = fg.optim.SGD([w], lr=fg.optim.step_decay(0.1, 5))
        with pytest.raises(fg.OptimizerError, match="schedule"):
            opt2.fit(loss, data=data, callbacks=[fg.ReduceLROnPlateau("loss")])
    with pytest.raises(ValueError, match="factor"):
        fg.ReduceLROnPlateau(factor=1.0)
    with pytest.raises(ValueError, match="patience"):
        fg.ReduceLROnPlateau(patience=-1)


def test_schedules_warmup_cosine_and_step_decay():
    f = fg.optim.warmup_cosine(1.0, warmup=4, steps=14, final=0.1)
    assert [f(k) for k in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == 1.0 and f(9) == pytest.approx(0.55, abs=1e-15)   # half-way down
    assert f(14) == pytest.approx(0.1, abs=1e-15) and f(100) == pytest.approx(0.1, abs=1e-15)
    assert fg.optim.warmup_cosine(2.0, 0, 10)(0) == 2.0
    s = fg.optim.step_decay(1.0, 3, factor=0.5)
    assert [s(k) for k in range(7)] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25]
    m = fg.optim.step_decay(1.0, [2, 5], factor=0.1)
    assert [m(k) for k in range(7)] == pytest.approx([1, 1, 0.1, 0.1, 0.1, 0.01, 0.01])
    with pytest.raises(ValueError, match="steps"):
        fg.optim.warmup_cosine(1.0, 5, 5)
    with pytest.raises(ValueError, match="increasing"):
        fg.optim.step_decay(1.0, [5, 5])
    with pytest.raises(ValueError, match="every"):
        fg.optim.step_decay(1.0, 0)


def test_schedules_match_torch_step_lr_and_multistep_lr():
    torch = pytest.importorskip("torch")
    p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    for make, ours in ((lambda o: torch.optim.lr_scheduler.StepLR(o, 3, gamma=0.5),
                        fg.optim.step_decay(0.2, 3, factor=0.5)),
                       (lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [2, 7], gamma=0.1),
                        fg.optim.step_decay(0.2, [2, 7], factor=0.1))):
        topt = torch.optim.SGD([p], lr=0.2)
        sched = make(topt)
        for k in range(12):
            assert ours(k) == pytest.approx(topt.param_groups[0]["lr"], rel=1e-14), k
            topt.step()
            sched.step()


def test_a_float16_fit_whose_gradient_sum_overflows_trains_without_a_warning():
    """fit's check sums each gradient; a float16 gradient of three 30000s is finite but
    sums past float16's 65504. The check must neither warn (under warnings-as-errors
    that was a RuntimeWarning out of a healthy fit) nor refuse: it looks entry by entry.
    Closed form: loss = 30000·Σw has the gradient (30000, 30000, 30000) at every step."""
    with fg.Graph():
        w = fg.variable(np.array([0.5, 0.0, -0.5], dtype=np.float16), name="w")
        x = fg.placeholder("x", shape=(None,), dtype="float16")
        loss = fg.sum(w * np.float16(30000.0)) + 0.0 * fg.sum(x)
        opt = fg.optim.SGD([w], lr=2.0 ** -18)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            hist = opt.fit(loss, data={x: np.zeros(2, np.float16)}, epochs=3, batch_size=1,
                           shuffle=False, verbose=False)
        assert opt.iterations == 6 and w.value.dtype == np.float16
        want = np.array([0.5, 0.0, -0.5]) - 6 * 30000.0 * 2.0 ** -18   # steps of 0.1144
        np.testing.assert_allclose(w.value.astype(float), want, rtol=0, atol=5e-3)
        step = -30000.0 * 3 * 6 * 30000.0 * 2.0 ** -18 / 6       # the loss falls this a step
        # each epoch's loss: the mean of its two steps' losses, taken before each step
        assert hist["loss"] == pytest.approx([step * (4 * e + 1) / 2 for e in range(3)],
                                             rel=2e-2)


def test_the_check_adds_no_warning_of_its_own():
    """An inf fed in gives an inf loss and gradient quietly; the refusal is the
    NumericsError alone (no numpy warning from the check's own inf − inf)."""
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 2))
        w = fg.variable(np.array([1.0, -1.0]), name="w")
        loss = fg.mean(x @ w)
        opt = fg.optim.SGD([w], lr=0.1)
        X = np.array([[1.0, 2.0], [np.inf, 1.0]])
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(fg.NumericsError, match=r"epoch 1/1, batch 2/2.*loss.* inf"):
                opt.fit(loss, data={x: X}, batch_size=1, shuffle=False)
        assert opt.iterations == 1
