"""One suite for every backend: numpy, dask (one chunk, and many chunks) and cupy.

Each graph is run on the backend under test and on numpy, and values and gradients
are compared. cupy cases skip when there is no NVIDIA GPU or cupy is missing (CI has
neither); dask always runs. Then: results and where they live, variables kept on the
device, dtypes, the default backend, errors for missing or unknown backends and for
ops a backend lacks, a dask.distributed LocalCluster, and the logistic regression
example on dask.
"""
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import flowgrad as fg
from flowgrad.backends import get_backend
from flowgrad.backends.base import Backend
from flowgrad.backends.dask_backend import DaskBackend
from flowgrad.backends.numpy_backend import NumpyBackend

ROOT = pathlib.Path(__file__).resolve().parents[1]

NO_GPU = "no NVIDIA GPU / cupy not installed"


def _make(name):
    if name == "dask-chunked":
        return DaskBackend(chunks=64)  # 64 rows a chunk: every batch below spans several
    return get_backend(name)


@pytest.fixture(params=["numpy", "dask", "dask-chunked",
                        pytest.param("cupy", marks=pytest.mark.gpu)])
def backend(request):
    try:
        return _make(request.param)
    except fg.BackendError as e:
        if request.param == "cupy":
            pytest.skip(f"{NO_GPU} ({str(e).split('; install')[0]})")
        raise


def tolerances(dtype):
    return dict(rtol=2e-4, atol=2e-5) if np.dtype(dtype) == np.float32 else \
        dict(rtol=1e-9, atol=1e-12)


def assert_matches(got, want, dtype=np.float64):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        g = fg.to_numpy(g)
        assert isinstance(g, (np.ndarray, np.generic))
        assert g.shape == np.shape(w)
        np.testing.assert_allclose(g, w, **tolerances(dtype))


def run_both(outputs, backend, feed):
    """The outputs on ``backend`` and on numpy, for the same feed."""
    want = [np.asarray(v) for v in fg.compile(outputs, backend="numpy")(feed)]
    got = fg.compile(outputs, backend=backend)(feed)
    return got, want


# -- the graphs ----------------------------------------------------------------------------

