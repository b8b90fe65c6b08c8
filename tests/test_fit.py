"""opt.fit, History, callbacks (EarlyStopping) and the repr of opt.minimize."""
import numpy as np
import pytest

import flowgrad as fg

PNG = b"\x89PNG\r\n\x1a\n"


def _classifier(seed=0, dropout=0.0):
    fg.random.set_seed(seed)                          # the dropout masks replay too
    x = fg.placeholder("x", shape=(None, 2))
    t = fg.placeholder("t", shape=(None,), dtype="int64")
    training = fg.placeholder("training", shape=(), dtype="bool")
    model = fg.nn.MLP([16, 2], activation=fg.tanh, dropout=dropout, training=training,
                      seed=seed)
    z = model(x)
    loss = fg.softmax_cross_entropy(z, t)
    return x, t, training, model, loss, fg.metrics.accuracy(z, t)


def _blobs(n, seed):
    rng = np.random.default_rng(seed)
    T = rng.integers(0, 2, size=n)
    X = rng.normal(size=(n, 2)) + np.where(T[:, None] == 1, 1.5, -1.5)
    return X, T


def test_fit_history_holds_epoch_means_and_validation():
    X, T = _blobs(100, 0)
    Xv, Tv = _blobs(40, 1)
    with fg.Graph():
        x, t, training, model, loss, acc = _classifier(dropout=0.2)
        opt = fg.optim.Adam(model.variables, lr=0.05)
        seen, programs = [], []

        class Spy(fg.Callback):
            def on_epoch_end(self, epoch, logs, state):
                programs.append((state.step_program, state.eval_program))

        hist = opt.fit(loss, data={x: X, t: T}, epochs=4, batch_size=32,
                       val={x: Xv, t: Tv}, metrics={"acc": acc}, training=training,
                       callbacks=[lambda epoch, logs: seen.append((epoch, dict(logs))),
                                  Spy()], seed=0)
        # compiled once; the evaluation program computes the loss and metrics only
        assert len(set(programs)) == 1
        step, evaluate = programs[0]
        assert evaluate.outputs == [loss, acc] and len(step.outputs) == 2 + 4
        assert evaluate.n_steps < step.n_steps / 2
        assert isinstance(hist, dict) and list(hist) == ["loss", "acc", "val_loss", "val_acc"]
        assert all(len(v) == 4 for v in hist.values()) and hist.epochs == 4
        assert opt.iterations == 4 * 4                      # ceil(100 / 32) batches an epoch
        assert [e for e, _ in seen] == [0, 1, 2, 3]
        assert seen[-1][1] == {k: v[-1] for k, v in hist.items()}
        assert hist["loss"][-1] < hist["loss"][0]
        # the validation numbers are the loss and accuracy of the final variables on the
        # validation data, with dropout off (training=False)
        lv, av = fg.compile([loss, acc])(x=Xv, t=Tv, training=False)
        assert hist["val_loss"][-1] == pytest.approx(float(lv), rel=1e-12)
        assert hist["val_acc"][-1] == pytest.approx(float(av), rel=1e-12)
        assert hist["val_acc"][-1] > 0.85
        assert "4 epochs" in repr(hist) and "val_acc" in repr(hist)


def test_training_metrics_are_row_weighted_means_over_the_epoch():
    X = np.arange(10.0)[:, None]
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 1))
        w = fg.variable(np.zeros(1), name="w")
        loss = fg.mean(x) + 0.0 * fg.sum(w)           # the mean of the batch's rows
        opt = fg.optim.SGD([w], lr=0.1)
        hist = opt.fit(loss, data={x: X}, epochs=2, batch_size=4, metrics={"m": fg.max(x)})
    # batches of 4, 4, 2 rows: the epoch mean of a per-batch mean is the mean of all rows
    assert hist["loss"] == [pytest.approx(4.5, abs=1e-12)] * 2
    # whatever the shuffle, row-weighted mean of batch maxima lies within [3, 9]
    assert all(3 <= m <= 9 for m in hist["m"])


def test_fit_without_shuffle_visits_rows_in_order():
    X = np.arange(6.0)[:, None]
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 1))
        w = fg.variable(np.zeros(1), name="w")
        loss = fg.mean(x) + 0.0 * fg.sum(w)
        firsts = []
        opt = fg.optim.SGD([w], lr=0.1)
        hist = opt.fit(loss, data={x: X}, epochs=1, batch_size=4, shuffle=False,
                       metrics={"first": fg.min(x)},
                       callbacks=[lambda e, logs: firsts.append(logs["first"])])
    assert hist["first"] == [pytest.approx((0 * 4 + 4 * 2) / 6)]
    assert firsts == hist["first"]


