"""Loops on every backend: dask (a loop is one task running the numpy loop) and cupy (its
body's program on the device namespace; here a fake ``cupy`` module over numpy, as CI
has no GPU). Every value and dtype must equal the numpy backend's bit for bit, and every
error stays typed and names the loop."""
import re
import sys
import types

import numpy as np
import pytest

import flowgrad as fg
from flowgrad.backends.dask_backend import DaskBackend

DASKS = [pytest.param("dask", id="dask"),
         pytest.param(DaskBackend(chunks=2), id="dask-chunked")]


def _same(got, want):
    """Equal bit for bit (signs of zeros, NaNs), of the same dtype and shape."""
    assert len(got) == len(want)
    for g, w in zip(got, want):
        g = fg.to_numpy(g)
        assert np.asarray(g).dtype == np.asarray(w).dtype
        assert np.shape(g) == np.shape(w)
        np.testing.assert_array_equal(g, w)     # NaN where numpy has NaN
        assert np.ascontiguousarray(g).tobytes() == np.ascontiguousarray(w).tobytes()


def _on(backend, outs, feed):
    return fg.compile(outs, backend=backend)(feed)


def _rnn(dtype="float64", reverse=False, batch=False):
    """An Elman RNN as one scan; loss of both its ys and final carry, and the feed."""
    rng = np.random.default_rng(0)
    lead = (None,) if batch else ()
    W = fg.placeholder("W", (3, 3), dtype=dtype)
    xs = fg.placeholder("xs", (None, *lead, 3), dtype=dtype)
    h0 = fg.placeholder("h0", (*lead, 3), dtype=dtype)
    hT, ys = fg.scan(lambda h, x: (fg.tanh(h @ W + x), fg.sum(h * x, axis=-1)), h0, xs,
                     reverse=reverse)
    loss = fg.sum(ys * ys) + fg.sum(hT)
    n = (4,) if batch else ()
    feed = {W: (0.5 * rng.normal(size=(3, 3))).astype(dtype),
            xs: rng.normal(size=(7, *n, 3)).astype(dtype),
            h0: rng.normal(size=(*n, 3)).astype(dtype)}
    return (W, xs, h0, hT, ys, loss), feed


# -- dask -------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", DASKS)
@pytest.mark.parametrize("dtype,reverse", [("float64", False), ("float32", True)])
def test_scan_and_its_gradient_on_dask_equal_numpy(backend, dtype, reverse):
    with fg.Graph():
        (W, xs, h0, hT, ys, loss), feed = _rnn(dtype, reverse)
        outs = [loss, hT, ys, *fg.grad(loss, [W, xs, h0])]
        want = _on("numpy", outs, feed)
        _same(_on(backend, outs, feed), want)
        _same(_on(backend, outs, feed), want)          # the second call: same program
        _same(fg.compile(outs, backend=backend, codegen=False)(feed), want)
    assert want[1].dtype == np.dtype(dtype)


@pytest.mark.parametrize("backend", DASKS)
def test_second_order_and_forward_mode_through_a_scan_on_dask(backend):
    with fg.Graph():
        (W, xs, h0, hT, ys, loss), feed = _rnn()
        V = np.linspace(-1.0, 1.0, 9).reshape(3, 3)
        outs = [fg.hvp(loss, W, V), fg.jvp(ys, W, V), fg.grad(fg.grad(loss, h0)[0], h0)]
        _same(_on(backend, outs, feed), _on("numpy", outs, feed))


def test_a_loop_is_one_task_of_the_dask_graph():
    with fg.Graph():
        (W, xs, h0, hT, ys, loss), feed = _rnn()
        lazy = fg.compile([loss, hT], backend=DaskBackend(chunks=2, lazy=True))(feed)
        keys = [str(k) for k in lazy[0].__dask_graph__()]
        assert sum("run_on_host" in k for k in keys) == 1      # the scan: one task
        assert all(isinstance(v, DaskBackend().xp.Array) for v in lazy)
        _same([v.compute() for v in lazy], _on("numpy", [loss, hT], feed))


