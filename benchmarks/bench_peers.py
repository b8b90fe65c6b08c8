"""Issue 12's workloads: flowgrad against hand-written numpy and, when installed, PyTensor,
jax.jit, PyTorch (CPU) and HIPS autograd — all in this one process.

    .venv/bin/python benchmarks/bench_peers.py [--repeats 31] [--only NAME,...] [--quick]

(`pip install -e .[bench]` brings the peers.) Every workload checks that all peers agree
with the hand-written numpy result before it is timed. Times are medians of interleaved
rounds (each round runs every peer once, ``inner`` calls each), so all peers see the same
machine state; on a shared machine the ratios are steadier than the absolute figures.
"flowgrad" is the default path (generated code, scalar specialisation, fusion);
"flowgrad interp." the reference interpreter loop (``fg.compile(..., codegen=False)``).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
import tracemalloc

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_ENABLE_X64", "1")
# PyTorch's OpenMP workers busy-wait after each op by default, stealing the core the
# next peer runs on: interleaved timings would charge that to whoever runs after it
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

import flowgrad as fg  # noqa: E402
from flowgrad.engine import codegen  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from reference import logistic_loss_and_gradient  # noqa: E402


def _try(name):
    try:
        return __import__(name)
    except Exception:   # not installed, or broken: that peer is left out
        return None


jax = _try("jax")
torch = _try("torch")
pytensor = _try("pytensor")
autograd = _try("autograd")
if jax is not None:
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
if pytensor is not None:
    import pytensor.tensor as pt
if autograd is not None:
    import autograd.numpy as anp
if torch is not None:
    torch.set_num_threads(max(1, os.cpu_count() or 1))


def block(r):
    """Wait for an asynchronous result (jax dispatches asynchronously)."""
    if jax is not None:
        jax.block_until_ready(r)
    return r


def jax_sgd(loss_fn, params, lr, *data):
    """One jitted SGD step of ``loss_fn(params, *data)`` per call; returns the loss."""
    @jax.jit
    def step(p, *d):
        lo, g = jax.value_and_grad(loss_fn)(p, *d)
        return lo, jax.tree_util.tree_map(lambda a, ga: a - lr * ga, p, g)
    state, dd = [params], [jnp.asarray(x) for x in data]

    def run():
        lo, state[0] = step(state[0], *dd)
        return block(lo)
    return run


def interleaved(fns: dict, repeats: int, inner: int) -> dict:
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.perf_counter()
            for _ in range(inner):
                f()
            times[k].append((time.perf_counter() - t0) / inner)
    return {k: float(np.median(v)) for k, v in times.items()}


def fmt(t):
    if t < 1e-3:
        return f"{t * 1e6:.1f} µs"
    if t < 1:
        return f"{t * 1e3:.2f} ms"
    return f"{t:.2f} s"


def table(title, times, ref="hand numpy", peer_for_ratio=None, note=""):
    print(f"\n### {title}\n")
    if note:
        print(note + "\n")
    cols = ["peer", "median", f"÷ {ref}"] + ([f"÷ {peer_for_ratio}"] if peer_for_ratio in times else [])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for k, t in times.items():
        row = [k, fmt(t), f"{t / times[ref]:.2f}×"]
        if peer_for_ratio in times:
            row.append(f"{t / times[peer_for_ratio]:.2f}×")
        print("| " + " | ".join(row) + " |")
    sys.stdout.flush()


def check(results: dict, want, rtol=1e-9, atol=1e-12):
    for name, got in results.items():
        for g, w in zip(got, want):
            g = np.asarray(g.detach().numpy() if hasattr(g, "detach") else g, dtype=np.float64)
            if not np.allclose(g, np.asarray(w, dtype=np.float64), rtol=rtol, atol=atol):
                raise AssertionError(f"{name} disagrees with hand numpy")


# -- 1. the lecture notes' scalar logistic step ---------------------------------------------------

def seed_scalar(repeats):
    lam, w0, b0, x0, t0 = 0.1, 0.8, -0.3, 1.5, 1.0
    with fg.Graph():
        x, t = fg.placeholder("x"), fg.placeholder("t")
        w, b = fg.variable(w0, name="w"), fg.variable(b0, name="b")
        y = fg.sigmoid(w * x + b)
        loss = 0.5 * (y - t) ** 2 + lam * (0.5 * w ** 2)
        outs = [loss, *fg.grad(loss, [w, b])]
        prog, interp = fg.compile(outs), fg.compile(outs, codegen=False)
    X, T, W, B = np.float64(x0), np.float64(t0), np.float64(w0), np.float64(b0)

    def hand():
        z = W * X + B
        yy = 1.0 / (1.0 + np.exp(-z))
        zbar = (yy - T) * yy * (1.0 - yy)
        return 0.5 * (yy - T) ** 2 + lam * 0.5 * W ** 2, zbar * X + lam * W, zbar

    fns = {"hand numpy": hand, "flowgrad": lambda: prog(x=X, t=T),
           "flowgrad interp.": lambda: interp(x=X, t=T)}

    def loss_fn(xp, sig):
        return lambda w_, b_, x_, t_: 0.5 * (sig(w_ * x_ + b_) - t_) ** 2 + lam * 0.5 * w_ ** 2
    if jax is not None:
        jf = jax.jit(jax.value_and_grad(loss_fn(jnp, jax.nn.sigmoid), argnums=(0, 1)))
        fns["jax.jit"] = lambda: block(jf(w0, b0, x0, t0))
    if pytensor is not None:
        xs = pt.dscalars("x", "t", "w", "b")
        lo = loss_fn(pt, pt.sigmoid)(xs[2], xs[3], xs[0], xs[1])
        pf = pytensor.function(list(xs), [lo, *pytensor.grad(lo, [xs[2], xs[3]])])
        fns["PyTensor"] = lambda: pf(x0, t0, w0, b0)
    if torch is not None:
        tw = torch.tensor(w0, dtype=torch.float64, requires_grad=True)
        tb = torch.tensor(b0, dtype=torch.float64, requires_grad=True)
        tx, tt = torch.tensor(x0, dtype=torch.float64), torch.tensor(t0, dtype=torch.float64)

        def tf():
            lo = loss_fn(torch, torch.sigmoid)(tw, tb, tx, tt)
            return (lo, *torch.autograd.grad(lo, (tw, tb)))
        fns["PyTorch"] = tf
    if autograd is not None:
        ag = autograd.value_and_grad(
            lambda p, x_, t_: loss_fn(anp, lambda z: 1 / (1 + anp.exp(-z)))(p[0], p[1], x_, t_))
        fns["autograd"] = lambda: ag(np.array([w0, b0]), x0, t0)
    want = hand()
    res = {k: f() for k, f in fns.items() if k not in ("jax.jit", "autograd")}
    if jax is not None:
        v, (gw, gb) = fns["jax.jit"]()
        res["jax.jit"] = (v, gw, gb)
    if autograd is not None:
        v, g = fns["autograd"]()
        res["autograd"] = (v, g[0], g[1])
    check(res, want)
    table("Lecture notes' scalar logistic step, loss and gradient (w, b)",
          interleaved(fns, repeats, 200), peer_for_ratio="PyTensor",
          note="goal: flowgrad ≤ 0.5× PyTensor")


# -- 2. 4th derivative of tanh at 1000 points ---------------------------------------------

def pytensor_tanh_derivative(order):
    """PyTensor's compiled function for the ``order``-th derivative of tanh, entrywise."""
    px = pt.dvector("x")
    pd = pt.tanh(px)
    for _ in range(order):
        pd = pytensor.grad(pd.sum(), px)
    return pytensor.function([px], pd)


