"""ONNX importers for the operators flowgrad's own exports write around shapes: Range,
EyeLike, GatherND, and ConstantOfShape and Expand of a run-time shape (registered into
onnx_import_ops.IMPORTERS).

A ``Shape`` of an input with run-time lengths is a node, not a constant; so that what
is made *of* it (a ConstantOfShape of it, a Range up to one of its lengths) can be
rebuilt, the importer remembers which lengths such a vector holds (``shape_dims``: for each
entry a known int or an (input, axis) pair), through the Gather, Concat and Squeeze an
exporter picks lengths with. A tensor of those lengths is then built from the input
itself, so its run-time length becomes a flowgrad run-time length. Any other
non-constant shape or bound is refused, naming the node. A Range or EyeLike of
constant operands is made at import time and charged to the budget first.
"""
from __future__ import annotations

import math

import numpy as np

import flowgrad as fg
from flowgrad.leaves import constant

from .onnx_import_ops import IMPORTERS, imports
from .onnx_import_vocab import refuse


def _dims(ctx) -> dict:
    """The import's ``Context.shape_dims``: id(node) -> (node, entries, is_scalar), the
    lengths each run-time shape vector holds (the node is kept, so its id stays its own)."""
    return ctx.shape_dims


def _remember(ctx, node, entries, scalar=False):
    _dims(ctx)[id(node)] = (node, entries, scalar)
    return node


def tracked(ctx, n, k, ins):
    """The entries of input ``k`` when it is a shape vector: its constant value, or the
    lengths remembered for it; None otherwise."""
    if n.input[k] in ctx.static:
        value = np.asarray(ctx.static[n.input[k]])
        if value.dtype.kind in "iu" and value.ndim <= 1:
            return [int(v) for v in value.reshape(-1)], value.ndim == 0
        return None
    found = _dims(ctx).get(id(ins[k]))
    return None if found is None or found[0] is not ins[k] else (found[1], found[2])


def _wrap(op_type, after):
    before = IMPORTERS[op_type]

    def imp(ctx, n, ins, attrs):
        out = before(ctx, n, ins, attrs)
        if not isinstance(out, list) and n.output[0] not in ctx.static:
            after(ctx, n, ins, attrs, out)
        return out
    IMPORTERS[op_type] = imp


def _after_shape(ctx, n, ins, attrs, out):
    x = ins[0]
    axes = range(x.ndim)[slice(attrs.get("start", 0), attrs.get("end", x.ndim))]
    _remember(ctx, out, [x.shape[a] if x.shape[a] is not None else (x, a) for a in axes])


def _after_gather(ctx, n, ins, attrs, out):
    found = tracked(ctx, n, 0, ins)
    if found is None or found[1] or n.input[1] not in ctx.static:
        return
    idx = np.asarray(ctx.static[n.input[1]])
    entries = found[0]
    if idx.ndim > 1 or not all(-len(entries) <= int(i) < len(entries) for i in idx.reshape(-1)):
        return
    _remember(ctx, out, [entries[int(i)] for i in idx.reshape(-1)], idx.ndim == 0)


def _after_concat(ctx, n, ins, attrs, out):
    entries = []
    for k in range(len(n.input)):
        found = tracked(ctx, n, k, ins) if n.input[k] else None
        if found is None or found[1]:
            return
        entries += found[0]
    _remember(ctx, out, entries)


def _after_squeeze(ctx, n, ins, attrs, out):
    found = tracked(ctx, n, 0, ins)
    if found is not None and not found[1] and len(found[0]) == 1 and out.ndim == 0:
        _remember(ctx, out, found[0], True)


_wrap("Shape", _after_shape)
_wrap("Gather", _after_gather)
_wrap("Concat", _after_concat)
_wrap("Squeeze", _after_squeeze)


def _along(x, axis, rank, at):
    """int64 zeros of shape (1, …, x.shape[axis], …, 1) (rank ``rank``, the length at
    ``at``), made from x so that its run-time length is x's: x's other axes summed away
    (a sum over a length-0 axis is still one zero)."""
    z = fg.astype(fg.zeros_like(x), "int64")
    others = tuple(a for a in range(x.ndim) if a != axis)
    if others:
        z = fg.sum(z, axis=others, keepdims=True)
    return fg.reshape(z, (1,) * at + (-1,) + (1,) * (rank - at - 1))


