"""The wave-3 differential fuzz (tests/fuzz_wave3.py's graphs and nn layers) on the dask
backend, against the numpy backend's reference interpreter (``codegen=False``).

Each graph runs on dask in one chunk and in chunks of one row, on feeds A, A, B (other
values and run-time lengths), A: outputs have the reference's Python type, dtype and
shape (and their nodes' declared ones), errors the reference's class, and values agree
within the rounding backends/dask_backend.py states: a sum or contraction across chunks
adds in another order, and a loop's task runs its bodies as the numpy backend's default
executor does (a few ulps from the reference), so floats are held to rtol = atol = 1e-9
(float64), 2e-4 (float32, the tolerance tests/test_backends.py uses) and 1e-2 (float16,
tests/test_fuzz_wave3.py's); integers and bools exactly. Elementwise steps are held to
numpy bit for bit in tests/test_dask_parity.py.

Then the newest fixes on dask, against numpy closed forms: float16 var/std of 70000
values, min of integers at their dtype's edges, complex weak scalars, and float16
sum/mean over several chunks (a chunk's partial sum rounded to float16 overflowed).

Seeds are fixed and few (CI: ~30 s); ``FLOWGRAD_FUZZ_DASK=200`` runs seeds 0..199.
"""
import os
import warnings

import numpy as np
import pytest

import flowgrad as fg

pytest.importorskip("dask.array", reason="the dask backend needs dask (pip install "
                    "flowgrad[dask])")

from flowgrad.backends.dask_backend import DaskBackend  # noqa: E402
from fuzz_wave3 import NN_MODELS, build_case, call_quietly, nn_case  # noqa: E402

# seeds drawing every dtype and loops, vectorize, layer norm, embeddings, conds, customs
SEEDS = list(range(int(os.environ["FLOWGRAD_FUZZ_DASK"]))) if \
    "FLOWGRAD_FUZZ_DASK" in os.environ else [1, 5, 11, 12, 17, 23, 31, 33, 38, 39]
RTOL = {2: 1e-2, 4: 2e-4, 8: 1e-9}


def _tol(dtype):
    return RTOL[dtype.itemsize // (2 if dtype.kind == "c" else 1)]


def _backends(rows=1):
    """Fresh instances each time: one chunk, and chunks of ``rows`` rows (of one row,
    every sum over the leading axis crosses chunks)."""
    return {"dask": DaskBackend(), f"dask-chunks-of-{rows}": DaskBackend(chunks=rows)}


_call = call_quietly   # (outputs, None) or (None, the exception)


def _differences(got, want, nodes, what):
    probs = []
    for k, (g, w, node) in enumerate(zip(got, want, nodes)):
        label = f"{what} out{k}"
        if type(g) is not type(w):
            probs.append(f"{label}: type {type(g).__name__}, reference {type(w).__name__}")
            continue
        g, w = np.asarray(g), np.asarray(w)
        fits = g.ndim == len(node.shape) and all(
            d is None or d == n for d, n in zip(node.shape, g.shape))
        if g.dtype != w.dtype or g.shape != w.shape or g.dtype != node.dtype or not fits:
            probs.append(f"{label}: {g.dtype}{g.shape}, reference {w.dtype}{w.shape}, "
                         f"node {node.dtype}{node.shape}")
        elif g.dtype.kind in "fc":
            t = _tol(g.dtype)
            if not np.allclose(g, w, rtol=t, atol=t, equal_nan=True):
                probs.append(f"{label}: {g!r} != reference {w!r}")
        elif not np.array_equal(g, w):
            probs.append(f"{label}: {g!r} != reference {w!r}")
    return probs


def _problems(case, rows=1, again=True):
    """Every disagreement of the dask programs with the reference on feeds A, A, B, A
    (A, B, A without ``again``)."""
    reference = fg.compile(case.outs, codegen=False)
    progs = {name: fg.compile(case.outs, backend=b) for name, b in _backends(rows).items()}
    a, b = case.feeds
    calls = [("call 1", a), ("call 2", a), ("call 3 (fresh feeds)", b), ("call 4", a)]
    probs = []
    for label, feed in calls if again else calls[:1] + calls[2:]:
        want, want_exc = _call(reference, feed)
        for name, prog in progs.items():
            got, exc = _call(prog, feed)
            if type(exc) is not type(want_exc):
                probs.append(f"{label} {name}: raised {exc!r:.300}, "
                             f"reference {want_exc!r:.300}")
            elif got is not None:
                probs += _differences(got, want, case.outs, f"{label} {name}")
    return probs


@pytest.mark.parametrize("seed", SEEDS)
def test_random_wave3_graphs_on_dask_agree_with_numpy(seed):
    case = build_case(seed)
    with case.graph:
        probs = _problems(case)
    assert not probs, f"{case}\n" + "\n".join(probs[:12])


@pytest.mark.parametrize("name", sorted(NN_MODELS))
def test_nn_layers_on_dask_agree_with_numpy(name):
    """Convolution and pooling, batch norm, LSTM/GRU/RNN (loops as one task each), in
    float64, float32 and float16, on a run-time batch (and time) length: a first call, one
    on fresh feeds, the first feeds again. (A convolution's dask graph costs ~1 s a call:
    its batches of 2 and 3 rows go in chunks of 2.)"""
    probs = []
    for dtype in ("float64", "float32", "float16"):
        case = nn_case(name, dtype)
        with case.graph:
            probs += [f"{dtype}: {p}" for p in _problems(
                case, rows=2 if name == "conv+pool" else 1, again=False)]
    assert not probs, "\n".join(probs[:12])


# -- the newest fixes, on dask: each against numpy's closed form --------------------------

def _on_dask(make, x, dtype, chunks):
    with fg.Graph():
        p = fg.placeholder("p", (None,), dtype=dtype)
        out = make(p)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")        # numpy's float16 overflow to inf
            want = fg.compile(out, codegen=False)({p: x})
            got = [fg.compile(out, backend=DaskBackend(chunks=c))({p: x}) for c in chunks]
    return np.asarray(want), [np.asarray(g) for g in got]


@pytest.mark.parametrize("name", ["var", "std"])
def test_float16_var_and_std_of_70000_values_on_dask(name):
    # float16's squares' sum overflows past 65504: accumulated in float32, rounded once
    x = (np.random.default_rng(0).normal(size=70000) * 100 + 300).astype(np.float16)
    closed = np.float16(getattr(np, name)(x.astype(np.float64)))
    want, got = _on_dask(getattr(fg, name), x, "float16", ["auto", 7000])
    assert want.dtype == np.float16 and abs(float(want) - float(closed)) <= 2e-3 * float(closed)
    for g in got:
        assert g.dtype == np.float16 and g.shape == () and g == want


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "uint16", "int32", "uint32",
                                   "int64", "uint64"])