@pytest.mark.parametrize("backend", DASKS)
def test_run_time_lengths_inside_a_body_on_dask(backend):
    """A batch axis of unknown length in the carry: the ys' shape is inferred from the
    fed lengths before the loop runs (lazy), and nested loops run too."""
    with fg.Graph():
        (W, xs, h0, hT, ys, loss), feed = _rnn(batch=True)
        outs = [loss, hT, ys, *fg.grad(loss, [W, h0])]
        _same(_on(backend, outs, feed), _on("numpy", outs, feed))

        def outer(h, x):   # an inner reverse scan over the batch rows of each step
            h2, zs = fg.scan(lambda c, r: (c * 0.5 + fg.sum(r), r * c), fg.sum(h), x,
                             reverse=True)
            return fg.tanh(h @ W + x) + h2, zs
        hT2, zs = fg.scan(outer, h0, xs)
        loss2 = fg.sum(zs) + fg.sum(hT2 * hT2)
        outs = [loss2, zs, *fg.grad(loss2, [W, h0])]
        _same(_on(backend, outs, feed), _on("numpy", outs, feed))


def _newton(a):
    return fg.while_loop(lambda x: fg.abs(x * x - a) > 1e-12 * a,
                         lambda x: 0.5 * (x + a / x), a, max_iters=100)


@pytest.mark.parametrize("backend", DASKS)
def test_while_and_fori_loops_and_their_derivatives_on_dask(backend):
    with fg.Graph():
        a = fg.placeholder("a", ())
        r = _newton(a)
        outs = [r, fg.grad(r, a)]
        got = _on(backend, outs, {a: 2.0})
        _same(got, _on("numpy", outs, {a: 2.0}))
    assert got[0] == pytest.approx(np.sqrt(2.0), rel=1e-15)
    assert got[1] == pytest.approx(1 / (2 * np.sqrt(2.0)), rel=1e-10)
    with fg.Graph():
        x = fg.placeholder("x", (2,))
        k, y = fg.while_loop(lambda c: c[0] < 3,
                             lambda c: (c[0] + np.int64(1), fg.sin(c[1]) * x),
                             (fg.constant(np.int64(0)), x))
        f = fg.sum(y * y)
        outs = [k, f, fg.grad(f, x), fg.hvp(f, x, np.array([1.0, -2.0]))]
        feed = {x: np.array([0.3, -0.9])}
        got = _on(backend, outs, feed)
        _same(got, _on("numpy", outs, feed))
    assert got[0] == 3 and np.asarray(got[0]).dtype == np.int64
    with fg.Graph():
        a = fg.placeholder("a", ())
        n = fg.placeholder("n", (), dtype="int64")
        d = fg.fori_loop(0, n, lambda i, c: c * a + fg.astype(i, "float64"),
                         fg.constant(1.0))
        outs = [d, fg.grad(d, a)]
        for nv in (0, 5):
            _same(_on(backend, outs, {a: 0.5, n: nv}), _on("numpy", outs, {a: 0.5, n: nv}))


@pytest.mark.parametrize("backend", DASKS)
def test_cond_on_dask_runs_the_taken_branch_only(backend):
    with fg.Graph():
        x = fg.placeholder("x", ())
        y = fg.cond(x > 0.0, lambda v: fg.log(v) * v, lambda v: v * v, x)
        g = fg.grad(y, x)
        outs = [y, g, fg.grad(g, x)]
        for xv in (-2.0, 0.0, 2.0):
            with np.errstate(all="raise"):      # an untaken log(-2) would raise here
                got = _on(backend, outs, {x: xv})
            _same(got, _on("numpy", outs, {x: xv}))
        assert _on(backend, outs, {x: -2.0}) == [4.0, -4.0, 2.0]
    with fg.Graph():   # a batch of unknown length through a branch
        v = fg.placeholder("v", (None, 2))
        p = fg.placeholder("p", (), dtype="bool")
        out = fg.cond(p, lambda u: fg.sin(u) * 2.0, lambda u: fg.exp(u), v)
        outs = [out, fg.grad(fg.sum(out * out), v)]
        feed = {v: np.arange(6.0).reshape(3, 2) / 7}
        for pv in (True, False):
            _same(_on(backend, outs, {**feed, p: pv}), _on("numpy", outs, {**feed, p: pv}))