def filled(ctx, entries, value):
    """A tensor of the lengths ``entries`` (ints or (input, axis)), every entry
    ``value`` (a 0-d array, whose dtype it has). Its known lengths are the file's choice:
    the int64 constant of them made here is charged to the budget first."""
    if any(isinstance(d, int) and d < 0 for d in entries):
        shown = [d if isinstance(d, int) else None for d in entries]
        raise refuse(ctx, f"its shape {shown} has a negative length (None: run-time)")
    rank = len(entries)
    known = [1 if isinstance(d, tuple) else d for d in entries]
    ctx.allocate(known, np.int64, "its output's known lengths")
    acc = constant(np.zeros(known, np.int64))
    for at, d in enumerate(entries):
        if isinstance(d, tuple):
            acc = acc + _along(d[0], d[1], rank, at)
    return fg.where(fg.equal(acc, np.int64(0)), value, value)


_CONSTANT_OF_SHAPE = IMPORTERS["ConstantOfShape"]     # (of a constant shape)


@imports("ConstantOfShape")
def _constant_of_shape(ctx, n, ins, attrs):
    if n.input[0] in ctx.static:
        return _CONSTANT_OF_SHAPE(ctx, n, ins, attrs)
    value = ctx.tensor(attrs["value"]) if "value" in attrs else np.zeros(1, np.float32)
    if value.shape != (1,):      # (ONNX's shape inference takes no other shape)
        raise ValueError(f"its value must be a 1-d tensor of one element, not shape "
                         f"{value.shape}")
    found = tracked(ctx, n, 0, ins)
    if found is None or found[1]:
        raise refuse(ctx, f"its shape {n.input[0]!r} is neither a constant nor lengths of "
                          "a tensor (a Shape, or Gather/Concat of Shapes)")
    return filled(ctx, found[0], value.reshape(()))


def _after_size(ctx, n, ins, attrs, out):
    _remember(ctx, out, [(ins[0], None)], True)


def _after_reduce_prod(ctx, n, ins, attrs, out):
    # the product of a whole run-time Shape: its input's element count
    found = tracked(ctx, n, 0, ins)
    if found is None or found[1] or len(n.input) > 1 or "axes" in attrs:
        return
    entries = found[0]
    sources = {id(d[0]) for d in entries if isinstance(d, tuple)}
    if len(sources) != 1 or any(isinstance(d, int) for d in entries):
        return
    x = next(d[0] for d in entries if isinstance(d, tuple))
    if [d[1] for d in entries] == list(range(x.ndim)):
        _remember(ctx, out, [(x, None)], out.ndim == 0)


_wrap("Size", _after_size)
_wrap("ReduceProd", _after_reduce_prod)


def _ramp(x, axis, dtype):
    """0, 1, …, n−1 in ``dtype``, n being x's length along ``axis`` (its element count
    for None), known only when the graph runs: a running sum of ones (exact in int64)."""
    zeros = fg.astype(fg.zeros_like(x), "int64")
    if axis is not None:   # (a sum over x's other axes, even of length 0, leaves zeros)
        others = tuple(a for a in range(x.ndim) if a != axis)
        zeros = fg.sum(zeros, axis=others) if others else zeros
    ones = fg.reshape(zeros, (-1,)) + np.int64(1)
    ramp = fg.cumsum(ones, axis=0) - np.int64(1)
    return ramp if np.dtype(dtype) == np.int64 else fg.astype(ramp, dtype)


def _scalar_operand(ctx, n, k):
    """Range's operand ``k`` as a 0-d numpy value when known at import time, else None."""
    if n.input[k] not in ctx.static:
        return None
    return np.asarray(ctx.static[n.input[k]]).reshape(())