def logistic(n=300, d=7, dtype="float64", seed=0):
    """Batch logistic regression: mean BCE from logits + λ·½‖w‖², with its gradients."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(dtype)
    T = (rng.random(n) < 0.4).astype(dtype)
    x = fg.placeholder("x", shape=(None, d), dtype=dtype)
    t = fg.placeholder("t", shape=(None,), dtype=dtype)
    w = fg.variable(rng.normal(size=d).astype(dtype), name="w")
    b = fg.variable(np.asarray(0.3, dtype), name="b")
    loss = fg.bce_with_logits(fg.linear(x, w, b), t) + 1e-2 * fg.l2(w)
    return (x, t, w, b, loss), {x: X, t: T}


def mlp(n=200, sizes=(12, 16, 5), dtype="float64", seed=1):
    """A 2-layer tanh/relu network with a softmax cross-entropy loss on integer labels."""
    rng = np.random.default_rng(seed)
    d, h, k = sizes
    X = rng.normal(size=(n, d)).astype(dtype)
    labels = rng.integers(0, k, size=n)
    x = fg.placeholder("x", shape=(None, d), dtype=dtype)
    y = fg.placeholder("y", shape=(None,), dtype="int64")
    W1 = fg.variable((rng.normal(size=(d, h)) / np.sqrt(d)).astype(dtype), name="W1")
    b1 = fg.variable(np.zeros(h, dtype), name="b1")
    W2 = fg.variable((rng.normal(size=(h, k)) / np.sqrt(h)).astype(dtype), name="W2")
    b2 = fg.variable(np.zeros(k, dtype), name="b2")
    hidden = fg.tanh(x @ W1 + b1) + 0.1 * fg.relu(x @ W1)
    loss = fg.softmax_cross_entropy(hidden @ W2 + b2, y)
    return (x, y, [W1, b1, W2, b2], loss), {x: X, y: labels}


# -- values and gradients against numpy ------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_logistic_loss_and_gradients(backend, dtype):
    (x, t, w, b, loss), feed = logistic(dtype=dtype)
    outs = [loss, *fg.grad(loss, [w, b])]
    got, want = run_both(outs, backend, feed)
    assert_matches(got, want, dtype)
    # independent of flowgrad: the same gradient by hand, in numpy
    X, T, W, B = feed[x], feed[t], fg.to_numpy(w.value), fg.to_numpy(b.value)
    z = X @ W + B
    r = (1 / (1 + np.exp(-z)) - T) / len(T)
    np.testing.assert_allclose(fg.to_numpy(got[1]), X.T @ r + 1e-2 * W, **tolerances(dtype))
    np.testing.assert_allclose(fg.to_numpy(got[2]), r.sum(), **tolerances(dtype))
    for v in got:
        assert fg.to_numpy(v).dtype == np.dtype(dtype)


def test_data_larger_than_one_chunk_on_dask():
    """The chunked dask backend really splits the batch, and still matches numpy."""
    be = DaskBackend(chunks=64)
    (x, t, w, b, loss), feed = logistic(n=1000)
    assert be.asarray(feed[x]).numblocks == (16, 1)
    got, want = run_both([loss, *fg.grad(loss, [w, b])], be, feed)
    assert_matches(got, want)
    # a feed that is already a dask array is used with its own chunks
    import dask.array as da
    feed = {x: da.from_array(feed[x], chunks=(100, 7)), t: da.from_array(feed[t], chunks=100)}
    got = fg.compile([loss, *fg.grad(loss, [w, b])], backend="dask")(feed)
    assert_matches(got, want)


def test_mlp_gradients(backend):
    (x, y, params, loss), feed = mlp()
    got, want = run_both([loss, *fg.grad(loss, params)], backend, feed)
    assert_matches(got, want)
    assert float(fg.to_numpy(got[0])) > 0.5  # about log 5 for a fresh net


@pytest.mark.parametrize("opt", ["SGD", "Adam"])
def test_mlp_training_steps_match_numpy(backend, opt):
    """Three optimizer steps on the backend give the numpy run's losses and weights."""
    results = []
    for be in ("numpy", backend):
        with fg.Graph():
            (x, y, params, loss), feed = mlp(dtype="float32")
            make = fg.optim.SGD if opt == "SGD" else fg.optim.Adam
            train = make(params, lr=0.1).minimize(loss, backend=be)
            losses = [float(fg.to_numpy(train(feed))) for _ in range(3)]
            results.append((losses, [fg.to_numpy(p.value) for p in params]))
    (l_np, p_np), (l_be, p_be) = results
    np.testing.assert_allclose(l_be, l_np, rtol=1e-4)
    assert l_np[2] < l_np[0]
    for a, b in zip(p_be, p_np):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_reductions_broadcasting_matmul(backend):
    rng = np.random.default_rng(3)
    A_v, B_v, c_v = rng.normal(size=(130, 6)), rng.normal(size=(6, 4)), rng.normal(size=(1, 4))
    A = fg.placeholder("A", shape=(None, 6))
    B = fg.variable(B_v, name="B")
    c = fg.variable(c_v, name="c")
    M = A @ B + c                                        # (130, 4) + (1, 4)
    col = fg.sum(M, axis=0)                              # (4,)
    row = fg.mean(M, axis=1, keepdims=True)              # (130, 1)
    S = fg.logsumexp(M, axis=1)                          # (130,)
    top = fg.max(M * M, axis=0)                          # (4,)
    part = fg.concatenate([M[:, 1:3], fg.transpose(M)[:2].T], axis=1)   # (130, 4)
    f = fg.sum(fg.maximum(M - row, 0.0) ** 2) + fg.sum(col * top) + fg.mean(S) \
        + fg.sum(fg.where(fg.greater(part, 0.0), part, 0.5 * part)) + fg.sum(fg.exp(-fg.abs(M)))
    outs = [f, M, col, row, S, top, *fg.grad(f, [A, B, c])]
    got, want = run_both(outs, backend, {A: A_v})
    assert_matches(got, want)
    # two of them by hand
    np.testing.assert_allclose(fg.to_numpy(got[1]), A_v @ B_v + c_v, rtol=1e-12)
    np.testing.assert_allclose(fg.to_numpy(got[2]), (A_v @ B_v + c_v).sum(0), rtol=1e-12)


