"""Every deliberate refusal of an argument is a fg.FlowgradError that names the user's
line, and is still an instance of the builtin it used to be (ValueError, TypeError), so
that ``except ValueError`` callers keep working. Each case is the first bad value."""
import pathlib

import numpy as np
import pytest

import flowgrad as fg


def _x4():
    return fg.placeholder("x", shape=(1, 1, 6, 6))


def _w4():
    return fg.variable(np.ones((2, 1, 3, 3)), name="w")


def _lstm_with_one_state():
    x, h = fg.placeholder("x", shape=(2, 3, 4)), fg.placeholder("h", shape=(2, 5))
    return fg.nn.LSTM(5)(x, h)


def _fit_rows(nx, ny):
    x, y = fg.placeholder("x", shape=(None, 1)), fg.placeholder("y", shape=(None,))
    w = fg.variable(np.zeros(1), name="w")
    fg.optim.SGD([w], lr=0.1).fit(fg.mse(x @ w, y), data={x: np.ones((nx, 1)),
                                                          y: np.ones(ny)}, verbose=False)


def _batch_norm_training(flag):
    return fg.nn.BatchNorm(3, training=flag)


_CASES = [   # (label, builder, the class it is now, the builtin it was)
    *[(f"conv2d stride={s!r}", lambda s=s: fg.conv2d(_x4(), _w4(), stride=s),
       fg.ArgumentError, ValueError) for s in (0, -1, 1.5)],
    *[(f"conv2d padding={p!r}", lambda p=p: fg.conv2d(_x4(), _w4(), padding=p),
       fg.ArgumentError, ValueError) for p in (-1, "SAME", "full")],
    ("conv2d padding='same' stride=2, run-time H, W",
     lambda: fg.conv2d(fg.placeholder("x", shape=(1, 1, None, None)), _w4(),
                       padding="same", stride=2), fg.ArgumentError, ValueError),
    *[(f"{pool} {what}={v!r}",
       lambda pool=pool, what=what, v=v: getattr(fg, pool)(_x4(), **{"size": 2, what: v}),
       fg.ArgumentError, ValueError)
      for pool in ("max_pool2d", "avg_pool2d") for what in ("size", "stride")
      for v in (0, -2, 1.5, True)],
    ("nn.Conv2D(0, 2)", lambda: fg.nn.Conv2D(0, 2), fg.ArgumentError, ValueError),
    ("nn.Conv2D(1, 0)", lambda: fg.nn.Conv2D(1, 0), fg.ArgumentError, ValueError),
    ("nn.MaxPool2D(0)", lambda: fg.nn.MaxPool2D(0), fg.ArgumentError, ValueError),
    ("nn.Embedding(0, 3)", lambda: fg.nn.Embedding(0, 3), fg.ArgumentError, ValueError),
    ("nn.BatchNorm(training='yes')", lambda: _batch_norm_training("yes"),
     fg.UsageError, TypeError),
    ("nn.LSTM given h0 alone", _lstm_with_one_state, fg.UsageError, TypeError),
    ("var ddof=-1", lambda: fg.var(fg.placeholder("x", shape=(3,)), ddof=-1),
     fg.UsageError, TypeError),
    ("pad widths=1.5", lambda: fg.pad(fg.placeholder("x", shape=(3,)), 1.5),
     fg.UsageError, TypeError),
    ("fit data of 4 and 3 rows", lambda: _fit_rows(4, 3), fg.FeedError, ValueError),
    ("LBFGS history_size=0",
     lambda: fg.optim.LBFGS([fg.variable(np.zeros(1), name="w")], history_size=0),
     fg.OptimizerError, ValueError),
    ("ReduceLROnPlateau factor=1", lambda: fg.ReduceLROnPlateau(factor=1.0),
     fg.ArgumentError, ValueError),
    ("EarlyStopping patience=-1", lambda: fg.EarlyStopping(patience=-1),
     fg.ArgumentError, ValueError),
    ("Embedding of float indices",
     lambda: fg.nn.Embedding(5, 3)(fg.placeholder("i", shape=(4,))), fg.ShapeError,
     ValueError),
]


@pytest.mark.parametrize("label, build, cls, builtin", _CASES, ids=[c[0] for c in _CASES])
def test_a_refused_argument_is_a_flowgrad_error_naming_the_users_line(label, build, cls,
                                                                        builtin):
    with fg.Graph():
        with pytest.raises(cls) as err:
            build()
    assert isinstance(err.value, fg.FlowgradError) and isinstance(err.value, builtin)
    assert f"at {__file__}:" in str(err.value), str(err.value)


