"""conv2d forward + gradient at a LeNet size (issue 22): flowgrad against PyTorch CPU and a
hand-written numpy im2col, in one process, interleaved rounds, medians.

    .venv/bin/python benchmarks/bench_conv.py [--repeats 15] [--dtype float32|float64]

Two workloads, batch 256 of 1×28×28 images:

* **conv**: Σ C ⊙ conv2d(x, W), W 6@5×5 (valid), and its gradient in W and x;
* **LeNet**: conv 6@5×5, ReLU, max-pool 2, conv 16@5×5, ReLU, max-pool 2, flatten (256),
  dense 10, softmax cross-entropy (mean); the loss and its gradient in all six parameters.

Each column computes the same numbers (checked before timing). Every library runs on
``BENCH_THREADS`` threads (default 1: on a shared machine, BLAS threads that spin while
another process holds the other core make multi-threaded timings erratic): the BLAS
behind numpy through OMP/OPENBLAS/MKL_NUM_THREADS, set before numpy is imported, and
PyTorch through ``torch.set_num_threads``.
"""
from __future__ import annotations

import argparse
import os

THREADS = os.environ.get("BENCH_THREADS", "1")
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, THREADS)

import numpy as np  # noqa: E402  (after the thread settings)

import flowgrad as fg  # noqa: E402

import bench_peers  # noqa: E402  # the shared timer (this folder is on sys.path when run as a script)


# -- hand-written numpy (im2col through as_strided, the fastest plain-numpy form) ------------

def _cols(x, kh, kw):
    """(N, C·kh·kw, OH·OW) windows of x, stride 1, no padding."""
    n, c, h, w = x.shape
    oh, ow = h - kh + 1, w - kw + 1
    s = x.strides
    v = np.lib.stride_tricks.as_strided(x, (n, c, kh, kw, oh, ow),
                                        (s[0], s[1], s[2], s[3], s[2], s[3]))
    return v.reshape(n, c * kh * kw, oh * ow), (oh, ow)


def _col2im(dcols, x_shape, kh, kw):
    n, c, h, w = x_shape
    oh, ow = h - kh + 1, w - kw + 1
    dcols = dcols.reshape(n, c, kh, kw, oh, ow)
    dx = np.zeros(x_shape, dcols.dtype)
    for i in range(kh):
        for j in range(kw):
            dx[:, :, i:i + oh, j:j + ow] += dcols[:, :, i, j]
    return dx


def conv_fwd(x, W):
    o, c, kh, kw = W.shape
    cols, (oh, ow) = _cols(x, kh, kw)
    return (W.reshape(o, -1) @ cols).reshape(x.shape[0], o, oh, ow), cols


def conv_bwd(g, x, W, cols, need_x=True):
    o, c, kh, kw = W.shape
    g3 = g.reshape(g.shape[0], o, -1)
    dW = np.tensordot(g3, cols, axes=([0, 2], [0, 2])).reshape(W.shape)
    dx = _col2im(W.reshape(o, -1).T @ g3, x.shape, kh, kw) if need_x else None
    return dx, dW