def test_second_derivative(backend):
    """A gradient of a gradient (the derivatives are graph nodes) on every backend."""
    x = fg.placeholder("x", shape=(None,))
    d2 = fg.grad(fg.sum(fg.grad(fg.sum(fg.tanh(x)), x)), x)
    xv = np.linspace(-2, 2, 150)
    got, want = run_both([d2], backend, {x: xv})
    assert_matches(got, want)
    th = np.tanh(xv)
    np.testing.assert_allclose(fg.to_numpy(got[0]), -2 * th * (1 - th ** 2), rtol=1e-10)


def test_output_that_is_a_leaf(backend):
    """An output may be a variable or a placeholder itself (the plan copies it)."""
    w = fg.variable(np.arange(3.0), name="w")
    x = fg.placeholder("x", shape=(3,))
    got = fg.compile([w, x, w * x], backend=backend)(x=np.ones(3))
    assert_matches(got, [np.arange(3.0), np.ones(3), np.arange(3.0)])


def test_trace_on_every_backend(backend):
    (x, t, w, b, loss), feed = logistic(n=100)
    tr = fg.compile(loss, backend=backend).trace(feed)
    gw = fg.compile(fg.grad(loss, w))(feed)
    np.testing.assert_allclose(fg.to_numpy(tr.adjoint(w)), gw, rtol=1e-10)


# -- where results and variables live --------------------------------------------------------

def test_results_are_arrays_of_the_backend(backend):
    x = fg.placeholder("x", shape=(None,))
    y = fg.sum(x * x)
    out = fg.compile([y, 2 * x], backend=backend)(x=np.arange(4.0))
    if backend.name == "dask":
        assert all(isinstance(v, (np.ndarray, np.generic)) for v in out)  # computed together
    else:
        assert all(backend.owns(v) for v in out)
    assert float(fg.to_numpy(out[0])) == 14.0
    assert fg.to_numpy(out[1]).tolist() == [0.0, 2.0, 4.0, 6.0]


def test_lazy_dask_results_and_to_numpy():
    import dask.array as da
    be = DaskBackend(chunks=2, lazy=True)
    x = fg.placeholder("x", shape=(None,))
    loss, g = fg.compile([fg.sum(x * x), fg.grad(fg.sum(x * x), x)], backend=be)(x=np.arange(5.0))
    assert isinstance(loss, da.Array) and isinstance(g, da.Array)
    assert float(fg.to_numpy(loss)) == 30.0
    assert fg.to_numpy([g])[0].tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]


def test_variables_stay_on_the_backend_between_steps(backend):
    (x, t, w, b, loss), feed = logistic(n=200)
    train = fg.optim.SGD([w, b], lr=0.5).minimize(loss, backend=backend)
    losses = [float(fg.to_numpy(train(feed))) for _ in range(20)]
    assert losses[-1] < losses[0]
    if backend.name == "dask":
        # each step computes the new values once: variables stay small numpy arrays, and
        # no step carries the graphs of earlier steps along
        assert isinstance(w.value, np.ndarray) and isinstance(b.value, np.ndarray)
    else:
        assert backend.owns(w.value) and backend.owns(b.value)
        first = backend.read_variable(w)
        assert backend.read_variable(w) is first  # no copy on a read
    # the values are the numpy run's
    with fg.Graph():
        (x2, t2, w2, b2, loss2), feed2 = logistic(n=200)
        train2 = fg.optim.SGD([w2, b2], lr=0.5).minimize(loss2)
        ref = [float(train2(feed2)) for _ in range(20)]
    np.testing.assert_allclose(losses, ref, rtol=1e-9)
    np.testing.assert_allclose(fg.to_numpy(w.value), w2.value, rtol=1e-9)


