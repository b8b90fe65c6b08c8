"""The table from ONNX op types to flowgrad ops, used by onnx_import.

Each importer ``fn(ctx, node, ins, attrs)`` gets the NodeProto, its inputs as
flowgrad nodes (None for an omitted optional input) and its attributes as Python
values, and returns the output node (or a list, one per ONNX output). Shape and
axes operands must be constants (``ctx.value``), as flowgrad fixes them at build time.
"""
from __future__ import annotations

import numpy as np

import flowgrad as fg
from flowgrad.leaves import constant

IMPORTERS: dict = {}


def imports(*op_types):
    def register(fn):
        for t in op_types:
            IMPORTERS[t] = fn
        return fn
    return register


def _fold(fn):
    """A variadic ONNX op (Sum, Max, Min) as a left fold of a binary flowgrad op."""
    def imp(ctx, n, ins, attrs):
        out = ins[0]
        for x in ins[1:]:
            out = fn(out, x)
        return out
    return imp


for _t, _f in {"Add": fg.add, "Sub": fg.sub, "Mul": fg.mul, "Div": fg.div, "Pow": fg.pow,
               "Greater": fg.greater, "GreaterOrEqual": fg.greater_equal, "Less": fg.less,
               "LessOrEqual": fg.less_equal, "Equal": fg.equal, "MatMul": fg.matmul}.items():
    IMPORTERS[_t] = (lambda f: lambda ctx, n, ins, attrs: f(ins[0], ins[1]))(_f)
for _t, _f in {"Sum": fg.add, "Max": fg.maximum, "Min": fg.minimum}.items():
    IMPORTERS[_t] = _fold(_f)
for _t, _f in {"Neg": fg.neg, "Exp": fg.exp, "Log": fg.log, "Sqrt": fg.sqrt, "Abs": fg.abs,
               "Tanh": fg.tanh, "Sin": fg.sin, "Cos": fg.cos, "Sign": fg.sign,
               "Relu": fg.relu, "Sigmoid": fg.sigmoid, "Softplus": fg.softplus,
               "Det": fg.det}.items():
    IMPORTERS[_t] = (lambda f: lambda ctx, n, ins, attrs: f(ins[0]))(_f)


@imports("Identity", "Dropout")
def _identity(ctx, n, ins, attrs):
    # Dropout at inference is the identity; its optional mask output is not supported
    if n.op_type == "Dropout" and len([o for o in n.output if o]) > 1:
        raise ValueError("Dropout's mask output is not supported")
    return ins[0]


@imports("Not")
def _not(ctx, n, ins, attrs):
    return fg.equal(ins[0], False)


@imports("IsNaN")
def _isnan(ctx, n, ins, attrs):
    # x ≠ x exactly where x is NaN (max_pool2d's export writes IsNaN for its NaN windows)
    return fg.not_equal(ins[0], ins[0])


@imports("Where")
def _where(ctx, n, ins, attrs):
    return fg.where(*ins)


@imports("Constant")
def _constant(ctx, n, ins, attrs):
    if "value" in attrs:
        arr = ctx.tensor(attrs["value"])
    else:
        key, = attrs
        arr = np.asarray(attrs[key], dtype={"value_float": np.float32, "value_floats": np.float32,
                                            "value_int": np.int64,
                                            "value_ints": np.int64}.get(key))
        ctx.allocate(list(arr.shape), arr.dtype, "its value")
    return _static(ctx, n, arr)


def _static(ctx, n, value, dtype=None):
    """A constant node of ``value`` (copied once, by constant()), known at import time."""
    node = constant(value, dtype=dtype)
    ctx.static[n.output[0]] = node.value
    return node


@imports("ConstantOfShape")
def _constant_of_shape(ctx, n, ins, attrs):
    shape = [int(s) for s in np.asarray(ctx.value(n.input[0], "shape")).reshape(-1)]
    value = ctx.tensor(attrs["value"]) if "value" in attrs else np.zeros(1, np.float32)
    if value.size != 1:
        raise ValueError(f"its value must hold one element, not {value.size}")
    ctx.allocate(shape, value.dtype, "its output")      # before a byte of it is made
    return _static(ctx, n, np.broadcast_to(value.reshape(()), tuple(shape)))


