"""A differential fuzz of the wave-3 features (tests/fuzz_wave3.py draws the graphs:
loops, custom rules, stop_gradient, vectorize, nn layers, 0-d values, run-time lengths,
int/bool/float16/float32/complex64 dtypes, weak Python scalars).

Each graph is compiled three ways: the reference interpreter (``codegen=False``), the
default (generated array or scalar code, numba regions later), and ``verify=True``
(lockstep beside the interpreter). For each, on a first call, a repeated one, one with
fresh feeds (other values, other run-time lengths) and the first feeds again:

* values, dtypes, shapes and Python types agree with the reference's, and with the
  nodes' declared dtypes and shapes; errors are the reference's class;
* the fed arrays are unchanged and no output shares memory with one (nor with another
  output); outputs written to after a call change nothing a later call returns;
* a 0-d input fed as a 0-d array, a numpy scalar (``np.float32(2)``, ``np.int8(3)``)
  or a Python number gives the same outputs (type and dtype too);
* a float graph keeps its inputs' dtype (weak scalars) and each gradient has its
  input's dtype; for float64 graphs the gradients match central differences.

Seeds are fixed (``np.random.default_rng(seed)`` per graph), so CI is deterministic.
CI runs ``FLOWGRAD_FUZZ_WAVE3`` graphs (default 150, ~10 s); run more locally with e.g.
``FLOWGRAD_FUZZ_WAVE3=3000 .venv/bin/python -m pytest tests/test_fuzz_wave3.py``, and
``FLOWGRAD_FUZZ_WAVE3_STEPS`` for longer graphs (default 4 steps).
"""
import os

import numpy as np
import pytest

import flowgrad as fg
from fuzz_wave3 import NN_MODELS, build_case, call_quietly, nn_case

N_CASES = int(os.environ.get("FLOWGRAD_FUZZ_WAVE3", "150"))
MAX_STEPS = int(os.environ.get("FLOWGRAD_FUZZ_WAVE3_STEPS", "4"))
#: how far the default executor may be from the reference, relative, per dtype's
#: precision (numexpr chains and the scalar code's math are a few ulps off; verify=True
#: judges every step exactly)
RTOL = {2: 1e-2, 4: 1e-4, 8: 1e-9}