def test_the_last_good_values_are_still_accepted():
    """The boundaries of the table: stride and size 1, padding 0, patience 0, one row of
    each, ddof 0 (each builds, and a pool of size 1 stride 1 is x itself)."""
    with fg.Graph():
        x = _x4()
        fg.conv2d(x, _w4(), stride=1, padding=0)
        y = fg.max_pool2d(x, 1, 1) + fg.avg_pool2d(x, (1, 1), 1)
        fg.nn.Conv2D(1, 1), fg.nn.MaxPool2D(1), fg.nn.Embedding(1, 3)
        fg.var(fg.placeholder("v", shape=(3,)), ddof=0)
        fg.EarlyStopping(patience=0)
        value = np.arange(36.0).reshape(1, 1, 6, 6)
        np.testing.assert_array_equal(fg.compile(y)(x=value), 2 * value)
    with fg.Graph():
        _fit_rows(1, 1)


def test_fg_argument_error_is_exported_and_documented():
    assert issubclass(fg.ArgumentError, fg.FlowgradError)
    assert issubclass(fg.ArgumentError, ValueError)
    readme = pathlib.Path(__file__).parent.parent / "README.md"
    assert "| `ArgumentError` |" in readme.read_text()


# -- ModelCheckpoint: its path is checked before the first epoch trains ---------------------

def _fit_with(callbacks, val=False):
    x, y = fg.placeholder("x", shape=(None, 1)), fg.placeholder("y", shape=(None,))
    w = fg.variable(np.zeros(1), name="w")
    opt = fg.optim.SGD([w], lr=0.1)
    data = {x: np.ones((4, 1)), y: np.ones(4)}
    hist = opt.fit(fg.mse(x @ w, y), data=data, epochs=3, verbose=False, callbacks=callbacks,
                   val=data if val else None)
    return w, hist


@pytest.mark.parametrize("pattern, match", [
    ("ck-{val_loss:.3f}.npz", r"names the field \{val_loss\}.*epoch and \['loss'\]"),
    ("ck-{}.npz", r"cannot be formatted.*IndexError"),
    ("ck-{loss:d}.npz", r"cannot be formatted.*Unknown format code 'd'"),
])
def test_model_checkpoint_refuses_a_path_the_logs_cannot_fill_before_training(tmp_path,
                                                                            pattern, match):
    """Was a raw KeyError (or ValueError) after the first epoch had trained, losing the
    History; now an ArgumentError before any step, the variables untouched."""
    with fg.Graph():
        cb = fg.ModelCheckpoint(tmp_path / pattern)
        with pytest.raises(fg.ArgumentError, match=match) as err:
            _fit_with([cb])
        assert isinstance(err.value, ValueError)
        w = fg.default_graph().by_name("w")
        np.testing.assert_array_equal(w.value, [0.0])   # no epoch ran
    assert not list(tmp_path.iterdir())


def test_model_checkpoint_fills_fields_the_logs_hold(tmp_path):
    with fg.Graph():
        cb = fg.ModelCheckpoint(tmp_path / "ck-{epoch:02d}-{val_loss:.3f}.npz")
        w, hist = _fit_with([cb], val=True)
    # mse of w·1 against 1 after each SGD step w ← w + 0.2 (1 − w): 1 − w = 0.8ᵏ⁺¹
    want = [f"ck-{k + 1:02d}-{0.8 ** (2 * (k + 1)):.3f}.npz" for k in range(3)]
    assert [pathlib.Path(p).name for p in cb.saved] == want


@pytest.mark.parametrize("make", [
    lambda: fg.EarlyStopping("val_acc"),
    lambda: fg.ReduceLROnPlateau("val_acc"),
    lambda: fg.ModelCheckpoint("/nonexistent/x.npz", monitor="val_acc", save_best_only=True),
])
def test_a_monitor_the_logs_lack_is_refused_before_training(make):
    with fg.Graph():
        cb = make()
        with pytest.raises(fg.ArgumentError, match="monitors 'val_acc'"):
            _fit_with([cb], val=True)
        np.testing.assert_array_equal(fg.default_graph().by_name("w").value, [0.0])