def tanh4(repeats):
    xv = np.linspace(-2, 2, 1000)
    with fg.Graph():
        x = fg.placeholder("x", shape=(1000,))
        d = fg.tanh(x)
        for _ in range(4):
            d = fg.grad(fg.sum(d), x)
        prog, interp = fg.compile(d), fg.compile(d, codegen=False)

    def hand():
        t = np.tanh(xv)
        return (8.0 * t * (1.0 - t * t) * (2.0 - 3.0 * t * t),)

    fns = {"hand numpy": hand, "flowgrad": lambda: (prog(x=xv),),
           "flowgrad interp.": lambda: (interp(x=xv),)}
    if jax is not None:
        f = jnp.tanh
        for _ in range(4):
            f = jax.grad(f)
        jf = jax.jit(jax.vmap(f))
        fns["jax.jit"] = lambda: (block(jf(xv)),)
    if pytensor is not None:
        pf = pytensor_tanh_derivative(4)
        fns["PyTensor"] = lambda: (pf(xv),)
    if torch is not None:
        def tf():
            tx = torch.from_numpy(xv).requires_grad_(True)
            dd = torch.tanh(tx)
            for k in range(4):
                (dd,) = torch.autograd.grad(dd.sum(), tx, create_graph=k < 3)
            return (dd,)
        fns["PyTorch"] = tf
    if autograd is not None:
        f = anp.tanh
        for _ in range(4):
            f = autograd.elementwise_grad(f)
        fns["autograd"] = lambda: (f(xv),)
    check({k: f() for k, f in fns.items()}, hand(), rtol=1e-9)
    table("4th derivative of tanh at 1000 points", interleaved(fns, repeats, 20),
          peer_for_ratio="PyTensor", note="goal: flowgrad ≤ 0.75× PyTensor")