def test_integer_min_at_dtype_edges_on_dask(dtype):
    info = np.iinfo(dtype)
    for x in (np.array([info.min, 5, info.max, 3, info.min + 1], dtype),
              np.array([3, 0, info.max], dtype), np.array([info.max] * 3, dtype)):
        want, got = _on_dask(fg.min, x, dtype, ["auto", 1, 2])
        for g in [want] + got:
            assert g.dtype == np.dtype(dtype) and g == np.min(x)


@pytest.mark.parametrize("make, base", [(lambda p: p * 1j, "complex64"),
                                        (lambda p: 1j * p + (1 - 2j), "complex64"),
                                        (lambda p: p * 1j, "float32")])
def test_complex_weak_scalars_on_dask(make, base):
    # a Python complex is weak: complex64 (or float32) stays complex64, as numpy 2 does
    rng = np.random.default_rng(1)
    x = rng.normal(size=6).astype(base)
    if base == "complex64":
        x = (x + 1j * rng.normal(size=6)).astype(base)
    want_np = make(x)
    want, got = _on_dask(make, x, base, ["auto", 1])
    for g in [want] + got:
        assert g.dtype == np.complex64 and np.array_equal(g, want_np)


@pytest.mark.parametrize("chunks", [2, 3, 7])
@pytest.mark.parametrize("name", ["sum", "mean"])
def test_float16_sum_and_mean_over_chunks_do_not_overflow(name, chunks):
    # numpy sums a float16 vector in float32 in one pass: 0 here; dask's chunks of 2
    # summed to float16 partials of ±inf, then inf − inf = NaN (sum); a float16 sum
    # that overflows in the end is inf on both
    x = np.array([60000, 60000, -60000, -60000, 1.5] * 3, np.float16)
    closed = np.float16(getattr(np, name)(x.astype(np.float64)))
    want, got = _on_dask(getattr(fg, name), x, "float16", [chunks])
    assert want == closed and got[0].dtype == np.float16 and got[0] == closed
    big = np.full(70000, 2.0, np.float16)       # 140000: past float16's range
    _, got = _on_dask(fg.sum, big, "float16", [chunks * 10_000])
    with np.errstate(over="ignore"):
        assert got[0] == np.sum(big) == np.inf


def test_float16_gradient_of_a_broadcast_over_chunks_does_not_overflow():
    # the adjoint of broadcasting sums the rows back (sum_to): in float16 chunks of 2
    # rows it was ±inf / NaN where numpy's float32 pass gives each column's exact sum
    g = np.array([[60000.0], [60000.0], [-60000.0], [-60000.0], [0.5]] * 2, np.float16)
    with fg.Graph():
        b = fg.placeholder("b", (1, 1), dtype="float16")
        w = fg.placeholder("w", (None, 1), dtype="float16")
        grad = fg.grad(fg.sum(b * w), b)
        feed = {b: np.ones((1, 1), np.float16), w: g}
        want = np.asarray(fg.compile(grad, codegen=False)(feed))
        got = np.asarray(fg.compile(grad, backend=DaskBackend(chunks=2))(feed))
    closed = np.float16(g.astype(np.float64).sum(axis=0, keepdims=True))
    assert want == closed and got.dtype == np.float16 and got.shape == (1, 1)
    assert got == closed
