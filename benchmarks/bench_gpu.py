"""GPU benchmark (issue 6): flowgrad on cupy against hand-written cupy, in one process.

1. Gradient of the batch logistic regression loss (mean BCE from logits + λ·½‖w‖²),
   n = 10⁶, d = 512, float32: the loss and both gradients.
2. One training step of an MLP, batch 8192, 784-1024-10, relu, softmax cross-entropy
   against one-hot targets, float32: forward, backward and the SGD update.

The hand-written side is the same arithmetic written directly against the array
namespace (the stable BCE and log-softmax flowgrad uses, the same out-of-place
update). Both run on data already on the device; each timing brackets the work
with ``cupy.cuda.Device().synchronize()``. Times are medians of interleaved runs;
before timing, the two sides' results are compared (exit 1 when they disagree).
Prints a markdown table for benchmarks/RESULTS.md (target: ratio ≤ 1.1).

    python benchmarks/bench_gpu.py                          # cupy, full sizes
    .venv/bin/python benchmarks/bench_gpu.py --backend numpy --small   # CPU check
"""
from __future__ import annotations

import argparse
import platform
import sys
import time

import numpy as np

import flowgrad as fg
from reference import logistic_loss_and_gradient

LAM, LR = 1e-3, 0.1


def timer(sync, fn, inner):
    sync()
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    sync()
    return (time.perf_counter() - t0) / inner


def interleaved(sync, fa, fb, repeats, inner):
    """Median seconds per call of fa and fb, measured alternately after a warm-up."""
    for f in (fa, fb):
        f()
        f()
    ta, tb = [], []
    for _ in range(repeats):
        ta.append(timer(sync, fa, inner))
        tb.append(timer(sync, fb, inner))
    return float(np.median(ta)), float(np.median(tb))


def worst_rel(a, b):
    a, b = fg.to_numpy(a).astype(np.float64), fg.to_numpy(b).astype(np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


# -- 1. batch logistic regression -------------------------------------------------------

def logistic_case(be, xp, n, d, dtype):
    rng = np.random.default_rng(0)
    X = be.asarray(rng.standard_normal((n, d), dtype=np.float32).astype(dtype))
    T = be.asarray((rng.random(n) < 0.5).astype(dtype))
    W0 = (rng.standard_normal(d) * 0.05).astype(dtype)
    W, B = be.asarray(W0), be.asarray(np.asarray(0.1, dtype))
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, d), dtype=dtype)
        t = fg.placeholder("t", shape=(None,), dtype=dtype)
        w = fg.variable(W0, name="w")
        b = fg.variable(np.asarray(0.1, dtype), name="b")
        loss = fg.bce_with_logits(fg.linear(x, w, b), t) + LAM * fg.l2(w)
        prog = fg.compile([loss, *fg.grad(loss, [w, b])], backend=be)

    def flow():
        return prog(x=X, t=T)

    def hand():
        return logistic_loss_and_gradient(xp, X, T, W, B, LAM)

    err = max(worst_rel(a, b) for a, b in zip(flow(), hand()))
    return f"batch logistic gradient, n={n:,}, d={d}, {dtype}", flow, hand, err, prog.n_steps


# -- 2. an MLP training step -------------------------------------------------------------