def test_early_stopping_restores_the_best_weights():
    # training pulls w to 2; the validation target puts the best w at 1: the validation
    # loss falls, then rises, and early stopping must hand back the best epoch's w
    X = np.ones((8, 1))
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 1))
        t = fg.placeholder("t", shape=(None, 1))
        w = fg.variable(np.zeros((1, 1)), name="w")
        loss = fg.mse(x @ w, t)
        opt = fg.optim.SGD([w], lr=0.15)
        after = []
        stop = fg.EarlyStopping("val_loss", patience=2)
        hist = opt.fit(loss, data={x: X, t: 2 * X}, epochs=50, batch_size=None,
                       val={x: X, t: X},
                       callbacks=[lambda e, logs: after.append(float(w.value[0, 0])), stop])
        best = int(np.argmin(hist["val_loss"]))
        assert hist.stopped_early and hist.epochs == best + 1 + 3    # patience 2, then stop
        assert hist.best_epoch == best == stop.best_epoch
        assert w.value[0, 0] == after[best] and w.value[0, 0] != after[-1]
        assert abs(after[best] - 1) == min(abs(a - 1) for a in after)
        assert float(fg.run(loss, {x: X, t: X})) == pytest.approx(hist["val_loss"][best],
                                                                  rel=1e-12)
        assert "restored epoch" in repr(hist)


def test_early_stopping_modes_and_errors():
    assert fg.EarlyStopping("val_acc").mode == "max"
    assert fg.EarlyStopping("loss").mode == "min"
    with pytest.raises(ValueError, match="mode"):
        fg.EarlyStopping("loss", mode="up")
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 1))
        w = fg.variable(np.zeros(1), name="w")
        loss = fg.sum((x - w) ** 2)
        opt = fg.optim.SGD([w], lr=0.01)
        with pytest.raises(ValueError, match="does not record.*'loss'"):
            opt.fit(loss, data={x: np.ones((4, 1))}, epochs=2,
                    callbacks=[fg.EarlyStopping("val_acc")])
        with pytest.raises(ValueError, match="same number of rows"):
            opt.fit(loss, data={x: np.ones((4, 1)), "y": np.ones(3)})
        with pytest.raises(ValueError, match="scalar"):
            opt.fit(x, data={x: np.ones((4, 1))})
        with pytest.raises(ValueError, match="metric names"):
            opt.fit(loss, data={x: np.ones((4, 1))}, metrics={"val_x": loss})
        with pytest.raises(TypeError, match="callbacks"):
            opt.fit(loss, data={x: np.ones((4, 1))}, callbacks=[3])


def test_history_plot_saves_a_png(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    hist = fg.History(loss=[1.0, 0.5, 0.4], acc=[0.5, 0.8, 0.9], val_loss=[1.1, 0.7, 0.6],
                      val_acc=[0.4, 0.7, 0.8])
    fig = hist.plot(tmp_path / "h.png")
    assert len(fig.axes) == 2 and [a.get_title() for a in fig.axes] == ["loss", "acc"]
    assert [line.get_label() for line in fig.axes[0].lines] == ["training", "validation"]
    assert (tmp_path / "h.png").read_bytes()[:8] == PNG
    with pytest.raises(ValueError, match="empty"):
        fg.History().plot()


def test_minimize_has_a_useful_repr():
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 3))
        layer = fg.nn.Dense(2, seed=0)
        loss = fg.mean(layer(x) ** 2).named("loss")
        opt = fg.optim.Adam(layer.variables, lr=0.01)
        train = opt.minimize(loss)
        train(x=np.ones((4, 3)))
        text = repr(train)
    assert "Adam(lr=0.01)" in text and "'loss'" in text
    assert "[dense/W, dense/b]" in text and "8 parameters" in text
    assert "1 step taken" in text and "numpy" in text