# -- 3. gradient descent on linear regression -----------------------------------------------

def linreg(repeats, n, d=5, lr=0.01):
    rng = np.random.default_rng(1)
    X, Y = rng.standard_normal((n, d)), rng.standard_normal(n)
    w_init = np.zeros(d)
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, d))
        y = fg.placeholder("y", shape=(None,))
        w = fg.variable(w_init.copy(), name="w")
        b = fg.variable(0.0, name="b")
        loss = fg.mse(fg.linear(x, w, b), y)
        prog = fg.compile([loss, *fg.grad(loss, [w, b])])
        opt = fg.optim.SGD([w, b], lr)
    hw, hb = w_init.copy(), 0.0

    def hand():
        nonlocal hw, hb
        r = X @ hw + hb - Y
        loss_ = r @ r / n
        gw, gb = (2.0 / n) * (X.T @ r), 2.0 * r.mean()
        hw = hw - lr * gw
        hb = hb - lr * gb
        return loss_

    fns = {"hand numpy": hand, "flowgrad": lambda: opt.step(prog, x=X, y=Y)}
    if jax is not None:
        def lf(p_, X_, Y_):
            r_ = X_ @ p_[0] + p_[1] - Y_
            return jnp.mean(r_ * r_)
        fns["jax.jit"] = jax_sgd(lf, (jnp.asarray(w_init), jnp.asarray(0.0)), lr, X, Y)
    if pytensor is not None:
        sw = pytensor.shared(w_init.copy(), "w")
        sb = pytensor.shared(np.float64(0.0), "b")
        px, py = pt.dmatrix("x"), pt.dvector("y")
        r_ = px @ sw + sb - py
        lo = pt.mean(r_ * r_)
        gw, gb = pytensor.grad(lo, [sw, sb])
        pf = pytensor.function([px, py], lo, updates=[(sw, sw - lr * gw), (sb, sb - lr * gb)])
        fns["PyTensor"] = lambda: pf(X, Y)
    if torch is not None:
        tw = torch.zeros(d, dtype=torch.float64, requires_grad=True)
        tb = torch.zeros((), dtype=torch.float64, requires_grad=True)
        tX, tY = torch.from_numpy(X), torch.from_numpy(Y)

        def tstep():
            r_ = tX @ tw + tb - tY
            lo = torch.mean(r_ * r_)
            gw_, gb_ = torch.autograd.grad(lo, (tw, tb))
            with torch.no_grad():
                tw.sub_(lr * gw_)
                tb.sub_(lr * gb_)
            return lo
        fns["PyTorch"] = tstep
    if autograd is not None:
        ap = [np.concatenate([w_init, [0.0]])]

        def alf(p):
            r_ = anp.dot(X, p[:-1]) + p[-1] - Y
            return anp.mean(r_ * r_)
        avg = autograd.value_and_grad(alf)

        def astep():
            lo, g = avg(ap[0])
            ap[0] = ap[0] - lr * g
            return lo
        fns["autograd"] = astep
    # every peer's first loss (at w = 0, b = 0) is mean(y²): check it, then time
    want = float(np.mean(Y * Y))
    for k, f in fns.items():
        got = f()
        got = float(got.detach()) if hasattr(got, "detach") else float(np.asarray(got))
        assert math.isclose(got, want, rel_tol=1e-9), (k, got, want)
    return interleaved(fns, repeats, 50 if n <= 1000 else 10)