@imports("Gemm")
def _gemm(ctx, n, ins, attrs):
    a, b = ins[0], ins[1]
    if attrs.get("transA", 0):
        a = fg.transpose(a)
    if attrs.get("transB", 0):
        b = fg.transpose(b)
    out = fg.matmul(a, b)
    alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
    if alpha != 1.0:
        out = out * alpha
    if len(ins) > 2 and ins[2] is not None:
        out = out + (ins[2] if beta == 1.0 else ins[2] * beta)
    return out


@imports("Cast")
def _cast(ctx, n, ins, attrs):
    x = ins[0]
    to = ctx.dtype(attrs["to"])
    if x.dtype == to:
        return x
    if n.input[0] in ctx.static:
        value = ctx.static[n.input[0]]
        ctx.allocate(list(value.shape), to, "its cast value")
        return _static(ctx, n, value, dtype=to)
    if to.kind == "f" and x.dtype.kind == "b":
        return fg.where(x, np.ones((), to), np.zeros((), to))
    # numpy's astype (an exact widening, a rounding narrowing, floats to integers toward
    # 0); its adjoint is converted back to x's dtype, as a flowgrad export's was
    return fg.astype(x, to)


# -- reductions ------------------------------------------------------------------------------

def _axes(ctx, n, attrs, ins, ndim):
    """The reduction axes: an input (opset ≥ 13/18) or an attribute; None for all."""
    if len(n.input) > 1 and n.input[1]:
        axes = [int(a) for a in np.asarray(ctx.value(n.input[1], "axes")).reshape(-1)]
    else:
        axes = attrs.get("axes")
    if not axes:
        return () if attrs.get("noop_with_empty_axes", 0) else None
    return tuple(int(a) % max(ndim, 1) for a in axes)


def reduction_importer(fn):
    def imp(ctx, n, ins, attrs):
        x = ins[0]
        axes = _axes(ctx, n, attrs, ins, x.ndim)
        keep = bool(attrs.get("keepdims", 1))
        if axes == ():
            return x
        return fn(x, axes, keep)
    return imp


IMPORTERS.update({
    "ReduceSum": reduction_importer(fg.sum), "ReduceMean": reduction_importer(fg.mean),
    "ReduceMax": reduction_importer(fg.max), "ReduceMin": reduction_importer(fg.min),
    "ReduceLogSumExp": reduction_importer(fg.logsumexp),
    "ReduceSumSquare": reduction_importer(lambda x, a, k: fg.sum(x * x, a, k)),
    "ReduceL2": reduction_importer(lambda x, a, k: fg.norm(x, axis=a, keepdims=k)
                           if a is not None and len(a) <= 1 else fg.sqrt(fg.sum(x * x, a, k))),
})


def _softmax_like(fn):
    def imp(ctx, n, ins, attrs):
        x = ins[0]
        axis = attrs.get("axis", -1 if ctx.opset >= 13 else 1) % max(x.ndim, 1)
        if ctx.opset < 13 and axis != x.ndim - 1:
            raise ValueError(f"{n.op_type} before opset 13 flattens the axes from {axis} on; "
                             "only the last axis is supported")
        return fn(x, axis)
    return imp


IMPORTERS["Softmax"] = _softmax_like(fg.softmax)
IMPORTERS["LogSoftmax"] = _softmax_like(fg.log_softmax)


# -- shapes ------------------------------------------------------------------------------------

@imports("Reshape")
def _reshape(ctx, n, ins, attrs):
    x = ins[0]
    shape = [int(s) for s in ctx.value(n.input[1], "shape")]
    if not attrs.get("allowzero", 0):      # ONNX: 0 copies the input's length there
        shape = _copied_lengths(x, shape)
    return fg.reshape(x, tuple(shape))