def test_api_contract_model_scripts(tmp_path):
    """API.md, section 7, "Model scripts", as a user writes it."""
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    rng = np.random.default_rng(0)
    X, Xv = rng.normal(size=(128, 16)), rng.normal(size=(32, 16))
    T, Tv = (X[:, 0] > 0).astype(np.int64), (Xv[:, 0] > 0).astype(np.int64)
    with fg.Graph() as g:
        fg.random.set_seed(0)               # the layers' weights and the dropout masks
        x = fg.placeholder("x", shape=(None, 16))
        t = fg.placeholder("t", shape=(None,), dtype="int64")
        is_training = fg.placeholder("is_training", shape=(), dtype="bool")
        layer = fg.nn.Dense(64, activation=fg.relu, init="he")
        h = layer(x)
        assert [v.shape for v in layer.variables] == [(16, 64), (64,)]
        model = fg.nn.MLP([64, 64, 10], activation=fg.relu)
        r = fg.random.normal((None, 8), like=x, seed=0)
        y = fg.nn.dropout(h, 0.5, training=is_training)
        logits = model(y)
        labels = t
        acc = fg.metrics.accuracy(logits, labels)
        k, hot = fg.argmax(logits, axis=1), fg.one_hot(labels, 10)
        assert k.shape == (None,) and hot.shape == (None, 10) and r.shape == (None, 8)
        loss = fg.softmax_cross_entropy(logits, t)
        opt = fg.optim.Adam(layer.variables + model.variables, lr=1e-2)
        hist = opt.fit(loss, data={x: X, t: T, is_training: True}, epochs=10, batch_size=64,
                       val={x: Xv, t: Tv, is_training: False}, metrics={"acc": acc}, seed=0)
        hist.plot(tmp_path / "hist.png")
        assert opt.iterations == 20 and hist["loss"][-1] < 0.5 * hist["loss"][0]
        assert hist["val_loss"][-1] < 0.6 * hist["val_loss"][0] and hist["val_acc"][-1] > 0.65
        text = str(fg.summary(g))
        assert f"total: {16 * 64 + 64 + 64 * 64 * 2 + 64 * 2 + 64 * 10 + 10:,} parameters" in text


# -- issue 18: empty data, repeated fit, History.plot's figure ------------------------------

def _line(n, rows_val=None):
    """A one-weight regression and n rows of data (and a validation set of rows_val)."""
    x = fg.placeholder("x", shape=(None, 1))
    t = fg.placeholder("t", shape=(None, 1))
    w = fg.variable(np.zeros((1, 1)), name="w")
    loss = fg.mse(x @ w, t)
    X = np.arange(1.0, n + 1)[:, None] / max(n, 1)
    data = {x: X, t: 2 * X}
    val = None if rows_val is None else {x: np.ones((rows_val, 1)), t: 2 * np.ones((rows_val, 1))}
    return x, t, w, loss, data, val


@pytest.mark.parametrize("batch_size", [32, None])
def test_fit_refuses_zero_rows_and_trains_on_one(batch_size):
    with fg.Graph():
        x, t, w, loss, data, _ = _line(0)
        opt = fg.optim.SGD([w], lr=0.5)
        with pytest.raises(fg.FeedError, match=r"data: the arrays \['t', 'x'\] have 0 rows"):
            opt.fit(loss, data=data, batch_size=batch_size)
        assert opt.iterations == 0 and w.value[0, 0] == 0.0
    with fg.Graph():
        x, t, w, loss, data, _ = _line(1)          # the first good size: one row
        opt = fg.optim.SGD([w], lr=0.5)
        hist = opt.fit(loss, data=data, epochs=2, batch_size=batch_size)
    # x = 1, t = 2: loss (w − 2)², w ← w − 0.5 · 2(w − 2): one step lands on w = 2
    assert opt.iterations == 2 and hist["loss"] == [4.0, 0.0] and w.value[0, 0] == 2.0


@pytest.mark.parametrize("val_batch_size", [None, 8])
def test_fit_refuses_an_empty_validation_set_and_validates_on_one_row(val_batch_size):
    with fg.Graph():
        x, t, w, loss, data, val = _line(4, rows_val=0)
        opt = fg.optim.SGD([w], lr=0.1)
        with pytest.raises(fg.FeedError, match=r"val: .* 0 rows.*validate on"):
            opt.fit(loss, data=data, val=val, val_batch_size=val_batch_size)
        assert opt.iterations == 0
    with fg.Graph():
        x, t, w, loss, data, val = _line(4, rows_val=1)
        opt = fg.optim.SGD([w], lr=0.1)
        hist = opt.fit(loss, data=data, val=val, val_batch_size=val_batch_size)
        assert hist["val_loss"] == [pytest.approx((w.value[0, 0] - 2) ** 2, rel=1e-12)]
        with pytest.raises(ValueError, match="val_batch_size"):
            opt.fit(loss, data=data, val=val, val_batch_size=0)


def test_repeated_fit_reuses_its_programs_and_equals_one_long_fit():
    runs = []
    for calls, epochs in ((1, 6), (6, 1)):
        with fg.Graph() as g:
            x, t, training, model, loss, acc = _classifier(seed=3)
            opt = fg.optim.Adam(model.variables, lr=0.05)
            X, T = _blobs(24, 0)
            sizes, programs = [], set()
            for _ in range(calls):
                hist = opt.fit(loss, data={x: X, t: T}, epochs=epochs, batch_size=10,
                               shuffle=False, metrics={"acc": acc}, training=training,
                               val={x: X[:5], t: T[:5]},
                               callbacks=[lambda e, logs, s=None: None])
                sizes.append(len(g.nx))
                programs.add(id(opt.training_program(loss, [acc])))
            runs.append(([v.value for v in model.variables], hist["loss"][-1]))
            assert len(set(sizes)) == 1, sizes       # no node added after the first call
            assert len(programs) == 1
    (v1, l1), (v2, l2) = runs
    for a, b in zip(v1, v2):
        np.testing.assert_array_equal(a, b)           # bit for bit: the same steps
    assert l1 == l2


