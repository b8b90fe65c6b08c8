"""What Optimizer.step decides once per program (its binding) and its float path for 0-d
variables: the verdict is cached per program and per variables list, values are read
fresh every step, and the float path gives the array path's bits (and falls back to it)."""
import gc
import warnings

import numpy as np
import pytest

import flowgrad as fg
from flowgrad.training import optim


def model(w0=(1.0, -2.0), b0=0.5):
    """A 1-d and a 0-d variable; loss = Σ (w·x + b − y)² with fixed data."""
    x = fg.constant(np.array([[1.0, 2.0], [3.0, -1.0], [0.5, 0.25]]))
    y = fg.constant(np.array([1.0, -1.0, 2.0]))
    w = fg.variable(np.array(w0), name="w")
    b = fg.variable(b0, name="b")
    r = x @ w + b - y
    return w, b, fg.sum(r * r)


def by_hand_sgd(w, b, lr, steps):
    """The same SGD steps written out in numpy."""
    X = np.array([[1.0, 2.0], [3.0, -1.0], [0.5, 0.25]])
    Y = np.array([1.0, -1.0, 2.0])
    w, b = np.array(w), float(b)
    for _ in range(steps):
        r = X @ w + b - Y
        w, b = w - lr * (2 * X.T @ r), b - lr * (2 * r.sum())
    return w, b


def count_checks(monkeypatch):
    calls = []
    real = optim.is_gradient

    def counting(*args):
        calls.append(1)
        return real(*args)
    monkeypatch.setattr(optim, "is_gradient", counting)
    return calls


# -- the binding ------------------------------------------------------------------------
def test_the_program_is_checked_once_then_each_step_reads_the_variables_afresh(monkeypatch):
    calls = count_checks(monkeypatch)
    w, b, loss = model()
    prog = fg.compile([loss, *fg.grad(loss, [w, b])])
    opt = fg.optim.SGD([w, b], lr=0.01)
    opt.step(prog)
    opt.step(prog)
    assert len(calls) == 2                        # one check per gradient, first step only
    w.value = [0.25, 0.75]                        # the user moves the variables in between
    b.value = -1.0
    opt.step(prog)
    hw, hb = by_hand_sgd([0.25, 0.75], -1.0, 0.01, 1)
    np.testing.assert_allclose(w.value, hw, rtol=1e-15, atol=0)
    assert float(b.value) == pytest.approx(hb, rel=1e-15)
    assert len(calls) == 2 and opt.iterations == 3


def test_one_optimizer_two_programs_each_bound_once(monkeypatch):
    calls = count_checks(monkeypatch)
    w, b, loss = model()
    plain = fg.compile([loss, *fg.grad(loss, [w, b])])
    with_extras = fg.compile([loss, *fg.grad(loss, [w, b]), 2.0 * loss, w * 1.0])
    opt = fg.optim.SGD([w, b], lr=0.01)
    results = []
    for k in range(6):
        results.append(opt.step(plain if k % 2 else with_extras))
    assert len(calls) == 4                        # two programs, two gradients each
    loss_v, twice, w_seen = results[0]            # extras come back with the loss
    assert float(twice) == 2 * float(loss_v) and w_seen.tolist() == [1.0, -2.0]
    assert np.ndim(results[1]) == 0               # the plain program: the loss alone
    hw, hb = by_hand_sgd([1.0, -2.0], 0.5, 0.01, 6)
    np.testing.assert_allclose(w.value, hw, rtol=1e-14, atol=0)
    assert float(b.value) == pytest.approx(hb, rel=1e-14)


def test_a_refused_program_stays_refused_and_a_dropped_one_is_let_go():
    w, b, loss = model()
    opt = fg.optim.SGD([w, b], lr=0.01)
    swapped = fg.compile([loss, *fg.grad(loss, [b, w])])
    for _ in range(2):                            # not cached as good after the first refusal
        with pytest.raises(fg.OptimizerError, match="not the gradient"):
            opt.step(swapped)
    assert opt.iterations == 0 and w.value.tolist() == [1.0, -2.0]
    prog = fg.compile([loss, *fg.grad(loss, [w, b])])
    opt.step(prog)
    assert len(opt._bound) == 1
    del prog
    gc.collect()
    assert len(opt._bound) == 0                   # the cache does not keep programs alive