# -- 4. the 2000-step scalar chain ------------------------------------------------------------

def chain(repeats, steps=2000, with_jax=False):
    t0 = time.perf_counter()
    with fg.Graph():
        x = fg.placeholder("x")
        y = x
        for _ in range(steps):
            y = fg.sin(y) * 1.0001 + 0.1 * fg.cos(y)
        t1 = time.perf_counter()
        g = fg.grad(y, x)
        t2 = time.perf_counter()
        prog = fg.compile([y, g])
        t3 = time.perf_counter()
        interp = fg.compile([y, g], codegen=False)
        t4 = time.perf_counter()
    x0 = np.float64(0.4)

    def hand():
        v, vs = x0, []
        for _ in range(steps):
            vs.append(v)
            v = np.sin(v) * 1.0001 + 0.1 * np.cos(v)
        dv = 1.0
        for u in reversed(vs):
            dv = dv * (np.cos(u) * 1.0001 - 0.1 * np.sin(u))
        return v, dv

    fns = {"hand numpy": hand, "flowgrad": lambda: prog(x=x0),
           "flowgrad interp.": lambda: interp(x=x0)}
    if torch is not None:
        def tf():
            tx = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
            v = tx
            for _ in range(steps):
                v = torch.sin(v) * 1.0001 + 0.1 * torch.cos(v)
            return v, torch.autograd.grad(v, tx)[0]
        fns["PyTorch"] = tf
    if autograd is not None:
        def af(v):
            for _ in range(steps):
                v = anp.sin(v) * 1.0001 + 0.1 * anp.cos(v)
            return v
        avg = autograd.value_and_grad(af)
        fns["autograd"] = lambda: avg(0.4)
    jax_compile = None
    if jax is not None and with_jax:
        def jf(v):
            for _ in range(steps):
                v = jnp.sin(v) * 1.0001 + 0.1 * jnp.cos(v)
            return v
        jvg = jax.jit(jax.value_and_grad(jf))
        tj = time.perf_counter()
        block(jvg(0.4))
        jax_compile = time.perf_counter() - tj
        fns["jax.jit"] = lambda: block(jvg(0.4))
    check({k: f() for k, f in fns.items()}, hand(), rtol=1e-9)
    table(f"{steps}-step scalar chain y = sin(y)·1.0001 + 0.1·cos(y), value and gradient",
          interleaved(fns, repeats, 3),
          note=f"goal: flowgrad ≤ 2× hand numpy and compile ≤ 50 ms. flowgrad: build "
               f"{(t1 - t0) * 1e3:.0f} ms, grad {(t2 - t1) * 1e3:.0f} ms, compile "
               f"{(t3 - t2) * 1e3:.0f} ms with codegen ({prog.n_steps} plan steps), "
               f"{(t4 - t3) * 1e3:.0f} ms without"
               + (f"; jax.jit compile {jax_compile:.1f} s" if jax_compile else
                  "; jax.jit left out (its compile takes seconds: --jax-chain adds it); "
                  "PyTensor's compile fails here (RecursionError, per the issue)"))


# -- 5. batch logistic gradient, 6. MLP step -------------------------------------------------