def test_minimize_again_reuses_the_program():
    with fg.Graph() as g:
        w = fg.variable(np.ones(3), name="w")
        loss = fg.l2(w)
        opt = fg.optim.SGD([w], lr=0.1)
        first = opt.minimize(loss)
        n = len(g.nx)
        for _ in range(50):
            again = opt.minimize(loss)
        assert len(g.nx) == n and again.program is first.program
        other = opt.minimize(loss, extras=[fg.sum(w)])  # other extras: a program of its own
        assert other.program is not first.program
        assert other.program.outputs[1] is first.program.outputs[1]   # the same gradient


def test_history_plot_never_touches_pyplots_current_figure(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    hist = fg.History(loss=[1.0, 0.5, 0.4], acc=[0.5, 0.8, 0.9], val_loss=[1.1, 0.7, 0.6])
    mine = plt.figure()
    mine_ax = mine.add_subplot()
    before = plt.get_fignums()
    try:
        fig = hist.plot(tmp_path / "own.png")
        assert plt.gcf() is mine and plt.gca() is mine_ax and plt.get_fignums() == before
        assert fig is not mine and [a.get_title() for a in fig.axes] == ["loss", "acc"]
        assert (tmp_path / "own.png").read_bytes()[:8] == PNG
        # into one given Axes: every curve there, labelled by its key
        host, ax = plt.subplots()
        plt.figure(mine.number)
        assert hist.plot(ax=ax) is host
        assert [line.get_label() for line in ax.lines] == ["loss", "val_loss", "acc"]
        assert plt.gcf() is mine
        # into a sequence of Axes, one per quantity
        host2, axes = plt.subplots(1, 2)
        plt.figure(mine.number)
        assert hist.plot(ax=axes) is host2 and plt.gcf() is mine
        assert [len(a.lines) for a in axes] == [2, 1] and axes[1].get_title() == "acc"
        np.testing.assert_array_equal(axes[0].lines[1].get_ydata(), [1.1, 0.7, 0.6])
        with pytest.raises(ValueError, match="sequence of 2"):
            hist.plot(ax=[ax])
    finally:
        plt.close("all")



class _RowSpy(fg.Callback):
    """Records the rows of each batch from the metric "rows" = Σ 2**row (row indices
    fed as a placeholder beside the data), as sorted lists."""

    def __init__(self, order):
        self.order = order

    def on_batch_end(self, batch, logs, state):
        code = int(logs["rows"])
        self.order.append([k for k in range(code.bit_length()) if code >> k & 1])


def test_fitting_one_epoch_at_a_time_with_a_seed_equals_one_long_fit():
    """With seed=0, three fit calls of one epoch each must shuffle like one fit of three
    epochs: each call began a fresh stream from the seed, so every call repeated the
    first epoch's order (and the weights differed from the long fit's). Checked: each
    epoch visits every row once in a new order, and w is the closed-form SGD over the
    batches seen."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(10, 2))
    Y = X @ np.array([1.0, -2.0])
    results = []
    for calls, epochs in ((1, 3), (3, 1)):
        with fg.Graph():
            x = fg.placeholder("x", shape=(None, 2))
            y = fg.placeholder("y", shape=(None,))
            r = fg.placeholder("r", shape=(None,))
            w = fg.variable(np.zeros(2), name="w")
            loss = fg.mse(x @ w, y)
            opt = fg.optim.SGD([w], lr=0.1)
            order = []
            for _ in range(calls):
                opt.fit(loss, {x: X, y: Y, r: np.arange(10.0)}, epochs=epochs,
                        batch_size=4, seed=0, verbose=False,
                        metrics={"rows": fg.sum(2.0 ** r)}, callbacks=[_RowSpy(order)])
            results.append((w.value.copy(), order))
    (w_long, order_long), (w_calls, order_calls) = results
    assert order_long == order_calls
    np.testing.assert_array_equal(w_long, w_calls)
    epochs = [sum(order_long[3 * e:3 * e + 3], []) for e in range(3)]
    assert all(sorted(e) == list(range(10)) for e in epochs)   # each epoch every row once
    assert len({tuple(map(tuple, order_long[3 * e:3 * e + 3])) for e in range(3)}) == 3
    w = np.zeros(2)
    for batch in order_long:                  # SGD on the mean squared error of a batch
        xb, yb = X[batch], Y[batch]
        w = w - 0.1 * 2 * xb.T @ (xb @ w - yb) / len(batch)
    np.testing.assert_allclose(w_long, w, rtol=1e-12)
