"""Batching rules of 2-d convolution and pooling (ops/conv.py, ops/pooling.py).

A per-example image batch x is (N, C, H, W), so a batch of examples is (B, N, C, H, W).
The ops already run over N independently, so the usual answer merges B into N
(a reshape to (B·N, C, H, W)), runs the op once and splits the result back. Where the
examples must not mix, the batch goes elsewhere:

* a batched kernel w (B, O, C, kh, kw) with an unbatched x: B merged into the output
  channels, (B·O, C, kh, kw), one convolution, the channels split back;
* ``conv2d_grad_w`` (the kernel's gradient, a sum over N): with only x batched, B goes
  into x's channels ((N, B·C, H, W): each output channel pair (o, b·c) reads example b
  only); with only the cotangent batched, into its channels (B·O);
* ``conv2d_grad_x`` with a batched kernel: B into the input channels (O, B·C, kh, kw);
* both operands batched (a per-example kernel gradient, a Hessian): the op is written
  out per window offset — the kh·kw strided slices of the padded input stacked (the
  im2col columns, here with the batch kept apart) and one einsum over the letters of
  one example, so no product crosses examples. The transposed convolution adds each
  offset's columns back with a ``scatter_add`` of a strided slice.
"""
from __future__ import annotations

from flowgrad.ops import REGISTRY, apply, einsum, pad, reshape, stack, transpose

_FULL = ("s", None, None, None)


def _refuse(node, why):
    from flowgrad.batching import refuse
    return refuse(node, why)


def _reshaped(node, x, dims):
    """x reshaped to ``dims`` (ints or None); one None at most (it becomes -1)."""
    if sum(d is None for d in dims) > 1:
        raise _refuse(node, f"reshaping {x.name!r} to {tuple(dims)} needs all but one "
                            f"length at build time")
    return reshape(x, tuple(-1 if d is None else d for d in dims))


def _merge(b, node, x):
    """Batched (B, N, …) → (B·N, …)."""
    n = x.shape[1]
    lead = None if b.length is None or n is None else b.length * n
    return _reshaped(node, x, (lead,) + tuple(x.shape[2:]))


def _split(b, node, y):
    """(B·N, …) → (B,) + node.shape."""
    return _reshaped(node, y, (b.length,) + tuple(node.shape))


def _full(b, ins, bat):
    return [x if f else b.materialize(x) for x, f in zip(ins, bat)]


def _into_channels(b, node, x):
    """Batched (B, N, C, …) → (N, B·C, …): the batch joins the channel axis."""
    n, c = x.shape[1], x.shape[2]
    x = transpose(x, (1, 0) + tuple(range(2, len(x.shape))))
    bc = None if b.length is None or c is None else b.length * c
    return _reshaped(node, x, (n, bc) + tuple(x.shape[3:]))


def _out_of_channels(b, node, y, axis):
    """y with B·K on ``axis`` (0 or 1) → (B,) + node.shape."""
    k = node.shape[axis]
    dims = list(y.shape)
    dims[axis:axis + 1] = [b.length, k]
    y = _reshaped(node, y, dims)
    return y if axis == 0 else transpose(y, (1, 0) + tuple(range(2, len(dims))))


#: the attributes these rules know; a convolution op with another (a dilation, groups)
#: is refused rather than batched by rules that would ignore it
_KNOWN = frozenset({"stride", "pads", "kernel"})


def _known(node):
    extra = sorted(set(node.attrs) - _KNOWN)
    if extra:
        raise _refuse(node, f"its attributes {extra} are not known to the batching rules "
                            f"in flowgrad/batching_conv.py")


def merged(b, node, ins, bat):
    """Every input an image batch: B merged into N, one op, split back (pooling)."""
    args = [_merge(b, node, x) for x in _full(b, ins, bat)]
    return _split(b, node, apply(node.op, *args, **node.attrs))


def conv2d(b, node, ins, bat):
    _known(node)
    (x, w), (fx, fw) = ins, bat
    if fx and fw:
        return _conv_both(b, node, x, w)
    if fx:
        return _split(b, node, apply(node.op, _merge(b, node, x), w, **node.attrs))
    # only w: (B·O, C, kh, kw); the result's channels (N, B·O, …) split back
    out = apply(node.op, x, _merge(b, node, w), **node.attrs)
    return _out_of_channels(b, node, out, 1)