@pytest.mark.parametrize("backend", DASKS)
def test_cond_branches_of_different_run_time_lengths_on_dask(backend):
    """The branch that runs is known only when the task runs: a length the branches give
    differently is stated unknown (the else branch's (4,) was refused against the then
    branch's (3,)); values and gradients are numpy's, against the closed form too."""
    X = np.arange(4.0)
    with fg.Graph():
        x = fg.placeholder("x", (None,))
        p = fg.placeholder("p", (), dtype="bool")
        y = fg.cond(p, lambda v: v[1:], lambda v: v * 2.0, x)
        outs = [y, fg.grad(fg.sum(y * y), x)]
        for pv, want in ((True, [X[1:], 2 * X * (X > 0)]), (False, [2 * X, 8 * X])):
            got = _on(backend, outs, {x: X, p: pv})
            _same(got, _on("numpy", outs, {x: X, p: pv}))
            for g, w in zip(got, want):
                np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("backend", DASKS)
def test_max_iters_on_dask_is_a_loop_limit_error_naming_the_loop(backend):
    with fg.Graph():
        x = fg.placeholder("x", ())
        y = fg.while_loop(lambda v: v < 10.0, lambda v: v + 1.0, x, max_iters=5)
        prog = fg.compile(y, backend=backend)
        assert prog(x=5.0) == 10.0          # five iterations: exactly the bound
        with pytest.raises(fg.LoopLimitError,
                           match=r"while_loop built at .*test_control_backends.py:\d+ "
                                 r"reached max_iters=5"):
            prog(x=4.0)
        grad = fg.compile([y, fg.grad(y, x)], backend=backend)   # the loop keeps carries
        assert grad(x=5.0) == [10.0, 1.0]
        with pytest.raises(fg.LoopLimitError, match="reached max_iters=5"):
            grad(x=4.0)


@pytest.mark.parametrize("backend", DASKS)
def test_scan_lengths_disagreeing_on_dask_is_numpys_error(backend):
    with fg.Graph():
        xs = fg.placeholder("xs", (None, 3))
        zs = fg.placeholder("zs", (None, 3))
        hT, _ = fg.scan(lambda h, x: (h + x[0] * x[1], h), fg.constant(np.zeros(3)),
                        (xs, zs))
        feed = {xs: np.ones((4, 3)), zs: np.ones((5, 3))}
        errors = []
        for b in ("numpy", backend):
            # the xs' shared length is a run-time length rule: refused at the feed
            with pytest.raises(fg.FeedError) as e:
                _on(b, hT, feed)
            errors.append(str(e.value))
        # xs made by ops (no placeholder holds the length): the loop's own check
        ys = fg.concatenate([xs, xs], axis=0)
        hT2, _ = fg.scan(lambda h, x: (h + x[0] * x[1], h), fg.constant(np.zeros(3)), (ys, zs))
        for b in ("numpy", backend):
            with pytest.raises(fg.ShapeError) as e:
                _on(b, hT2, {xs: np.ones((4, 3)), zs: np.ones((9, 3))})
            assert isinstance(e.value, fg.RunError)          # names the loop node
            errors.append(str(e.value))
    assert errors[0] == errors[1] and errors[2] == errors[3]
    assert "'zs' has length 5 on axis 0, but placeholder 'xs' has length 4" in errors[0]
    assert "disagree on the number of iterations: [8, 9]" in errors[2]


def test_a_carry_that_changes_its_run_time_length_is_refused_on_dask():
    """dask must state a result's shape before the loop runs (a carry's: its input's);
    a body that breaks that is a ShapeError naming the loop, never a mislabelled array."""
    from flowgrad.loops.task import run_on_host

    class Spec:
        name, where = "scan", "model.py:3"

    with pytest.raises(fg.ShapeError, match=r"scan built at model.py:3: result 0 has "
                                            r"shape \(2,\) where \(3,\) was stated"):
        run_on_host(Spec, lambda spec, xp, vals: (np.zeros(2),), [(3,)], False)
    assert run_on_host(Spec, lambda spec, xp, vals: (np.zeros(3), None), [(3,), None], False)[1] \
        is None


def test_an_unknown_namespace_is_a_backend_error():
    from flowgrad.backends import backend_of
    with pytest.raises(fg.BackendError, match="no backend computes with"):
        backend_of(types.ModuleType("not_an_array_module"))


# -- cupy, through a fake cupy module ----------------------------------------------------------

class _DeviceArray(np.ndarray):
    """The fake's ``cupy.ndarray``: numpy memory under a type of its own."""