def test_replacing_the_variables_list_checks_the_program_again():
    w, b, loss = model()
    prog = fg.compile([loss, *fg.grad(loss, [w, b])])
    opt = fg.optim.SGD([w, b], lr=0.01)
    opt.step(prog)
    opt.variables = [b, w]                        # same program, now in the wrong order
    with pytest.raises(fg.OptimizerError, match=r"output 1 .* variable 'b'"):
        opt.step(prog)
    opt.variables = [w]
    with pytest.raises(fg.OptimizerError, match="2 states for 1 variables"):
        opt.step(prog)
    opt.reset()
    opt.step(prog)                                # [loss, gw, gb]: gb is an extra now
    assert opt.iterations == 1


# -- the float path of 0-d float64 variables ---------------------------------------------
def on_arrays(cls):
    """The same optimizer with its update wrapped: not float-safe, so on 0-d arrays."""
    return type("OnArrays" + cls.__name__, (cls,), {
        "_update": lambda self, *a: cls._update(self, *a)})


OPTIMIZERS = [
    (fg.optim.SGD, {"lr": 0.07}),
    (fg.optim.Momentum, {"lr": 0.05, "momentum": 0.9}),
    (fg.optim.Momentum, {"lr": 0.05, "momentum": 0.8, "nesterov": True}),
    (fg.optim.Adam, {"lr": 0.1}),
    (fg.optim.Adam, {"lr": fg.optim.exponential_decay(0.1, 0.5, every=2), "eps": 1e-3}),
    (fg.optim.AdamW, {"lr": 0.1, "weight_decay": 0.2}),
    (fg.optim.RMSProp, {"lr": 0.02, "momentum": 0.5, "centered": True}),
    (fg.optim.Adagrad, {"lr": 0.1, "lr_decay": 0.1, "weight_decay": 0.01}),
    (fg.optim.Momentum, {"lr": 0.05, "momentum": 0.9, "clipnorm": 0.5}),
    (fg.optim.Adam, {"lr": 0.1, "global_clipnorm": 0.1, "weight_decay": 0.1}),
]


@pytest.mark.parametrize("cls, kwargs", OPTIMIZERS)
def test_float_path_gives_the_array_paths_bits(monkeypatch, cls, kwargs):
    taken = []
    real = optim._float_update
    monkeypatch.setattr(optim, "_float_update", lambda *a: taken.append(1) or real(*a))
    runs = []
    for c in (cls, on_arrays(cls)):
        with fg.Graph():
            w, b, loss = model()
            s = fg.variable(0.3, name="s")
            opt = c([w, b, s], **kwargs)
            train = opt.minimize(loss + fg.sin(s) * b)
            for _ in range(7):
                train()
            runs.append((w.value, b.value, s.value, opt.state))
            if c is fg.optim.SGD:                 # SGD's own step writes the float path out
                src = opt._last[1].sgd.source
                assert src.count("f = float(o") == 2 and "float(o0)" not in src
                taken.extend([1] * 14)
    assert len(taken) == 2 * 7                    # b and s, every step, first run only
    (w1, b1, s1, st1), (w2, b2, s2, st2) = runs
    np.testing.assert_array_equal(w1, w2)
    assert float(b1) == float(b2) and float(s1) == float(s2)   # bit for bit
    assert float(b1) != 0.5 and float(s1) != 0.3
    for a, c in zip(st1, st2):
        assert a.keys() == c.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], c[key])
    # what the float path leaves: a 0-d float64 array, np.float64 state
    assert type(b1) is np.ndarray and b1.shape == () and b1.dtype == np.float64
    assert all(type(v) is np.float64 for v in st1[1].values())


