"""Jacobians, Hessians and per-example gradients by fg.vectorize (issue 21), in one process:

1. Jacobian of tanh(x)·sum(x) at n = 300 and 1000: fg.jacobian (vectorized, the default),
   the old loop over basis vectors (method="map") and hand-written numpy,
   diag((1 − tanh²x)·Σx) + tanh(x) 1ᵀ. Target: vectorized ≤ 10× numpy.
2. Per-example gradients of logistic regression, 10⁴ × 100:
   fg.vectorize(fg.grad(loss_i, w), {x_i: X, t_i: T}) against numpy's
   (σ(Xw) − t)[:, None] · X. Target: within 2× numpy.
3. Hessian of a logistic loss as in the lecture notes, f(w) = mean(softplus(Xw) − t·Xw) + μ/2‖w‖² at
   d = 200 (n = 2000 rows): fg.hessian (vectorized and map) against numpy's
   Xᵀ diag(σ(1 − σ)) X / n + μI, and ``jax.jacfwd(jax.grad(f))`` under ``jax.jit`` where
   jax is installed (float64, checked against numpy first).

    .venv/bin/python benchmarks/bench_jacobian.py [--repeats 15]

Times are medians of interleaved runs (every side sees the same machine state); each
flowgrad program is compiled once, outside the timing, and checked against numpy.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import flowgrad as fg
from bench_higher_order import interleaved   # medians of interleaved runs, warmed first


def sigmoid(z):
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0, e) / (1.0 + e)


def jacobian_tanh(n, repeats):
    xv = np.random.default_rng(0).standard_normal(n)
    with fg.Graph():
        x = fg.placeholder("x", shape=(n,))
        y = fg.tanh(x) * fg.sum(x)
        vec = fg.compile(fg.jacobian(y, x))
        loop = fg.compile(fg.jacobian(y, x, method="map"))

    def hand():
        t = np.tanh(xv)
        return np.diag((1 - t * t) * xv.sum()) + t[:, None]

    np.testing.assert_allclose(vec({x: xv}), hand(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(loop({x: xv}), hand(), rtol=1e-12, atol=1e-12)
    t_hand, t_vec, t_loop = interleaved(
        [hand, lambda: vec({x: xv}), lambda: loop({x: xv})], repeats)
    return {"numpy": t_hand, "vectorize": t_vec, "map": t_loop}


def per_example_logistic(n, d, repeats):
    rng = np.random.default_rng(1)
    Xv = rng.standard_normal((n, d))
    Tv = (rng.random(n) < 0.5).astype(float)
    wv = rng.standard_normal(d) / np.sqrt(d)
    with fg.Graph():
        xi = fg.placeholder("xi", shape=(d,))
        ti = fg.placeholder("ti", shape=())
        w = fg.variable(wv, name="w")
        loss_i = fg.bce_with_logits(fg.dot(xi, w), ti)
        X = fg.placeholder("X", shape=(None, d))
        T = fg.placeholder("T", shape=(None,))
        per = fg.compile(fg.vectorize(fg.grad(loss_i, w), {xi: X, ti: T}))

    def hand():
        return (sigmoid(Xv @ wv) - Tv)[:, None] * Xv

    feed = {X: Xv, T: Tv}
    np.testing.assert_allclose(per(feed), hand(), rtol=1e-12, atol=1e-12)
    t_hand, t_vec = interleaved([hand, lambda: per(feed)], repeats)
    return {"numpy": t_hand, "vectorize": t_vec}


def logistic_hessian(n, d, repeats, mu=0.1):
    rng = np.random.default_rng(2)
    Xv = rng.standard_normal((n, d)) / np.sqrt(d)
    Tv = (rng.random(n) < 0.5).astype(float)
    wv = rng.standard_normal(d)
    with fg.Graph():
        X = fg.constant(Xv, name="X")
        w = fg.placeholder("w", shape=(d,))
        z = X @ w
        f = fg.mean(fg.softplus(z) - Tv * z) + mu / 2 * fg.sum(w * w)
        vec = fg.compile(fg.hessian(f, w))
        loop = fg.compile(fg.hessian(f, w, method="map"))

    def hand():
        p = sigmoid(Xv @ wv)
        return (Xv.T * (p * (1 - p))) @ Xv / n + mu * np.eye(d)

    np.testing.assert_allclose(vec({w: wv}), hand(), rtol=1e-10, atol=1e-12)
    sides = {"numpy": hand, "vectorize": lambda: vec({w: wv}), "map": lambda: loop({w: wv})}
    jax_hessian = _jax_hessian(Xv, Tv, mu)
    if jax_hessian is not None:
        np.testing.assert_allclose(np.asarray(jax_hessian(wv)), hand(), rtol=1e-10, atol=1e-12)
        sides["jax.jacfwd(jax.grad)"] = lambda: jax_hessian(wv).block_until_ready()
    return dict(zip(sides, interleaved(list(sides.values()), repeats)))


def _jax_hessian(Xv, Tv, mu):
    """The same Hessian as jax.jit(jax.jacfwd(jax.grad(f))), or None without jax."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)
    X, T = jnp.asarray(Xv), jnp.asarray(Tv)

    def f(w):
        z = X @ w
        return jnp.mean(jax.nn.softplus(z) - T * z) + mu / 2 * jnp.sum(w * w)
    return jax.jit(jax.jacfwd(jax.grad(f)))


def report(title, times):
    base = times["numpy"]
    parts = [f"{k} {v * 1e3:.3f} ms ({v / base:.1f}x)" for k, v in times.items()]
    print(f"{title}: " + ", ".join(parts))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args()
    for n in (300, 1000):
        report(f"jacobian tanh(x)*sum(x), n={n}", jacobian_tanh(n, args.repeats))
    report("per-example logistic gradients 10^4 x 100",
           per_example_logistic(10_000, 100, args.repeats))
    report("hessian of the logistic loss, n=2000, d=200",
           logistic_hessian(2000, 200, max(3, args.repeats // 3)))
    if _jax_hessian(np.zeros((1, 1)), np.zeros(1), 0.0) is None:
        print("jax: not installed, jax.jacfwd(jax.grad) not measured")


if __name__ == "__main__":
    main()