def mlp_case(be, xp, batch, sizes, dtype):
    d, h, k = sizes
    rng = np.random.default_rng(1)
    Xh = rng.standard_normal((batch, d)).astype(dtype)
    Yh = np.eye(k, dtype=dtype)[rng.integers(0, k, size=batch)]
    init = [(rng.standard_normal((d, h)) / np.sqrt(d)).astype(dtype), np.zeros(h, dtype),
            (rng.standard_normal((h, k)) / np.sqrt(h)).astype(dtype), np.zeros(k, dtype)]
    X, Y = be.asarray(Xh), be.asarray(Yh)
    act = getattr(fg, "relu", fg.tanh)
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, d), dtype=dtype)
        y = fg.placeholder("y", shape=(None, k), dtype=dtype)
        params = [fg.variable(v, name=nm) for v, nm in zip(init, ["W1", "b1", "W2", "b2"])]
        W1, b1, W2, b2 = params
        logits = act(x @ W1 + b1) @ W2 + b2
        if hasattr(fg, "softmax_cross_entropy"):
            loss, kind = fg.softmax_cross_entropy(logits, y), "softmax cross-entropy"
        else:
            loss, kind = fg.mse(logits, y), "mse"
        train = fg.optim.SGD(params, lr=LR).minimize(loss, backend=be)
    hp = [be.asarray(v) for v in init]

    def flow():
        return train(x=X, y=Y)

    def hand():
        H1, c1, H2, c2 = hp
        a = X @ H1 + c1
        hid = xp.maximum(a, 0) if act is fg.relu else xp.tanh(a)
        z = hid @ H2 + c2
        if kind == "mse":
            diff = z - Y
            loss = xp.mean(diff * diff)
            dz = (2.0 / diff.size) * diff
        else:
            m = xp.max(z, axis=1, keepdims=True)
            s = z - m
            lse = xp.log(xp.sum(xp.exp(s), axis=1, keepdims=True))
            loss = -xp.mean(xp.sum(Y * (s - lse), axis=1))
            dz = (xp.exp(s - lse) - Y) / batch
        dhid = dz @ H2.T
        da_ = dhid * (a > 0) if act is fg.relu else dhid * (1 - hid * hid)
        grads = [X.T @ da_, da_.sum(0), hid.T @ dz, dz.sum(0)]
        hp[:] = [p - LR * g for p, g in zip(hp, grads)]
        return loss

    # one step from the same start on both sides: the losses and the new weights agree
    err = worst_rel(flow(), hand())
    err = max([err] + [worst_rel(p.value, q) for p, q in zip(params, hp)])
    name = (f"MLP step, batch {batch:,}, {d}-{h}-{k}, {'relu' if act is fg.relu else 'tanh'}, "
            f"{kind}, SGD, {dtype}")
    return name, flow, hand, err, train.program.n_steps


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="cupy", choices=["cupy", "numpy"])
    ap.add_argument("--small", action="store_true", help="small sizes (a CPU smoke test)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args(argv)

    be = fg.get_backend(args.backend)   # BackendError with install advice when no GPU
    xp = be.xp
    sync = getattr(be, "synchronize", lambda: None)
    if args.small:
        n, d, batch, sizes = 20_000, 64, 256, (784, 128, 10)
    else:
        n, d, batch, sizes = 1_000_000, 512, 8192, (784, 1024, 10)
    repeats = args.repeats or (5 if args.small else 15)
    inner = 2 if args.small else 10

    if args.backend == "cupy":
        props = xp.cuda.runtime.getDeviceProperties(xp.cuda.Device().id)
        device = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        versions = f"cupy {xp.__version__}, CUDA runtime {xp.cuda.runtime.runtimeGetVersion()}"
    else:
        device, versions = platform.processor() or platform.machine(), f"numpy {np.__version__}"
    print(f"device: {device}; {versions}; Python {platform.python_version()}; "
          f"{repeats} interleaved repeats of {inner} calls", flush=True)

    rows, ok = [], True
    for make in (lambda: logistic_case(be, xp, n, d, args.dtype),
                 lambda: mlp_case(be, xp, batch, sizes, args.dtype)):
        name, flow, hand, err, steps = make()
        good = err < (1e-3 if args.dtype == "float32" else 1e-9)
        ok &= good
        t_f, t_h = interleaved(sync, flow, hand, repeats, inner)
        rows.append((name, steps, t_f, t_h, err, good))
        print(f"  done: {name}", flush=True)

    print(f"\n| benchmark ({args.backend}) | flowgrad | hand-written {xp.__name__} | ratio "
          f"| max rel. difference |")
    print("|---|---|---|---|---|")
    for name, steps, t_f, t_h, err, good in rows:
        print(f"| {name} ({steps} plan steps) | {t_f * 1e3:.3f} ms | {t_h * 1e3:.3f} ms | "
              f"{t_f / t_h:.2f}× | {err:.1e}{'' if good else ' MISMATCH'} |")
    print("\ntarget: ratio ≤ 1.1×" + ("" if ok else "\nFAILED: results differ"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