def test_float_path_falls_back_to_numpy_on_edge_values():
    """0/0 (Adam with eps = 0 and a zero gradient) raises in Python: numpy's nan and its
    warning come instead; an overflowing update gives numpy's inf and warning too."""
    for cls in (fg.optim.Adam, on_arrays(fg.optim.Adam)):
        with fg.Graph():
            c = fg.variable(2.0, name="c")
            opt = cls([c], lr=0.1, eps=0.0)
            train = opt.minimize(0.0 * c)          # ∂/∂c = 0
            with pytest.warns(RuntimeWarning, match="invalid value"):
                train()
            assert np.isnan(c.value) and opt.iterations == 1
    for cls in (fg.optim.SGD, on_arrays(fg.optim.SGD)):
        with fg.Graph():
            c = fg.variable(1.0, name="c")
            train = cls([c], lr=1e300).minimize(1e300 * c)
            with pytest.warns(RuntimeWarning, match="overflow"):
                train()
            assert float(c.value) == -np.inf


def test_float32_and_array_variables_stay_off_the_float_path(monkeypatch):
    taken = []
    monkeypatch.setattr(optim, "_float_update", lambda *a: taken.append(1))
    c = fg.variable(np.float32(2.0), name="c")
    w = fg.variable([1.0], name="w")
    opt = fg.optim.SGD([c, w], lr=0.25)
    opt.minimize(fg.sum(c * w))()
    assert taken == [] and "float(" not in opt._last[1].sgd.source
    assert c.value.dtype == np.float32 and float(c.value) == 1.75


def test_an_interrupt_in_a_float_update_changes_nothing(monkeypatch):
    w, b, loss = model()
    s = fg.variable(0.3, name="s")
    opt = fg.optim.Momentum([w, b, s], lr=0.05, momentum=0.9)
    train = opt.minimize(loss + s * s)
    train()
    before = [v.value for v in (w, b, s)], opt.state
    real, calls = optim._float_update, []

    def fail_on_second(*a):
        calls.append(1)
        if len(calls) == 2:                       # b is done, s is not
            raise KeyboardInterrupt
        return real(*a)
    monkeypatch.setattr(optim, "_float_update", fail_on_second)
    with pytest.raises(KeyboardInterrupt):
        train()
    assert all(v.value is old for v, old in zip((w, b, s), before[0]))
    assert opt.state is before[1] and opt.iterations == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        monkeypatch.setattr(optim, "_float_update", real)
        train()
    assert opt.iterations == 2


def test_a_step_honours_anomaly_detection_and_checked_programs():
    """The step calls the generated code directly, but not when NaN checking is on."""
    c = fg.variable(-1.0, name="c")
    loss = fg.log(c) + c * c                      # log(−1): NaN at node 'log'
    opt = fg.optim.SGD([c], lr=0.1)
    prog = fg.compile([loss, *fg.grad(loss, [c])])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with fg.detect_anomaly(), pytest.raises(fg.NumericsError, match="log"):
            opt.step(prog)
        checked = fg.compile([loss, *fg.grad(loss, [c])], check_numerics=True)
        with pytest.raises(fg.NumericsError, match="log"):
            opt.step(checked)
    assert float(c.value) == -1.0 and opt.iterations == 0


# -- SGD's own loop (_sgd_values) and the last-program shortcut ------------------------------
def test_sgd_steps_alternating_programs_and_variable_lists_are_each_checked(monkeypatch):
    calls = count_checks(monkeypatch)
    w, b, loss = model()
    good = fg.compile([loss, *fg.grad(loss, [w, b])])
    swapped = fg.compile([loss, *fg.grad(loss, [b, w])])
    opt = fg.optim.SGD([w, b], lr=0.01)
    opt.step(good)
    with pytest.raises(fg.OptimizerError, match="not the gradient"):
        opt.step(swapped)                         # the last program's binding is no pass
    opt.step(good)
    opt.variables = [b, w]
    with pytest.raises(fg.OptimizerError, match=r"output 1 .* variable 'b'"):
        opt.step(good)
    assert opt.iterations == 2
    ref = weakref_to(good)
    del good
    gc.collect()
    assert ref() is None                          # nor does the shortcut keep it alive


def weakref_to(obj):
    import weakref
    return weakref.ref(obj)


class _FailsOnce(dict):
    """A variable's data dict whose next write of "value" raises KeyboardInterrupt."""
    armed = True

    def __setitem__(self, key, value):
        if key == "value" and self.armed:
            self.armed = False
            raise KeyboardInterrupt
        super().__setitem__(key, value)


