"""ONNX importers for issue 22's vocabulary: Erf, Tan, Gelu, Clip, LeakyRelu, Elu, Floor,
ReduceProd, CumSum, Einsum, Pad, Split (registered into onnx_import_ops.IMPORTERS).

Each maps to the flowgrad op of the same meaning; an attribute value flowgrad does not
compute (CumSum's exclusive/reverse, a Pad mode other than "constant", Gelu's tanh form
before opset 20 …) is an ``OnnxImportError`` naming the node, never an approximation.
"""
from __future__ import annotations

import numpy as np

import flowgrad as fg

from .onnx_import import OnnxImportError
from .onnx_import_ops import IMPORTERS, axis_of, imports, reduction_importer


def refuse(ctx, what):
    """An OnnxImportError naming the node being imported."""
    return OnnxImportError(f"{ctx.where}: {what}")


def only_defaults(ctx, attrs, **allowed):
    """Refuse an attribute whose value is not the one flowgrad computes."""
    for name, want in allowed.items():
        if name in attrs and attrs[name] != want:
            value = attrs[name]
            value = value.decode() if isinstance(value, bytes) else value
            raise refuse(ctx, f"{name}={value!r} is not supported (only {want!r})")


def _operand(ctx, n, k, what, vector=True):
    """The constant value of optional input ``k`` of ``n`` (1-d unless ``vector`` is
    false), or None when omitted."""
    if len(n.input) <= k or not n.input[k]:
        return None
    return ctx.vector(n.input[k], what) if vector else np.asarray(ctx.value(n.input[k], what))


for _t, _f in {"Erf": fg.erf, "Tan": fg.tan}.items():
    IMPORTERS[_t] = (lambda f: lambda ctx, n, ins, attrs: f(ins[0]))(_f)
IMPORTERS["ReduceProd"] = reduction_importer(fg.prod)


@imports("Gelu")
def _gelu(ctx, n, ins, attrs):
    # an operator since opset 20; "tanh" is the tanh approximation, built from its formula
    if ctx.opset < 20:
        raise refuse(ctx, "Gelu is an ONNX operator from opset 20 on; this model imports "
                          f"opset {ctx.opset}")
    approx = attrs.get("approximate", b"none")
    approx = approx.decode() if isinstance(approx, bytes) else approx
    x = ins[0]
    if approx == "none":
        return fg.gelu(x)
    if approx == "tanh":
        inner = (x + 0.044715 * (x * x * x)) * float(np.sqrt(2.0 / np.pi))
        return 0.5 * x * (1.0 + fg.tanh(inner))
    raise refuse(ctx, f"approximate={approx!r} is not supported ('none' or 'tanh')")


@imports("Clip")
def _clip(ctx, n, ins, attrs):
    if ctx.opset < 11:     # bounds as attributes
        return fg.clip(ins[0], attrs.get("min"), attrs.get("max"))
    lo = ins[1] if len(ins) > 1 else None
    hi = ins[2] if len(ins) > 2 else None
    for bound in (lo, hi):        # a tensor bound would clip elementwise: not ONNX's Clip
        if bound is not None and bound.shape != ():
            raise refuse(ctx, f"its bounds must be 0-d tensors, not shape {bound.shape}")
    return fg.clip(ins[0], lo, hi)


@imports("LeakyRelu")
def _leaky_relu(ctx, n, ins, attrs):
    return fg.leaky_relu(ins[0], attrs.get("alpha", 0.01))


@imports("Elu")
def _elu(ctx, n, ins, attrs):
    return fg.elu(ins[0], attrs.get("alpha", 1.0))


@imports("Floor")
def _floor(ctx, n, ins, attrs):
    """⌊x⌋ from float arithmetic (flowgrad has no floor op): for |x| < 2^p (p the
    mantissa's bits), |x| + 2^p lies where floats are 1 apart, so adding and taking away
    2^p rounds |x| to an integer; with x's sign back, one less where that rounded up.
    Larger |x|, ±inf and NaN are their own floor, and so is ±0. Its derivative is 0
    (stop_gradient), as ONNX's."""
    x = ins[0]
    if x.dtype.kind != "f":
        return x
    one = lambda v: np.asarray(v, x.dtype)   # noqa: E731  (x's dtype: no promotion)
    two_p = one(2.0 ** np.finfo(x.dtype).nmant)
    r = (fg.minimum(fg.abs(x), two_p) + two_p) - two_p   # (clamped: no overflow)
    r = fg.where(x < one(0), -r, r)
    r = r - fg.where(r > x, one(1), one(0))
    magnitude = fg.where(fg.equal(x, one(0)), one(np.inf), fg.abs(x))
    return fg.stop_gradient(fg.where(magnitude >= two_p, x, r))


