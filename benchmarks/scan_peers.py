"""The scan RNN of bench_scan.py in the peers: ``jax.lax.scan`` under ``jax.jit`` and
PyTensor's ``scan`` compiled by ``pytensor.function`` (its C linker where a compiler is
there). Each builder returns ``(fn(W, U, xs) -> (loss, dW, dU), seconds to build and
compile)`` or None when the peer is not installed; float64 throughout."""
from __future__ import annotations

import time


def jax_scan(T, H, D):
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)

    def loss(W, U, xs):
        def step(h, x):
            h = jnp.tanh(h @ W + x @ U)
            return h, jnp.sum(h * h)
        h0 = jnp.zeros((xs.shape[1], W.shape[0]))
        _, ys = jax.lax.scan(step, h0, xs)
        return jnp.sum(ys) / xs.shape[0]

    t0 = time.perf_counter()
    fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))

    def run(W, U, xs):
        value, (dW, dU) = fn(W, U, xs)
        return value.block_until_ready(), dW, dU
    return run, time.perf_counter() - t0


def pytensor_scan(T, H, D):
    try:
        import pytensor
        import pytensor.tensor as pt
    except ImportError:
        return None
    t0 = time.perf_counter()
    W, U, xs = pt.dmatrix("W"), pt.dmatrix("U"), pt.dtensor3("xs")
    h0 = pt.zeros((xs.shape[1], W.shape[0]))
    hs, _ = pytensor.scan(lambda x, h: pt.tanh(h @ W + x @ U), sequences=xs, outputs_info=h0)
    loss = pt.sum(hs ** 2) / xs.shape[0]
    fn = pytensor.function([W, U, xs], [loss, *pytensor.grad(loss, [W, U])])
    return fn, time.perf_counter() - t0