@pytest.mark.parametrize("where", ["update", "commit"])
def test_an_interrupt_in_sgds_step_changes_nothing(where):
    w, b, loss = model()
    s = fg.variable(0.3, name="s")
    opt = fg.optim.SGD([w, b, s], lr=0.05)
    train = opt.minimize(loss + s * s)
    train()
    before = [v.value for v in (w, b, s)], opt.state
    ns = opt._last[1].sgd.__globals__
    real_array = ns["array"]
    if where == "update":                        # b's float path: w is done, s is not
        def array(x):
            ns["array"] = real_array
            raise KeyboardInterrupt
        ns["array"] = array
    else:                                        # writing s, after w and b were written
        ns["D2"] = _FailsOnce(ns["D2"])
    with pytest.raises(KeyboardInterrupt):
        train()
    assert all(v.value is old for v, old in zip((w, b, s), before[0]))
    assert opt.state is before[1] and opt.iterations == 1
    ns["D2"] = s.record
    train()
    hw, hb = by_hand_sgd([1.0, -2.0], 0.5, 0.05, 2)
    np.testing.assert_allclose(w.value, hw, rtol=1e-14, atol=0)
    assert float(s.value) == 0.3 - 0.05 * 0.6 - 0.05 * 2 * (0.3 - 0.05 * 0.6)


def test_sgd_on_float32_arrays_and_a_subclass_gives_the_update_by_hand():
    class Plain(fg.optim.SGD):                    # same update, through the generic loop
        pass

    class Own(fg.optim.SGD):                      # its own update: the generic loop
        def _update(self, value, g, state, lr, t, xp):
            return value - lr * g, state

    results = []
    for cls in (fg.optim.SGD, Plain, Own):
        with fg.Graph():
            w = fg.variable(np.array([1.0, -2.0], np.float32), name="w")
            c = fg.variable(0.75, name="c")
            loss = fg.sum(w * w) * c + c * c
            opt = cls([w, c], lr=0.125)
            train = opt.minimize(loss)
            for _ in range(3):
                train()
            assert w.value.dtype == np.float32 and c.value.dtype == np.float64
            results.append((w.value, c.value))
    for wv, cv in results[1:]:
        np.testing.assert_array_equal(wv, results[0][0])
        assert float(cv) == float(results[0][1])


# -- the step's lock: taken without a with frame, released on every exit ----------------------
def test_a_failing_step_releases_the_lock_and_a_schedule_may_reenter():
    import threading
    with fg.Graph():
        w, b, loss = model()
        s = fg.placeholder("s")
        opt = fg.optim.SGD([w, b], lr=0.05)
        scaled = loss * s
        prog = fg.compile([scaled, *fg.grad(scaled, [w, b])])
        with pytest.raises(fg.FeedError):
            opt.step(prog, s=np.zeros(3))            # refused feed: nothing written
        assert opt.iterations == 0 and float(b.value) == 0.5
        done = threading.Thread(target=opt.step, args=(prog,), kwargs={"s": 1.0})
        done.start()
        done.join(10)                                 # another thread gets the lock
        assert not done.is_alive() and opt.iterations == 1
        seen = []

        def schedule(k):                              # a schedule that reads the optimizer
            with opt._lock:                           # (reentrant: the step holds it)
                seen.append(opt.iterations)
            return 0.05
        opt.lr = schedule
        opt.step(prog, s=1.0)
        assert seen == [1] and opt.iterations == 2
    hw, hb = by_hand_sgd([1.0, -2.0], 0.5, 0.05, 2)
    np.testing.assert_allclose(w.value, hw, rtol=1e-14)


def test_sgds_written_step_is_chosen_per_binding():
    """A subclass with its own update never runs SGD's written-out step."""
    with fg.Graph():
        w, b, loss = model()
        opt = on_arrays(fg.optim.SGD)([w, b], lr=0.05)
        train = opt.minimize(loss)
        train()
        train()
        assert opt._last[2] is None and opt.iterations == 2
    hw, hb = by_hand_sgd([1.0, -2.0], 0.5, 0.05, 2)
    np.testing.assert_allclose(w.value, hw, rtol=1e-14)
    assert float(b.value) == pytest.approx(hb, rel=1e-14)