def pool_fwd(x):
    n, c, h, w = x.shape
    r = x.reshape(n, c, h // 2, 2, w // 2, 2)
    out = r.max(axis=(3, 5))
    return out, r == out[:, :, :, None, :, None]


def pool_bwd(g, mask):
    n, c, h2, _, w2, _ = mask.shape
    return (mask * g[:, :, :, None, :, None]).reshape(n, c, 2 * h2, 2 * w2)


def hand_conv(X, W, C):
    y, cols = conv_fwd(X, W)
    dx, dW = conv_bwd(C, X, W, cols)
    return (y * C).sum(), dW, dx


def hand_lenet(X, T, p):
    W1, b1, W2, b2, Wd, bd = p
    n = X.shape[0]
    z1, c1 = conv_fwd(X, W1)
    a1 = np.maximum(z1 + b1[:, None, None], 0)
    p1, m1 = pool_fwd(a1)
    z2, c2 = conv_fwd(p1, W2)
    a2 = np.maximum(z2 + b2[:, None, None], 0)
    p2, m2 = pool_fwd(a2)
    f = p2.reshape(n, -1)
    z = f @ Wd + bd
    zmax = z.max(1, keepdims=True)
    lse = np.log(np.exp(z - zmax).sum(1, keepdims=True)) + zmax
    loss = (lse[:, 0] - z[np.arange(n), T]).mean()
    dz = np.exp(z - lse)
    dz[np.arange(n), T] -= 1
    dz /= n
    dWd, dbd = f.T @ dz, dz.sum(0)
    da2 = pool_bwd((dz @ Wd.T).reshape(p2.shape), m2) * (a2 > 0)
    dp1, dW2 = conv_bwd(da2, p1, W2, c2)
    da1 = pool_bwd(dp1, m1) * (a1 > 0)
    _, dW1 = conv_bwd(da1, X, W1, c1, need_x=False)
    return loss, dW1, da1.sum((0, 2, 3)), dW2, da2.sum((0, 2, 3)), dWd, dbd


# -- flowgrad and PyTorch ---------------------------------------------------------------------------

def lenet_params(dtype, rng):
    shapes = [(6, 1, 5, 5), (6,), (16, 6, 5, 5), (16,), (256, 10), (10,)]
    return [(0.2 * rng.standard_normal(s)).astype(dtype) for s in shapes]


def fg_lenet(x, t, p):
    W1, b1, W2, b2, Wd, bd = p
    h = fg.max_pool2d(fg.relu(fg.conv2d(x, W1, b1)), 2)
    h = fg.max_pool2d(fg.relu(fg.conv2d(h, W2, b2)), 2)
    return fg.softmax_cross_entropy(fg.linear(fg.reshape(h, (-1, 256)), Wd, bd), t)


def torch_lenet(torch, x, t, p):
    F = torch.nn.functional
    W1, b1, W2, b2, Wd, bd = p
    h = F.max_pool2d(F.relu(F.conv2d(x, W1, b1)), 2)
    h = F.max_pool2d(F.relu(F.conv2d(h, W2, b2)), 2)
    return F.cross_entropy(h.reshape(-1, 256) @ Wd + bd, t)


def workloads(dtype, batch=256):
    import torch
    rng = np.random.default_rng(0)
    X = rng.standard_normal((batch, 1, 28, 28)).astype(dtype)
    T = rng.integers(0, 10, batch)
    W = (0.2 * rng.standard_normal((6, 1, 5, 5))).astype(dtype)
    C = rng.standard_normal((batch, 6, 24, 24)).astype(dtype)
    P = lenet_params(dtype, rng)

    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 1, 28, 28), dtype=dtype)
        w = fg.variable(W, name="W")
        s = fg.sum(fg.conv2d(x, w) * C)
        conv_prog = fg.compile([s, *fg.grad(s, [w, x])])
    with fg.Graph():
        x2 = fg.placeholder("x", shape=(None, 1, 28, 28), dtype=dtype)
        t2 = fg.placeholder("t", shape=(None,), dtype="int64")
        pv = [fg.variable(a, name=f"p{k}") for k, a in enumerate(P)]
        loss = fg_lenet(x2, t2, pv)
        lenet_prog = fg.compile([loss, *fg.grad(loss, pv)])

    tX, tT, tC = torch.tensor(X), torch.tensor(T), torch.tensor(C)
    tW = torch.tensor(W, requires_grad=True)
    tP = [torch.tensor(a, requires_grad=True) for a in P]

    def torch_conv():
        tx = tX.detach().requires_grad_(True)
        s_ = (torch.nn.functional.conv2d(tx, tW) * tC).sum()
        gw, gx = torch.autograd.grad(s_, [tW, tx])
        return s_.detach(), gw, gx

    def torch_lenet_grad():
        loss_ = torch_lenet(torch, tX, tT, tP)
        return (loss_.detach(), *torch.autograd.grad(loss_, tP))

    conv = {"flowgrad": lambda: conv_prog(x=X), "PyTorch CPU": torch_conv,
            "hand numpy im2col": lambda: hand_conv(X, W, C)}
    lenet = {"flowgrad": lambda: lenet_prog(x=X, t=T), "PyTorch CPU": torch_lenet_grad,
             "hand numpy im2col": lambda: hand_lenet(X, T, P)}
    return conv, lenet


def _same(fns, rtol):
    """Every column's numbers agree with flowgrad's."""
    ref = [np.asarray(fg.to_numpy(a), np.float64) for a in fns["flowgrad"]()]
    for name, f in fns.items():
        for a, b in zip(f(), ref):
            a = a.detach().numpy() if hasattr(a, "detach") else np.asarray(a)
            np.testing.assert_allclose(np.asarray(a, np.float64), b, rtol=rtol,
                                       atol=rtol * max(1.0, np.abs(b).max()), err_msg=name)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(int(THREADS))
    conv, lenet = workloads(args.dtype)
    rtol = 1e-4 if args.dtype == "float32" else 1e-10
    print(f"{args.dtype}, batch 256 of 1×28×28; PyTorch {torch.__version__} with "
          f"{torch.get_num_threads()} threads; medians of {args.repeats} interleaved rounds")
    cols = ["flowgrad", "PyTorch CPU", "hand numpy im2col"]
    print("| workload | " + " | ".join(cols) + " | flowgrad / PyTorch |")
    print("|" + "---|" * (len(cols) + 2))
    for name, fns in (("conv 6@5×5: value + ∂/∂W, ∂/∂x", conv),
                      ("LeNet: loss + gradient in 6 parameters", lenet)):
        _same(fns, rtol)
        t = bench_peers.interleaved(fns, args.repeats, 1)
        ms = {k: v * 1e3 for k, v in t.items()}
        print(f"| {name} | " + " | ".join(f"{ms[c]:.1f} ms" for c in cols)
              + f" | {ms['flowgrad'] / ms['PyTorch CPU']:.2f}× |")


if __name__ == "__main__":
    main()