@imports("Range")
def _range(ctx, n, ins, attrs):
    start, limit, delta = (_scalar_operand(ctx, n, k) for k in range(3))
    dtype = ins[0].dtype
    if start is None or delta is None:
        raise refuse(ctx, "its start and delta must be constants")
    if delta == 0:
        raise refuse(ctx, "its delta is 0")
    if limit is None:
        found = tracked(ctx, n, 1, ins)
        if found is not None and found[1] and isinstance(found[0][0], int):
            limit = np.asarray(found[0][0], dtype)     # (a known length of a Shape)
        elif found is None or not found[1] or start != 0 or delta != 1:
            raise refuse(ctx, f"its limit {n.input[1]!r} is neither a constant nor a "
                              "tensor's length (with start 0 and delta 1)")
        else:
            (x, axis), = found[0]
            return _ramp(x, axis, dtype)
    if dtype.kind == "f" and not all(np.isfinite(v) for v in (start, limit, delta)):
        raise refuse(ctx, f"its start, limit and delta ({start}, {limit}, {delta}) must "
                          "be finite")
    if dtype.kind == "f":      # onnxruntime's count: ceil((limit − start) / delta)
        count = math.ceil(float(np.subtract(limit, start, dtype=dtype)) / float(delta))
    else:
        span = int(limit) - int(start)
        if not -2 ** 53 <= span <= 2 ** 53 or span != int(np.asarray(span).astype(dtype)):
            # onnxruntime subtracts in the operands' type (wrapping) and divides in double
            raise refuse(ctx, f"limit − start = {span} is beyond what {dtype} and a "
                              "double hold exactly (readers count it differently)")
        count = -(-span // int(delta))
    count = max(count, 0)
    ctx.allocate([count], dtype, "its output")      # before a byte of it is made
    node = constant(_range_values(ctx, start, delta, count, dtype))
    ctx.static[n.output[0]] = node.value     # (known: not folded, nor charged, again)
    return node


def _range_values(ctx, start, delta, count, dtype):
    """start + i·delta (ONNX's formula) for i < count. For floats onnxruntime adds delta
    count times instead; where the two round differently the readers disagree, and the
    node is refused."""
    steps = np.arange(count, dtype=np.int64)
    if dtype.kind != "f":
        return (int(start) + steps * int(delta)).astype(dtype)
    values = start.astype(dtype) + steps.astype(dtype) * delta.astype(dtype)
    ctx.allocate([count], dtype, "its running sum, to check it")
    running = np.cumsum(np.concatenate([[start], np.full(max(count - 1, 0), delta)])
                        .astype(dtype), dtype=dtype)[:count]
    if not np.array_equal(values.view(f"u{dtype.itemsize}"),
                          running.view(f"u{dtype.itemsize}")):
        raise refuse(ctx, f"start + i·delta (ONNX's formula) and a running sum of delta "
                          f"(onnxruntime's) round differently for start {start}, delta "
                          f"{delta} in {dtype}")
    return values


@imports("EyeLike")
def _eye_like(ctx, n, ins, attrs):
    x = ins[0]
    if x.ndim != 2:
        raise refuse(ctx, f"its input must be 2-d, not {x.ndim}-d")
    dtype = ctx.dtype(attrs["dtype"]) if "dtype" in attrs else x.dtype
    # (clamped: no length reaches 2⁶², so the diagonal is as empty, and rows + k exact)
    k = min(max(int(attrs.get("k", 0)), -(1 << 62)), 1 << 62)
    # row and column numbers (1-based) as running sums of ones: x's lengths, known or not
    ones = fg.astype(fg.zeros_like(x), "int64") + np.int64(1)
    rows, cols = fg.cumsum(ones, axis=0), fg.cumsum(ones, axis=1)
    diagonal = fg.equal(rows + np.int64(k), cols) if k else fg.equal(rows, cols)
    return fg.where(diagonal, np.ones((), dtype), np.zeros((), dtype))


@imports("GatherND")
def _gather_nd(ctx, n, ins, attrs):
    x, idx = ins
    if attrs.get("batch_dims", 0) != 0:
        raise refuse(ctx, f"batch_dims={attrs['batch_dims']} is not supported (only 0)")
    q = idx.shape[-1] if idx.ndim else None
    if q is None or not 1 <= q <= x.ndim:
        raise refuse(ctx, f"its indices' last length must be known and in [1, {x.ndim}], "
                          f"not {q} (indices of shape {idx.shape})")
    if n.input[1] in ctx.static:
        value = np.asarray(ctx.static[n.input[1]])
        parts = tuple(value[..., j] for j in range(q))
    else:
        parts = tuple(idx[..., j] for j in range(q))
    return fg.getitem(x, parts)


_EXPAND = IMPORTERS["Expand"]     # (to a constant shape)


@imports("Expand")
def _expand(ctx, n, ins, attrs):
    if n.input[1] in ctx.static:
        return _EXPAND(ctx, n, ins, attrs)
    found = tracked(ctx, n, 1, ins)
    if found is None or found[1]:
        raise refuse(ctx, f"its shape {n.input[1]!r} is neither a constant nor lengths of "
                          "a tensor (a Shape, or Gather/Concat of Shapes)")
    # x broadcast against those lengths, both ways (ONNX's rule, numpy's): where of a
    # mask of them picks x itself, so that values (−0.0 too) and gradients are x's
    x = ins[0]
    return fg.where(filled(ctx, found[0], np.bool_(True)), x, x)