def batch_logistic(repeats, n=100_000, d=100, lam=1e-3):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d))
    T = (rng.random(n) < 0.5).astype(np.float64)
    W, B = rng.standard_normal(d) * 0.1, 0.1
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, d))
        t = fg.placeholder("t", shape=(None,))
        w, b = fg.variable(W, name="w"), fg.variable(B, name="b")
        loss = fg.bce_with_logits(fg.linear(x, w, b), t) + lam * fg.l2(w)
        outs = [loss, *fg.grad(loss, [w, b])]
        prog, interp = fg.compile(outs), fg.compile(outs, codegen=False)
        codegen.FUSE = codegen.REGIONS = False      # neither numexpr chains nor numba loops
        unfused = fg.compile(outs)
        codegen.FUSE = codegen.REGIONS = True
    fns = {"hand numpy": lambda: logistic_loss_and_gradient(np, X, T, W, B, lam),
           "flowgrad": lambda: prog(x=X, t=T), "flowgrad, no fusion": lambda: unfused(x=X, t=T),
           "flowgrad interp.": lambda: interp(x=X, t=T)}
    if jax is not None:
        def jl(w_, b_, X_, T_):
            z = X_ @ w_ + b_
            return jnp.mean(jnp.logaddexp(0.0, z) - z * T_) + lam * 0.5 * (w_ @ w_)
        jf = jax.jit(jax.value_and_grad(jl, argnums=(0, 1)))
        jX, jT = jnp.asarray(X), jnp.asarray(T)
        fns["jax.jit"] = lambda: block(jf(W, B, jX, jT))
    if torch is not None:
        tX, tT = torch.from_numpy(X), torch.from_numpy(T)
        tw = torch.tensor(W, requires_grad=True)
        tb = torch.tensor(B, dtype=torch.float64, requires_grad=True)

        def tf():
            z = tX @ tw + tb
            lo = torch.nn.functional.binary_cross_entropy_with_logits(z, tT) + lam * 0.5 * (tw @ tw)
            return (lo, *torch.autograd.grad(lo, (tw, tb)))
        fns["PyTorch"] = tf
    want = fns["hand numpy"]()
    res = {k: f() for k, f in fns.items() if k != "jax.jit"}
    if jax is not None:
        v, (gw, gb) = fns["jax.jit"]()
        res["jax.jit"] = (v, gw, gb)
    check(res, want, rtol=1e-8)
    table("Batch logistic gradient, 10⁵ × 100, float64", interleaved(fns, repeats, 1),
          note="goal: flowgrad ≤ 1.0× hand numpy")