def _copied_lengths(x, shape):
    """Reshape's target with each 0 replaced by the input's length there. One length
    known only at run time becomes -1; beside a -1 (``[0, -1]``, a flatten that keeps
    the batch), the -1 is first worked out from the other lengths, the copied run-time
    one counting on both sides (the same length, so it cancels)."""
    if len(shape) > len(x.shape) and 0 in shape[len(x.shape):]:
        raise ValueError(f"a 0 in shape {shape} past the input's {len(x.shape)} axes")
    copied = [i for i, s in enumerate(shape) if s == 0 and x.shape[i] is None]
    shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    if not copied:
        return shape
    if len(copied) > 1:
        raise ValueError("Reshape copies more than one run-time length (0)")
    i = copied[0]
    if -1 in shape:
        rest = [d for k, d in enumerate(x.shape) if k != i]
        known = [d for k, d in enumerate(shape) if k != i and d != -1]
        if None in rest or None in known or np.prod(known, dtype=np.int64) == 0:
            raise ValueError("Reshape copies a run-time length (0) beside a -1 whose "
                             "length it cannot work out")
        total, part = int(np.prod(rest, dtype=np.int64)), int(np.prod(known, dtype=np.int64))
        if total % part:
            raise ValueError(f"cannot reshape {x.shape} to {shape}")
        shape[shape.index(-1)] = total // part
    shape[i] = -1
    return shape


@imports("Flatten")
def _flatten(ctx, n, ins, attrs):
    x = ins[0]
    axis = attrs.get("axis", 1) % (x.ndim + 1) if x.ndim else 0
    head, tail = x.shape[:axis], x.shape[axis:]
    first = -1 if None in head else int(np.prod(head))
    second = -1 if None in tail else int(np.prod(tail))
    if first == -1 and second == -1:
        raise ValueError("Flatten of run-time lengths on both sides")
    return fg.reshape(x, (first, second))


@imports("Transpose")
def _transpose(ctx, n, ins, attrs):
    perm = attrs.get("perm")
    return fg.transpose(ins[0], None if perm is None else tuple(perm))


def _axes_operand(ctx, n, attrs):
    if len(n.input) > 1 and n.input[1]:
        return tuple(int(a) for a in np.asarray(ctx.value(n.input[1], "axes")).reshape(-1))
    axes = attrs.get("axes")
    return None if axes is None else tuple(axes)


@imports("Unsqueeze")
def _unsqueeze(ctx, n, ins, attrs):
    return fg.expand_dims(ins[0], _axes_operand(ctx, n, attrs))


@imports("Squeeze")
def _squeeze(ctx, n, ins, attrs):
    return fg.squeeze(ins[0], _axes_operand(ctx, n, attrs))


@imports("Concat")
def _concat(ctx, n, ins, attrs):
    return fg.concatenate([x for x in ins if x is not None], axis=attrs["axis"])


@imports("Expand")
def _expand(ctx, n, ins, attrs):
    x = ins[0]
    target = tuple(int(s) for s in ctx.value(n.input[1], "shape"))
    if None in x.shape:
        raise ValueError("Expand of an input with run-time lengths")
    return fg.broadcast_to(x, np.broadcast_shapes(x.shape, target))


@imports("Gather")
def _gather(ctx, n, ins, attrs):
    x = ins[0]
    if x.ndim == 0:
        raise ValueError("Gather needs an input of at least one dimension, not a 0-d one")
    axis = attrs.get("axis", 0) % x.ndim
    if n.input[1] in ctx.static:
        idx = ctx.value(n.input[1])
        idx = int(idx) if idx.ndim == 0 else idx
    else:
        idx = ins[1]
    return fg.getitem(x, (slice(None),) * axis + (idx,))


@imports("Slice")
def _slice(ctx, n, ins, attrs):
    x = ins[0]
    if len(n.input) > 1:
        operands = [np.asarray(ctx.value(name, "slice bound")).reshape(-1) if name else None
                    for name in list(n.input[1:]) + [""] * (5 - len(n.input))]
        starts, ends, axes, steps = operands
    else:                                   # opset < 10: attributes
        starts, ends = attrs["starts"], attrs["ends"]
        axes, steps = attrs.get("axes"), None
    axes = range(len(starts)) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    index = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        index[int(a) % x.ndim] = slice(_bound(s), _bound(e), int(st))
    return fg.getitem(x, tuple(index))


def _bound(v):
    """ONNX's "to the end" sentinels (±2⁶³ and beyond) as None."""
    v = int(v)
    return None if abs(v) >= 2 ** 62 else v


# issue 22's vocabulary (elementwise, statistics, tensor ops) and conv/pool: their modules
from . import onnx_import_vocab, onnx_import_layers  # noqa: E402,F401
# issue 20: Scan, Loop and If as flowgrad loops (onnx_import_loops)
from . import onnx_import_loops  # noqa: E402,F401