class _Kernel:
    """``cupy.ElementwiseKernel``'s interface: the fused chain's C expression is infix
    arithmetic and calls, so numpy evaluates it (each op rounded as numpy's own)."""
    made = 0

    def __init__(self, in_params, out_params, operation, name, preamble=""):
        self.names = [p.split()[1] for p in in_params.split(", ")]
        self.expr = operation[len("out = "):]
        _Kernel.made += 1

    def __call__(self, *args):
        env = dict(zip(self.names, args), exp=np.exp, log=np.log, log1p=np.log1p,
                   sqrt=np.sqrt, tanh=np.tanh, sin=np.sin, cos=np.cos, fabs=np.abs,
                   flowgrad_where=np.where)
        return np.asarray(eval(self.expr, env), dtype=np.float64).view(_DeviceArray)


def _fake_cupy():
    fake = types.ModuleType("cupy")
    fake.__getattr__ = lambda name: getattr(np, name)   # the rest of the namespace
    fake.ndarray = _DeviceArray
    fake.asarray = lambda a, dtype=None: np.asarray(a, dtype=dtype).view(_DeviceArray)
    fake.asnumpy = lambda a: np.asarray(a).view(np.ndarray)
    fake.ElementwiseKernel = _Kernel
    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1))
    return fake


@pytest.fixture
def fake_cupy(monkeypatch):
    """flowgrad's real CupyBackend over the fake ``cupy`` module."""
    from flowgrad.backends import _instances, cupy_backend
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy())
    monkeypatch.delitem(_instances, "cupy", raising=False)
    return cupy_backend.CupyBackend()


def test_scan_and_its_gradient_on_fake_cupy_equal_numpy(fake_cupy):
    with fg.Graph():
        (W, xs, h0, hT, ys, loss), feed = _rnn()
        outs = [loss, hT, ys, *fg.grad(loss, [W, xs, h0]), fg.hvp(loss, W, np.eye(3))]
        want = _on("numpy", outs, feed)
        got = _on(fake_cupy, outs, feed)
        _same(got, want)
        _same(fg.compile(outs, backend=fake_cupy, codegen=False)(feed), want)
    assert sum(isinstance(v, _DeviceArray) for v in got) >= 4   # computed on the device
    assert _Kernel.made > 0       # fused chains went through (fake) ElementwiseKernels


def test_while_loop_and_cond_on_fake_cupy(fake_cupy):
    with fg.Graph():
        a = fg.placeholder("a", ())
        r = _newton(a)
        c = fg.cond(a > 1.0, lambda v: fg.log(v) * v, lambda v: v * v, a)
        outs = [r, fg.grad(r, a), c, fg.grad(c, a)]
        for av in (0.5, 2.0):
            _same(_on(fake_cupy, outs, {a: av}), _on("numpy", outs, {a: av}))
        y = fg.while_loop(lambda v: v < 10.0, lambda v: v + 1.0, a, max_iters=5)
        with pytest.raises(fg.LoopLimitError, match=re.escape("max_iters=5")):
            _on(fake_cupy, y, {a: 4.0})


class _DeviceBackend(fg.backends.base.Backend):
    """A backend of its own (no name flowgrad knows) over another fake namespace: a
    loop's body finds its backend from the namespace its kernel is given."""
    name = "fake-device"

    def __init__(self):
        self.xp = _fake_cupy()

    def asarray(self, value, dtype=None):
        return np.asarray(fg.to_numpy(value), dtype=dtype).view(_DeviceArray)

    def owns(self, array):
        return isinstance(array, _DeviceArray)

    def to_numpy(self, array):
        return np.asarray(array).view(np.ndarray)


def test_backend_of_finds_a_backend_of_its_own_while_it_lives():
    import gc
    from flowgrad.backends import backend_of, get_backend
    backend = _DeviceBackend()
    assert get_backend(backend) is backend and backend_of(backend.xp) is backend
    xp = backend.xp
    del backend
    gc.collect()
    with pytest.raises(fg.BackendError, match="no backend computes with"):
        backend_of(xp)