def mlp(repeats, n=4096, sizes=(784, 512, 10), lr=0.01):
    rng = np.random.default_rng(0)
    f32 = np.float32
    X = rng.standard_normal((n, sizes[0])).astype(f32)
    L = rng.integers(0, sizes[2], n)
    W1 = (rng.standard_normal(sizes[:2]) * 0.05).astype(f32)
    B1 = np.zeros(sizes[1], f32)
    W2 = (rng.standard_normal(sizes[1:]) * 0.05).astype(f32)
    B2 = np.zeros(sizes[2], f32)
    hp = [a.copy() for a in (W1, B1, W2, B2)]

    def hand_grads(p):
        w1, b1, w2, b2 = p
        z1 = X @ w1 + b1
        h = np.maximum(z1, 0)
        z2 = h @ w2 + b2
        z2 = z2 - z2.max(1, keepdims=True)
        e = np.exp(z2)
        s = e.sum(1, keepdims=True)
        loss = np.mean(np.log(s[:, 0]) - z2[np.arange(n), L])
        pr = e / s
        pr[np.arange(n), L] -= 1
        pr /= n
        dh = pr @ w2.T
        dh[z1 <= 0] = 0
        return loss, X.T @ dh, dh.sum(0), h.T @ pr, pr.sum(0)

    def hand():
        loss, *gs = hand_grads(hp)
        for a, g in zip(hp, gs):
            a -= lr * g
        return loss

    with fg.Graph():
        x = fg.placeholder("x", shape=(None, sizes[0]), dtype=f32)
        lab = fg.placeholder("labels", shape=(None,), dtype=np.int64)
        vs = [fg.variable(a.copy(), name=nm) for a, nm in zip((W1, B1, W2, B2), "W1 b1 W2 b2".split())]
        loss = fg.softmax_cross_entropy(
            fg.linear(fg.relu(fg.linear(x, vs[0], vs[1])), vs[2], vs[3]), lab)
        prog = fg.compile([loss, *fg.grad(loss, vs)])
        opt = fg.optim.SGD(vs, lr)
    # agreement before timing (one gradient from the same parameters)
    want = hand_grads([W1, B1, W2, B2])
    got = prog(x=X, labels=L)
    assert all(np.allclose(g, w, rtol=2e-3, atol=2e-5) for g, w in zip(got, want))
    fns = {"hand numpy": hand, "flowgrad": lambda: opt.step(prog, x=X, labels=L)}
    if jax is not None:
        def jl(p, X_, L_):
            h = jax.nn.relu(X_ @ p[0] + p[1])
            z = h @ p[2] + p[3]
            return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(z), L_[:, None], 1))

        fns["jax.jit"] = jax_sgd(jl, [jnp.asarray(a) for a in (W1, B1, W2, B2)], lr, X, L)
    if torch is not None:
        tp = [torch.tensor(a.copy(), requires_grad=True) for a in (W1, B1, W2, B2)]
        tX, tL = torch.from_numpy(X), torch.from_numpy(L)

        def tstep():
            z = torch.relu(tX @ tp[0] + tp[1]) @ tp[2] + tp[3]
            lo = torch.nn.functional.cross_entropy(z, tL)
            gs = torch.autograd.grad(lo, tp)
            with torch.no_grad():
                for a, g in zip(tp, gs):
                    a.sub_(lr * g)
            return lo
        fns["PyTorch"] = tstep
    table("MLP step, float32, batch 4096, 784-512-10 (loss, gradients, SGD update)",
          interleaved(fns, repeats, 1), note="goal: flowgrad ≤ 1.0× hand numpy; moonshot ≤ jax.jit")

    def peak(f):
        f()
        tracemalloc.start()
        tracemalloc.reset_peak()
        f()
        p = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return p
    ph, pf = peak(hand), peak(fns["flowgrad"])
    print(f"\nPeak memory of one step (tracemalloc, numpy allocations): hand numpy "
          f"{ph / 2**20:.1f} MiB, flowgrad {pf / 2**20:.1f} MiB — {pf / ph:.2f}× "
          f"(goal ≤ 1.2×)")


def _version(module):
    from importlib import metadata
    try:
        return metadata.version(module.__name__)
    except metadata.PackageNotFoundError:
        return getattr(module, "__version__", "?")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=31)
    ap.add_argument("--only", default="")
    ap.add_argument("--jax-chain", action="store_true")
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))
    r = args.repeats
    print(f"numpy {np.__version__}, Python {sys.version.split()[0]}, "
          + ", ".join(f"{m.__name__} {_version(m)}"
                      for m in (jax, pytensor, torch, autograd) if m is not None)
          + f"; {os.cpu_count()} CPUs")
    if not only or "seed" in only:
        seed_scalar(r)
    if not only or "tanh4" in only:
        tanh4(r)
    if not only or "linreg" in only:
        print("\n### Gradient descent on linear regression, d = 5, per iteration "
              "(loss, gradient, update)\n\ngoal: flowgrad ≤ PyTensor at every n\n")
        rows = {n: linreg(r, n) for n in (10, 100, 1000, 10_000)}
        peers = list(rows[10])
        print("| n | " + " | ".join(peers) + " | flowgrad ÷ PyTensor |")
        print("|" + "---|" * (len(peers) + 2))
        for n, t in rows.items():
            ratio = f"{t['flowgrad'] / t['PyTensor']:.2f}×" if "PyTensor" in t else "—"
            print(f"| {n} | " + " | ".join(fmt(t[p]) for p in peers) + f" | {ratio} |")
    if not only or "chain" in only:
        chain(max(5, r // 3), with_jax=args.jax_chain)
    if not only or "logistic" in only:
        batch_logistic(max(5, r // 2))
    if not only or "mlp" in only:
        mlp(max(5, r // 3))


if __name__ == "__main__":
    main()