def conv2d_grad_w(b, node, ins, bat):
    _known(node)
    (x, g), (fx, fg_) = ins, bat
    if fx and fg_:
        return _grad_w_both(b, node, x, g)
    if fx:                                    # (O, B·C, kh, kw)
        out = apply(node.op, _into_channels(b, node, x), g, **node.attrs)
        return _out_of_channels(b, node, out, 1)
    out = apply(node.op, x, _into_channels(b, node, g), **node.attrs)   # (B·O, C, …)
    return _out_of_channels(b, node, out, 0)


def conv2d_grad_x(b, node, ins, bat):
    _known(node)
    (g, w, x), (fg_, fw, _) = ins, bat
    if fg_ and fw:
        return _grad_x_both(b, node, *_full(b, ins, bat))
    x = x if bat[2] else b.materialize(x)     # x only gives the shape
    if fg_:
        out = apply(node.op, _merge(b, node, g), w, _merge(b, node, x), **node.attrs)
        return _split(b, node, out)
    wc = _into_channels(b, node, w)           # (O, B·C, kh, kw)
    out = apply(node.op, g, wc, _into_channels(b, node, x), **node.attrs)
    return _out_of_channels(b, node, out, 1)


# -- both operands batched: per window offset, the batch kept apart ------------------------

def _offsets(node):
    kernel = node.attrs.get("kernel") or tuple(node.inputs[1].shape[2:])
    return [(i, j) for i in range(kernel[0]) for j in range(kernel[1])], kernel


def _window_items(node, i, j, out_hw):
    (sh, sw), (oh, ow) = node.attrs["stride"], out_hw
    return (_FULL, _FULL, _FULL, ("s", i, i + sh * (oh - 1) + 1, sh),
            ("s", j, j + sw * (ow - 1) + 1, sw))


def _columns(b, node, x, out_hw):
    """(B, N, C, kh·kw, OH, OW): each offset's strided slice of the padded x."""
    if None in out_hw:
        raise _refuse(node, "both operands carry the batch and the output's height or "
                            "width is known only at run time")
    t, bo, lf, r = node.attrs["pads"]
    xp = pad(x, ((0, 0), (0, 0), (0, 0), (t, bo), (lf, r)))
    getitem = REGISTRY["getitem"]
    offsets, _ = _offsets(node)
    return stack([apply(getitem, xp, index=_window_items(node, i, j, out_hw))
                  for i, j in offsets], axis=3)


def _kernel_flat(b, node, w):
    """(B, O, C, kh, kw) → (B, O, C, kh·kw)."""
    o, c, kh, kw = w.shape[1:]
    return _reshaped(node, w, (b.length, o, c, kh * kw))


def _conv_both(b, node, x, w):
    cols = _columns(b, node, x, node.shape[2:])
    return einsum("bnckpq,bock->bnopq", cols, _kernel_flat(b, node, w))


def _grad_w_both(b, node, x, g):
    cols = _columns(b, node, x, g.shape[3:])
    dw = einsum("bnopq,bnckpq->bock", g, cols)
    return _reshaped(node, dw, (b.length,) + tuple(node.shape))


def _grad_x_both(b, node, g, w, x):
    """The transposed convolution: each offset's columns added back into a padded
    image (a scatter_add of a strided slice), then cropped to x."""
    out_hw = g.shape[3:]
    if None in out_hw or None in x.shape[3:]:
        raise _refuse(node, "both operands carry the batch and a height or width is "
                            "known only at run time")
    cols = einsum("bnopq,bock->bnckpq", g, _kernel_flat(b, node, w))
    t, bo, lf, r = node.attrs["pads"]
    ref = pad(x, ((0, 0), (0, 0), (0, 0), (t, bo), (lf, r)))
    scatter, getitem = REGISTRY["scatter_add"], REGISTRY["getitem"]
    offsets, _ = _offsets(node)
    total = None
    for k, (i, j) in enumerate(offsets):
        part = apply(getitem, cols, index=(_FULL, _FULL, _FULL, ("i", k)))
        add = apply(scatter, part, ref, index=_window_items(node, i, j, out_hw))
        total = add if total is None else total + add
    h, wd = x.shape[3:]
    return apply(getitem, total, index=(_FULL, _FULL, _FULL, ("s", t, t + h, None),
                                        ("s", lf, lf + wd, None)))


CONV_RULES = {
    "conv2d": conv2d,
    "conv2d_grad_w": conv2d_grad_w,
    "conv2d_grad_x": conv2d_grad_x,
    **{name: merged for name in ("max_pool2d", "max_pool2d_gather", "max_pool2d_scatter",
                                 "avg_pool2d", "avg_pool2d_grad")},
}
