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

from .onnx_import import OnnxImportError
from .onnx_index import INT64_MAX, INT64_MIN

IMPORTERS: dict = {}


def imports(*op_types):
    def register(fn):
        for t in op_types:
            IMPORTERS[t] = fn
        return fn
    return register


def axis_of(ctx, axis, ndim, what="axis", extra=0):
    """``axis`` of an ``ndim``-d input, counted from 0: ONNX's range is [-r, r) (``extra``
    = 1 for Flatten's [-r, r]; a negative one counts from r); an axis outside it is an
    error naming the node (``%`` would wrap it to another axis, where onnxruntime refuses
    the model)."""
    axis = int(axis)
    if not -ndim <= axis < ndim + extra:
        raise OnnxImportError(f"{ctx.where}: {what} {axis} is out of range for a "
                              f"{ndim}-d input")
    return axis + ndim if axis < 0 else axis


def flag(ctx, attrs, name, default):
    """A 0-or-1 attribute (``keepdims``, ``transA`` …) as a bool. Any other value is an
    error naming the node: runtimes read it differently (onnxruntime's ReduceSum keeps
    dims only for exactly 1, where a truth test would for any nonzero)."""
    value = attrs.get(name, default)
    if type(value) is not int or value not in (0, 1):
        raise OnnxImportError(f"{ctx.where}: its attribute {name}={value!r} must be 0 or 1")
    return bool(value)


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
    shape = [int(s) for s in ctx.vector(n.input[0], "shape")]
    value = ctx.tensor(attrs["value"]) if "value" in attrs else np.zeros(1, np.float32)
    if value.shape != (1,):      # (ONNX's shape inference takes no other shape)
        raise ValueError(f"its value must be a 1-d tensor of one element, not shape "
                         f"{value.shape}")
    ctx.allocate(shape, value.dtype, "its output")      # before a byte of it is made
    return _static(ctx, n, np.broadcast_to(value.reshape(()), tuple(shape)))


@imports("Gemm")
def _gemm(ctx, n, ins, attrs):
    a, b = ins[0], ins[1]
    if flag(ctx, attrs, "transA", 0):
        a = fg.transpose(a)
    if flag(ctx, attrs, "transB", 0):
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
        axes = [int(a) for a in ctx.vector(n.input[1], "axes")]
    else:
        axes = attrs.get("axes")
    if not axes:
        return () if flag(ctx, attrs, "noop_with_empty_axes", 0) else None
    return tuple(axis_of(ctx, a, ndim, "reduction axis") for a in axes)


def reduction_importer(fn):
    def imp(ctx, n, ins, attrs):
        x = ins[0]
        axes = _axes(ctx, n, attrs, ins, x.ndim)
        keep = flag(ctx, attrs, "keepdims", 1)
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
        axis = axis_of(ctx, attrs.get("axis", -1 if ctx.opset >= 13 else 1), x.ndim)
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
    shape = [int(s) for s in ctx.vector(n.input[1], "shape")]
    if not flag(ctx, attrs, "allowzero", 0):   # ONNX: 0 copies the input's length there
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
    axis = axis_of(ctx, attrs.get("axis", 1), x.ndim, extra=1)
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
        return tuple(int(a) for a in ctx.vector(n.input[1], "axes"))
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
    target = tuple(int(s) for s in ctx.vector(n.input[1], "shape"))
    if None in x.shape:
        raise ValueError("Expand of an input with run-time lengths")
    return fg.broadcast_to(x, np.broadcast_shapes(x.shape, target))


@imports("Gather")
def _gather(ctx, n, ins, attrs):
    x = ins[0]
    if x.ndim == 0:
        raise ValueError("Gather needs an input of at least one dimension, not a 0-d one")
    axis = axis_of(ctx, attrs.get("axis", 0), x.ndim)
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
        operands = [ctx.vector(name, what) if name else None for name, what in
                    zip(list(n.input[1:]) + [""] * (5 - len(n.input)),
                        ("starts", "ends", "axes", "steps"))]
        starts, ends, axes, steps = operands
    else:                                   # opset < 10: attributes
        starts, ends = attrs["starts"], attrs["ends"]
        axes, steps = attrs.get("axes"), None
    axes = range(len(starts)) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise OnnxImportError(f"{ctx.where}: starts, ends, axes and steps have "
                              f"{len(starts)}, {len(ends)}, {len(axes)} and {len(steps)} "
                              "entries; they must have as many")
    index = [slice(None)] * x.ndim
    done = set()
    for s, e, a, st in zip(starts, ends, axes, steps):
        a = axis_of(ctx, a, x.ndim)
        if a in done:
            raise OnnxImportError(f"{ctx.where}: axis {a} is sliced twice")
        done.add(a)
        index[a] = _onnx_slice(ctx, int(s), int(e), int(st), x.shape[a])
    return fg.getitem(x, tuple(index))


def _onnx_slice(ctx, start, end, step, dim):
    """ONNX's slice of an axis of length ``dim`` as a Python slice of the same elements.
    ONNX clamps a start into [0, dim) for a negative step where Python's slicing gives
    nothing for a start below −dim (``x[-7::-1]`` of 5 elements: ONNX takes x[0], numpy
    none); both agree otherwise. Known lengths are clamped here; on a run-time length
    such a start (below −1 with a negative step) is refused, as is an end of INT_MAX
    with a negative step (onnxruntime's None, the standard's last element). Bounds
    beyond int64 are int64's (no length reaches them)."""
    if step == 0:
        raise OnnxImportError(f"{ctx.where}: a slice step of 0")
    if step < 0 and end in (2 ** 31 - 1, INT64_MAX):
        # onnxruntime reads an end of INT_MAX as numpy's None (to the first element, going
        # backwards); the standard clamps it to the last one (nothing): readers disagree
        raise OnnxImportError(f"{ctx.where}: an end of {end} with step {step}, which "
                              "onnxruntime and the ONNX standard read differently (write "
                              f"{INT64_MIN} to slice backwards to the first element)")
    start, end = (min(max(v, INT64_MIN), INT64_MAX) for v in (start, end))
    if dim is None:
        if step < 0 and start < -1:
            raise OnnxImportError(
                f"{ctx.where}: a start of {start} with step {step} on an axis whose length "
                "is known only at run time (ONNX clamps it to 0 where the length is shorter "
                "than -start, which flowgrad cannot tell when it builds the graph)")
        return slice(start, end, step)
    start, end = (v + dim if v < 0 else v for v in (start, end))
    if step > 0:
        return slice(min(max(start, 0), dim), min(max(end, 0), dim), step)
    end = min(max(end, -1), dim - 1)
    # (end −1: before element 0, which a Python slice says with None)
    return slice(min(max(start, 0), dim - 1), None if end < 0 else end, step)


# issue 22's vocabulary (elementwise, statistics, tensor ops) and conv/pool: their modules
from . import onnx_import_vocab, onnx_import_layers  # noqa: E402,F401
# issue 20: Scan, Loop and If as flowgrad loops (onnx_import_loops)
from . import onnx_import_loops  # noqa: E402,F401