def test_a_variable_moves_between_backends(backend):
    """A variable trained on one backend is read by a program on numpy, and back."""
    w = fg.variable(np.array([1.0, -2.0]), name="w")
    loss = fg.l2(w)
    fg.optim.SGD([w], lr=0.5).minimize(loss, backend=backend)()
    assert fg.to_numpy(w.value).tolist() == [0.5, -1.0]
    assert float(fg.run(loss, {}, backend="numpy")) == 0.625
    assert float(fg.to_numpy(fg.run(loss, {}, backend=backend))) == 0.625
    assert float(fg.run(loss, {})) == 0.625


def test_float64_feed_to_float32_placeholder(backend):
    x = fg.placeholder("x", shape=(None,), dtype="float32")
    out = fg.compile(x * 2.5, backend=backend)(x=np.array([1.0, 2.0]))
    arr = fg.to_numpy(out)
    assert arr.dtype == np.float32 and arr.tolist() == [2.5, 5.0]


def test_default_float_policy():
    assert get_backend("numpy").default_float == np.float64
    from flowgrad.backends import cupy_backend
    assert cupy_backend.CupyBackend.default_float == np.float32


# -- choosing a backend, and the errors ----------------------------------------------------

def test_set_default_backend():
    x = fg.placeholder("x", shape=(None,))
    y = fg.sum(fg.exp(x))
    try:
        fg.set_default_backend("dask")
        prog = fg.compile(y)
        assert prog.backend.name == "dask"
        assert float(prog(x=np.zeros(3))) == 3.0
        assert float(fg.run(y, {x: np.zeros(4)})) == 4.0
        assert fg.compile(y, backend="numpy").backend.name == "numpy"  # an explicit one wins
        with pytest.raises(fg.BackendError, match="unknown backend 'tpu'"):
            fg.set_default_backend("tpu")
        assert fg.compile(y).backend.name == "dask"  # a failed set changes nothing
        fg.set_default_backend(DaskBackend(chunks=1))  # an instance works too
        assert fg.compile(y).backend.chunks == 1
        assert float(fg.compile(y)(x=np.zeros(2))) == 2.0
    finally:
        fg.set_default_backend("numpy")
    assert fg.compile(y).backend.name == "numpy"


def test_unknown_backend_names_the_choices():
    with pytest.raises(fg.BackendError) as e:
        fg.compile(fg.placeholder("x") * 2, backend="jax")
    assert "unknown backend 'jax'" in str(e.value)
    for name in ("cupy", "dask", "numpy"):
        assert name in str(e.value)