@imports("CumSum")
def _cumsum(ctx, n, ins, attrs):
    only_defaults(ctx, attrs, exclusive=0, reverse=0)
    axis = _operand(ctx, n, 1, "axis", vector=False)
    if axis is None or axis.size != 1:
        raise refuse(ctx, "its axis must be one constant integer")
    return fg.cumsum(ins[0], axis_of(ctx, axis.reshape(()), ins[0].ndim))


@imports("Einsum")
def _einsum(ctx, n, ins, attrs):
    spec = attrs["equation"]
    return fg.einsum(spec.decode() if isinstance(spec, bytes) else spec, *ins)


@imports("Pad")
def _pad(ctx, n, ins, attrs):
    mode = attrs.get("mode", b"constant")
    only_defaults(ctx, {"mode": mode.decode() if isinstance(mode, bytes) else mode}, mode="constant")
    x = ins[0]
    if ctx.opset < 11:     # pads and value as attributes
        pads, value, axes = np.asarray(attrs["pads"]), attrs.get("value", 0.0), None
    else:
        pads = _operand(ctx, n, 1, "pads")
        value = _pad_value(ctx, n, ins)
        axes = _operand(ctx, n, 3, "axes")
    axes = list(range(x.ndim)) if axes is None else [axis_of(ctx, a, x.ndim) for a in
                                                       axes.reshape(-1)]
    pads = [int(p) for p in np.asarray(pads).reshape(-1)]
    if len(pads) != 2 * len(axes):
        raise refuse(ctx, f"pads has {len(pads)} entries for {len(axes)} axes")
    if any(p < 0 for p in pads):
        raise refuse(ctx, "negative pads (cropping) are not supported")
    widths = [(0, 0)] * x.ndim
    for k, a in enumerate(axes):
        widths[a] = (pads[k], pads[k + len(axes)])
    if isinstance(value, fg.Node):
        # a value that is a weight (a float initializer): x padded with zeros plus value
        # times the padding's mask, so that the value gets its gradient
        mask = fg.pad(fg.zeros_like(x), tuple(widths), 1)
        return fg.pad(x, tuple(widths), 0) + mask * value
    return fg.pad(x, tuple(widths), value)


def _pad_value(ctx, n, ins):
    """Pad's constant value: a number when known at import time, else its (one-element)
    node, 0-d; 0 when omitted."""
    if len(n.input) <= 2 or not n.input[2]:
        return 0
    node = ins[2]
    if None in node.shape or int(np.prod(node.shape)) != 1:
        raise refuse(ctx, f"its constant value must hold one element, not shape "
                          f"{node.shape}")
    if n.input[2] in ctx.static:
        return np.asarray(ctx.static[n.input[2]]).reshape(-1)[0].item()
    return fg.reshape(node, ())


@imports("Split")
def _split(ctx, n, ins, attrs):
    x = ins[0]
    axis = axis_of(ctx, attrs.get("axis", 0), x.ndim)
    length = x.shape[axis]
    if length is None:
        raise refuse(ctx, "splits an axis whose length is known only at run time")
    sizes = _operand(ctx, n, 1, "split") if ctx.opset >= 13 else \
        (np.asarray(attrs["split"]) if "split" in attrs else None)
    outputs = len(n.output)
    if ctx.opset >= 18 and (sizes is None) == ("num_outputs" not in attrs):
        raise refuse(ctx, "from opset 18, Split takes either its split input or "
                          "num_outputs, not both and not neither")
    if sizes is None:   # equal parts; ONNX makes the last one smaller when they do not fit
        parts = attrs.get("num_outputs", outputs)
        step = -(-length // parts)
        sizes = [step] * (parts - 1) + [length - step * (parts - 1)]
    sizes = [int(s) for s in np.asarray(sizes).reshape(-1)]
    if len(sizes) != outputs or sum(sizes) != length or any(s < 0 for s in sizes):
        raise refuse(ctx, f"parts of lengths {sizes} do not split length {length} into "
                          f"{outputs} outputs")
    return list(fg.split(x, list(np.cumsum(sizes[:-1])), axis=axis))