def _rtol(dtype):
    dtype = np.dtype(dtype)
    return RTOL[dtype.itemsize // (2 if dtype.kind == "c" else 1)]


def _same(got, want, what):
    """Problems (strings) where ``got`` differs from ``want``: type, dtype, shape, value."""
    if type(got) is not type(want):
        return [f"{what}: type {type(got).__name__}, reference {type(want).__name__}"]
    g, w = np.asarray(got), np.asarray(want)
    if g.dtype != w.dtype or g.shape != w.shape:
        return [f"{what}: {g.dtype}{g.shape}, reference {w.dtype}{w.shape}"]
    if g.dtype.kind in "fc":
        t = _rtol(g.dtype)
        ok = np.allclose(g, w, rtol=t, atol=t, equal_nan=True)
    else:
        ok = np.array_equal(g, w)
    return [] if ok else [f"{what}: {g!r} != reference {w!r}"]


_call = call_quietly   # (outputs, None) or (None, the exception)


def _storage_problems(outs, feed, before, what):
    """Feeds changed by a call, outputs sharing memory with a feed or each other."""
    probs = []
    arrays = [o for o in outs if isinstance(o, np.ndarray)]
    for key, v in feed.items():
        if isinstance(v, np.ndarray):
            if not np.array_equal(v, before[key]):
                probs.append(f"{what}: the call changed feed {key.name}")
            if any(np.shares_memory(o, v) for o in arrays):
                probs.append(f"{what}: an output shares memory with feed {key.name}")
    for i, a in enumerate(arrays):
        if any(np.shares_memory(a, b) for b in arrays[i + 1:]):
            probs.append(f"{what}: two outputs share memory")
    return probs


def _declared(nodes, outs, what):
    """Outputs whose value disagrees with its node's declared dtype or shape."""
    probs = []
    for k, (node, v) in enumerate(zip(nodes, outs)):
        a = np.asarray(v)
        fits = a.ndim == len(node.shape) and all(
            d is None or d == n for d, n in zip(node.shape, a.shape))
        if a.dtype != node.dtype or not fits:
            probs.append(f"{what} out{k}: {a.dtype}{a.shape}, node says "
                         f"{node.dtype}{node.shape}")
    return probs


def _scribble(outs):
    """Write into every writable output: a later call must not see it."""
    for o in outs:
        if isinstance(o, np.ndarray) and o.flags.writeable and o.size:
            o[...] = 7


def _one_call(progs, case, feed, label):
    """Run every program on ``feed``; returns (problems, the reference's outputs)."""
    probs, results = [], {}
    for name, prog in progs.items():
        before = {k: np.array(v, copy=True) for k, v in feed.items()}
        outs, exc = _call(prog, feed)
        results[name] = (outs, exc)
        if outs is not None:
            probs += _storage_problems(outs, feed, before, f"{label} {name}")
            probs += _declared(case.outs, outs, f"{label} {name}")
    ref, ref_exc = results["reference"]
    for name, (outs, exc) in results.items():
        if type(exc) is not type(ref_exc):
            probs.append(f"{label} {name}: raised {exc!r:.300}, reference {ref_exc!r:.300}")
        elif outs is not None:
            for k, (g, w) in enumerate(zip(outs, ref)):
                probs += _same(g, w, f"{label} {name} out{k}")
    kept = None if ref is None else [np.array(v, copy=True) if isinstance(v, np.ndarray)
                                     else v for v in ref]
    for outs, _ in results.values():
        _scribble(outs or [])
    return probs, kept


def _calls(case):
    """The three programs on feeds A, A, B, A: every discrepancy found."""
    progs = {"reference": fg.compile(case.outs, codegen=False),
             "default": fg.compile(case.outs), "verify": fg.compile(case.outs, verify=True)}
    a, b = case.feeds
    probs, first = _one_call(progs, case, a, "call 1")
    for label, feed in (("call 2", a), ("call 3 (fresh feeds)", b), ("call 4", a)):
        more, last = _one_call(progs, case, feed, label)
        probs += more
    if first is not None and last is not None:
        for k, (g, w) in enumerate(zip(last, first)):
            probs += _same(g, w, f"call 4 against call 1 out{k}")
    return probs


def _scalar_forms(case):
    """Problems where a 0-d input fed as a numpy scalar or a Python number gives other
    outputs than the same value fed as a 0-d array."""
    probs = []
    for feed in case.feeds:
        zero_d = [k for k, v in feed.items() if np.ndim(v) == 0]
        if not zero_d:
            return []
        for codegen in (False, True):
            prog = fg.compile(case.outs, codegen=codegen)
            want, want_exc = _call(prog, feed)
            for form, make in (("numpy scalar", lambda v: np.asarray(v)[()]),
                               ("Python number", lambda v: np.asarray(v).item())):
                fed = dict(feed)
                for k in zero_d:
                    fed[k] = make(feed[k])
                got, exc = _call(prog, fed)
                label = f"{form} (codegen={codegen})"
                if type(exc) is not type(want_exc):
                    probs.append(f"{label}: raised {exc!r:.200}, 0-d array {want_exc!r:.200}")
                elif got is not None:
                    for k, (g, w) in enumerate(zip(got, want)):
                        probs += _same(g, w, f"{label} out{k}")
    return probs


def _dtype_problems(case):
    """A float graph keeps its inputs' dtype; each gradient has its input's dtype."""
    if case.outs[0].dtype.kind not in "fc" or np.dtype(case.dtype).kind not in "fc":
        return []
    probs = []
    if case.outs[0].dtype != case.dtype:
        probs.append(f"the result is {case.outs[0].dtype}, the inputs {case.dtype}")
    for g in case.grads:
        if g.dtype != case.dtype:
            probs.append(f"a gradient is {g.dtype}, its input {case.dtype}")
    return probs


def _finite_differences(case, eps=1e-6):
    """The gradients of a bounded loss against central differences (float64 only)."""
    loss = fg.sum(fg.tanh(case.outs[0]))
    grads = fg.compile(fg.grad(loss, case.diff))
    f = fg.compile(loss, codegen=False)
    probs = []
    for feed in case.feeds:
        if np.max(np.abs(f(feed)), initial=0) > 1e3:
            continue                   # differences lose their digits; values are checked
        for p, g in zip(case.diff, grads(feed)):
            x = np.asarray(feed[p], dtype=np.float64)
            num = np.zeros_like(x)
            for i in np.ndindex(x.shape):
                up, down = x.copy(), x.copy()
                up[i] += eps
                down[i] -= eps
                num[i] = (f({**feed, p: up}) - f({**feed, p: down})) / (2 * eps)
            if not np.allclose(g, num, rtol=1e-5, atol=1e-6):
                probs.append(f"gradient for {p.name}: {g!r}, differences {num!r}")
    return probs


@pytest.mark.parametrize("seed", range(N_CASES))
def test_random_wave3_graphs_agree_across_executors(seed):
    case = build_case(seed, max_steps=MAX_STEPS)
    with case.graph:
        probs = _calls(case) + _scalar_forms(case) + _dtype_problems(case)
        if case.diff:
            probs += _finite_differences(case)
    assert not probs, f"{case}\n" + "\n".join(probs[:12])


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16"])
@pytest.mark.parametrize("name", sorted(NN_MODELS))
def test_nn_layers_agree_across_executors(name, dtype):
    """Convolution and pooling, batch norm, LSTM/GRU/RNN on a run-time batch (and time)
    length: the same checks as the random graphs (finite differences for float64)."""
    case = nn_case(name, dtype)
    with case.graph:
        probs = _calls(case) + _dtype_problems(case)
        if case.diff:
            probs += _finite_differences(case)
    assert not probs, f"{case}\n" + "\n".join(probs[:12])