def test_a_second_dask_backend_is_found_after_the_first_is_collected():
    """backend_of kept one backend per namespace: a first DaskBackend held only by a
    program's reference cycle stood for dask.array until the collector took it; a second
    one's loops then failed ("no backend computes with the array namespace") and its
    float16 mean, no longer seen as lazy, summed float16 chunks to NaN."""
    import gc
    x16 = np.full(70000, 300.0, np.float16)
    with fg.Graph():
        x = fg.placeholder("x", (None,))
        h = fg.placeholder("h", (None,), dtype="float16")
        hT, _ = fg.scan(lambda c, v: (c * v, c), fg.constant(1.0), x)
        first = fg.compile([hT, fg.mean(h)], backend=DaskBackend())
        first({x: np.ones(3), h: x16})
        del first                                  # gone only when the collector runs
        second = DaskBackend(chunks=1000)
        loop, mean = fg.compile(hT, backend=second), fg.compile(fg.mean(h), backend=second)
        gc.collect()
        got_mean = mean({h: x16})
        assert got_mean.dtype == np.float16 and got_mean == np.float16(300.0)
        assert loop({x: np.arange(1.0, 5.0)}) == np.prod(np.arange(1.0, 5.0))


def test_loops_on_a_backend_of_its_own():
    backend = _DeviceBackend()
    with fg.Graph():
        (W, xs, h0, hT, ys, loss), feed = _rnn(reverse=True)
        a = fg.placeholder("a", ())
        r = _newton(a)
        outs = [loss, hT, *fg.grad(loss, [W, h0]), r, fg.grad(r, a)]
        feed[a] = 3.0
        got = _on(backend, outs, feed)
        _same(got, _on("numpy", outs, feed))
    assert isinstance(got[1], _DeviceArray)


def test_a_dask_only_process_runs_loops(monkeypatch):
    """The task runs the numpy loop even where nobody has asked for numpy by name yet."""
    from flowgrad.backends import _by_namespace, _instances
    with fg.Graph():
        (W, xs, h0, hT, ys, loss), feed = _rnn()
        outs = [loss, fg.grad(loss, W)]
        with monkeypatch.context() as m:
            m.delitem(_instances, "numpy")
            m.delitem(_by_namespace, id(np), raising=False)
            got = _on("dask", outs, feed)
        _same(got, _on("numpy", outs, feed))


@pytest.mark.parametrize("backend", DASKS)
def test_detect_anomaly_names_the_iteration_on_dask(backend):
    """fg.detect_anomaly() belongs to the calling thread; the loop's task, on one of
    dask's threads, checks its bodies all the same."""
    with fg.Graph():
        x = fg.placeholder("x", (None,))
        hT, ys = fg.scan(lambda h, v: (h * v, fg.log(h)), fg.constant(1.0), x)
        prog = fg.compile([hT, ys], backend=backend)
        feed = {x: np.array([1.0, -1.0, 2.0])}
        with np.errstate(all="ignore"), fg.detect_anomaly(), \
                pytest.raises(fg.NumericsError, match=r"iteration 2 \(counted from 0\)"):
            prog(feed)
        with np.errstate(all="ignore"):
            _same(prog(feed), _on("numpy", [hT, ys], feed))   # outside: NaN, unchecked


@pytest.mark.slow
def test_a_scheduler_in_other_processes_runs_the_loop_where_it_was_built():
    """A loop's task holds traced bodies, which cannot travel to other processes: under
    such a scheduler the loop runs when its node is reached (inputs computed by that
    scheduler), never a serialisation failure halfway through a run."""
    import dask
    with fg.Graph():
        (W, xs, h0, hT, ys, loss), feed = _rnn()
        outs = [loss, hT, fg.grad(loss, W)]
        with dask.config.set(scheduler="processes", num_workers=1):
            got = _on(DaskBackend(chunks=2), outs, feed)
        _same(got, _on("numpy", outs, feed))


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_recurrent_layers_train_on_dask_as_on_numpy(kind):
    """fg.nn's recurrent layers are one scan each: a training step's loss and gradients
    on dask (sequence of run-time length) equal numpy's. With the batch in chunks, the
    ops around the loop (the input projection's matmul, per chunk) round as dask's own
    do, so there the figures agree to 1e-13, not bit for bit."""
    rng = np.random.default_rng(3)
    with fg.Graph():
        x = fg.placeholder("x", (None, None, 4))
        layer = getattr(fg.nn, kind)(5, seed=0, return_sequences=True)
        loss = fg.mean(layer(x) ** 2)
        outs = [loss, *fg.grad(loss, layer.variables)]
        feed = {x: rng.standard_normal((6, 7, 4))}
        want = _on("numpy", outs, feed)
        _same(_on("dask", outs, feed), want)
        for g, w in zip(_on(DaskBackend(chunks=2), outs, feed), want):
            np.testing.assert_allclose(g, w, rtol=1e-13, atol=1e-16)