def test_missing_cupy_says_how_to_install(monkeypatch):
    from flowgrad.backends import _instances, cupy_backend
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` now fails
    monkeypatch.delitem(_instances, "cupy", raising=False)
    with pytest.raises(fg.BackendError, match=r"pip install flowgrad\[gpu\]") as e:
        fg.compile(fg.placeholder("x") * 2, backend="cupy")
    assert "cupy" in str(e.value) and "could not be imported" in str(e.value)
    with pytest.raises(fg.BackendError):
        cupy_backend.CupyBackend()
    assert "cupy" not in _instances  # nothing half-made was cached


def test_cupy_without_a_gpu_says_so(monkeypatch):
    import types
    from flowgrad.backends import cupy_backend

    class NoDevice(Exception):
        pass

    def count():
        raise NoDevice("cudaErrorNoDevice: no CUDA-capable device is detected")

    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=count))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    with pytest.raises(fg.BackendError) as e:
        cupy_backend.CupyBackend()
    msg = str(e.value)
    assert "no usable NVIDIA GPU" in msg and "cudaErrorNoDevice" in msg
    assert "pip install flowgrad[gpu]" in msg
    fake.cuda.runtime.getDeviceCount = lambda: 0
    with pytest.raises(fg.BackendError, match="no CUDA device"):
        cupy_backend.CupyBackend()


def test_missing_dask_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "dask", None)
    monkeypatch.setitem(sys.modules, "dask.array", None)
    with pytest.raises(fg.BackendError, match=r"pip install flowgrad\[dask\]"):
        DaskBackend()


def test_import_flowgrad_imports_neither_cupy_nor_dask():
    code = ("import sys, flowgrad\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('cupy', 'dask', 'distributed'))\n"
            "print(len(bad)); assert not bad, bad\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"


class _NoTanh(NumpyBackend):
    name = "numpy-without-tanh"
    unsupported_ops = {"tanh": "this test backend has no tanh"}


def test_unsupported_op_fails_at_compile_naming_it():
    be = _NoTanh()
    x = fg.placeholder("x", shape=(None,))
    h = fg.tanh(x).named("hidden")
    with pytest.raises(fg.BackendError) as e:
        fg.compile(fg.sum(h) + 1.0, backend=be)
    msg = str(e.value)
    assert "'tanh'" in msg and "'hidden'" in msg and "numpy-without-tanh" in msg
    assert "this test backend has no tanh" in msg
    # a program without it compiles and runs
    assert float(fg.compile(fg.sum(fg.exp(x)), backend=be)(x=np.zeros(2))) == 2.0


@pytest.mark.parametrize("make", [lambda A: fg.det(A), lambda A: fg.logdet(A),
                                  lambda A: fg.sum(fg.eigvalsh(A)), lambda A: fg.norm(A, 2)],
                         ids=["det", "logdet", "eigvalsh", "norm2"])
def test_dask_lacks_determinants_and_eigensolvers(make):
    A = fg.placeholder("A", shape=(3, 3))
    out = make(A)
    with pytest.raises(fg.BackendError, match="the dask backend cannot run op") as e:
        fg.compile(out, backend="dask")
    assert "dask.array.linalg has no" in str(e.value)
    S = np.array([[2.0, 1.0, 0.0], [1.0, 3.0, 0.0], [0.0, 0.0, 1.0]])
    assert np.isfinite(float(fg.compile(out)(A=S)))  # numpy runs the same graph


def test_dask_runs_the_linear_algebra_it_has():
    rng = np.random.default_rng(5)
    A_v = rng.normal(size=(4, 4)) + 4 * np.eye(4)
    b_v = rng.normal(size=4)
    A = fg.placeholder("A", shape=(4, 4))
    b = fg.placeholder("b", shape=(4,))
    f = fg.sum(fg.solve(A, b)) + fg.sum(fg.inv(A) * 2.0) + fg.norm(A, "fro") \
        + fg.sum(fg.outer(b, b)) + fg.dot(b, b)
    got, want = run_both([f, *fg.grad(f, [A, b])], "dask", {A: A_v, b: b_v})
    assert_matches(got, want)
    assert float(fg.to_numpy(got[0])) == pytest.approx(
        np.linalg.solve(A_v, b_v).sum() + 2 * np.linalg.inv(A_v).sum()
        + np.linalg.norm(A_v) + b_v.sum() ** 2 + b_v @ b_v, rel=1e-12)


def test_base_backend_asarray_brings_foreign_arrays_home():
    import dask.array as da
    lazy = da.from_array(np.arange(4.0), chunks=2) * 2
    assert NumpyBackend().asarray(lazy).tolist() == [0.0, 2.0, 4.0, 6.0]
    assert get_backend("numpy").asarray(3.0, dtype="float32").dtype == np.float32
    assert isinstance(get_backend("dask").asarray(np.ones(2)), da.Array)
    assert Backend.finish(get_backend("numpy"), [1, 2]) == [1, 2]


# -- dask.distributed, and the example ------------------------------------------------------

@pytest.mark.slow
def test_dask_distributed_local_cluster_matches_numpy():
    """Two worker processes on loopback compute the chunked logistic gradient."""
    import logging
    from distributed import Client, LocalCluster, get_task_stream

    (x, t, w, b, loss), feed = logistic(n=2000, d=5)
    outs = [loss, *fg.grad(loss, [w, b])]
    want = [np.asarray(v) for v in fg.compile(outs)(feed)]
    prog = fg.compile(outs, backend=DaskBackend(chunks=250))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, silence_logs=logging.ERROR) as cluster, \
            Client(cluster) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        with get_task_stream(client) as ts:
            got = prog(feed)
        # and a few training steps through the cluster
        train = fg.optim.SGD([w, b], lr=0.5).minimize(loss, backend=DaskBackend(chunks=250))
        losses = [float(train(feed)) for _ in range(3)]
    assert_matches(got, want)
    workers = {task["worker"] for task in ts.data}
    assert len(ts.data) >= 8 and workers  # the 8 chunks' tasks ran on the cluster's workers
    assert losses[2] < losses[0] and losses[0] == pytest.approx(float(want[0]), rel=1e-12)


def test_gpu_benchmark_script_runs_on_numpy(capsys, monkeypatch):
    """benchmarks/bench_gpu.py, as the GPU check runs it, here on numpy at small sizes."""
    import importlib.util
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # as when run as a script
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "benchmarks" /
                                                  "bench_gpu.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--backend", "numpy", "--small", "--repeats", "1"]) == 0
    table = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| ")]
    assert len(table) == 3 and "batch logistic gradient, n=20,000" in table[1]
    assert "MLP step, batch 256, 784-128-10" in table[2] and "MISMATCH" not in table[2]
    ratios = [float(row.split("|")[4].strip().rstrip("×")) for row in table[1:]]
    assert all(r > 0 for r in ratios)


def _example():
    import importlib.util
    spec = importlib.util.spec_from_file_location("lr_example", ROOT / "examples" /
                                                  "logistic_regression.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_logistic_regression_example_trains_the_same_on_dask():
    """The example's own training loop, a few steps, on dask and on numpy."""
    pytest.importorskip("sklearn")
    ex = _example()
    X, T = ex.load_breast_cancer()
    make = list(ex.optimizers(X, 1e-3).values())[-1]  # the tuned Nesterov run
    runs = [ex.train(X, T, make, backend=be, steps=15, verbose=False)
            for be in ("numpy", "dask")]
    (h_np, acc_np, w_np, b_np, _), (h_da, acc_da, w_da, b_da, f_da) = runs
    np.testing.assert_allclose(h_da, h_np, rtol=1e-10)
    assert h_da[-1] < h_da[0] == pytest.approx(np.log(2))
    np.testing.assert_allclose(w_da, w_np, rtol=1e-9, atol=1e-12)
    assert acc_da == acc_np > 0.9
    assert f_da(w_np, b_np) == pytest.approx(h_np[-1], rel=0.05)


@pytest.mark.slow
def test_logistic_regression_example_script_on_dask():
    """`examples/logistic_regression.py --backend dask --quick` passes its own checks
    (600 optimizer steps, each one dask graph: about 15 s)."""
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "logistic_regression.py"),
                          "--backend", "dask", "--quick"], capture_output=True, text=True,
                         cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "backend: dask" in out.stdout and out.stdout.strip().endswith("OK")


def test_integer_index_gradients_and_jacobians_on_every_backend(backend):
    """Scatter-add (repeated indices add up) and basis maps, which need no item assignment."""
    x = fg.placeholder("x", shape=(None, 3))
    w = fg.variable(np.array([0.5, -1.0, 2.0]), name="w")
    f = fg.sum(x[:, [0, 2, 2]] ** 2) + fg.sum(fg.tanh(x @ w))
    X = np.arange(6.0).reshape(2, 3) / 4
    outs = [fg.grad(f, x), fg.jacobian(fg.tanh(x @ w), w), fg.hessian(f, w)]
    got, want = run_both(outs, backend, {x: X})
    assert_matches(got, want)
    assert want[0][0, 2] == pytest.approx(4 * X[0, 2] + (1 - np.tanh(X[0] @ w.value) ** 2) * 2)
