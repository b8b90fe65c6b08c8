"""numpy indexing (flowgrad's getitem and its adjoint scatter_add) as ONNX nodes.

Basic items (slices, ints, newaxis) become Slice, Gather and Unsqueeze. Advanced
items (integer arrays, integer nodes, and ints among them) follow numpy: the
indexed axes are moved to the front, the index arrays broadcast and stacked into
one GatherND, and the broadcast block is moved back where numpy puts it (in place
when the advanced items are adjacent, first otherwise).

scatter_add (zeros shaped like x with g *added* at the index) indexes a tensor of
flat positions 0…N−1 shaped like x with the same index, then scatter-adds g at
those positions with ScatterElements(reduction="add"): repeated indices add up,
exactly as numpy's add.at.
"""
from __future__ import annotations

import numpy as np

from flowgrad.ops.indexing import expand_ellipsis

INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min


def _slice_bounds(start, stop, step):
    step = 1 if step is None else step
    if start is None:
        start = 0 if step > 0 else INT64_MAX
    if stop is None:
        stop = INT64_MAX if step > 0 else INT64_MIN
    return start, stop, step


def getitem_tensor(e, x, x_node, index, tensor_inputs):
    """``x[index]`` where ``x`` is a tensor name shaped like ``x_node`` and ``tensor_inputs``
    are the input numbers of the current node holding the index nodes ("t" items)."""
    items = expand_ellipsis(x_node, index)
    advanced = any(it[0] in ("a", "t") for it in items)
    starts, stops, axes, steps = [], [], [], []
    consumed = []                      # (item position, x axis) of axis-consuming items
    axis = 0
    for pos, it in enumerate(items):
        if it[0] == "n":
            continue
        consumed.append((pos, axis))
        if it[0] == "s" and it[1:] != (None, None, None):
            b = _slice_bounds(*it[1:])
            starts.append(b[0]), stops.append(b[1]), steps.append(b[2]), axes.append(axis)
        axis += 1
    if axes:
        x = e.op("Slice", [x, e.ints(starts), e.ints(stops), e.ints(axes), e.ints(steps)])
    if not advanced:
        for pos, ax in reversed(consumed):          # highest axis first: numbers stay valid
            if items[pos][0] == "i":
                x = e.op("Gather", [x, e.const(items[pos][1], np.int64)], axis=ax)
        out_pos = [k for k, it in enumerate([it for it in items if it[0] in "ns"])
                   if it[0] == "n"]
        return e.op("Unsqueeze", [x, e.ints(out_pos)]) if out_pos else x
    return _advanced(e, x, x_node, items, consumed, tensor_inputs)


def _advanced(e, x, x_node, items, consumed, tensor_inputs):
    adv = [(pos, ax) for pos, ax in consumed if items[pos][0] in ("a", "t", "i")]
    basic = [ax for pos, ax in consumed if items[pos][0] == "s"]
    perm = [ax for _, ax in adv] + basic
    if perm != list(range(len(perm))):
        x = e.op("Transpose", [x], perm=perm)
    idx, ranks = [], []
    for j, (pos, ax) in enumerate(adv):
        it = items[pos]
        dim = x_node.shape[ax]
        if it[0] == "t":
            node = e.node.inputs[tensor_inputs[it[1]]]
            t = e.arg(tensor_inputs[it[1]], np.int64)
            ranks.append(len(node.shape))
            # negative indices count from the end, as numpy
            size = e.op("Gather", [e.op("Shape", [x]), e.const(j, np.int64)], axis=0)
            neg = e.op("Less", [t, e.const(0, np.int64)])
            t = e.op("Where", [neg, e.op("Add", [t, size]), t])
        else:
            arr = np.asarray(it[1], dtype=np.int64)
            ranks.append(arr.ndim)
            if dim is not None:
                t = e.const(np.where(arr < 0, arr + dim, arr))
            else:
                t = e.const(arr)
                size = e.op("Gather", [e.op("Shape", [x]), e.const(j, np.int64)], axis=0)
                neg = e.op("Less", [t, e.const(0, np.int64)])
                t = e.op("Where", [neg, e.op("Add", [t, size]), t])
        idx.append(t)
    if len(idx) > 1:     # broadcast the index arrays against each other
        zero = e.op("Mul", [idx[0], e.const(0, np.int64)])
        for t in idx[1:]:
            zero = e.op("Add", [zero, e.op("Mul", [t, e.const(0, np.int64)])])
        idx = [e.op("Add", [t, zero]) for t in idx]
    stacked = e.op("Concat", [e.op("Unsqueeze", [t, e.ints([-1])]) for t in idx], axis=-1)
    y = e.op("GatherND", [x, stacked])
    r = max(ranks)
    # newaxis items, then the broadcast block moved where numpy puts it
    basic_items = [it for it in items if it[0] in "ns"]
    out_pos = [r + k for k, it in enumerate(basic_items) if it[0] == "n"]
    if out_pos:
        y = e.op("Unsqueeze", [y, e.ints(out_pos)])
    adv_pos = [pos for pos, _ in adv]
    adjacent = adv_pos == list(range(adv_pos[0], adv_pos[0] + len(adv_pos)))
    first = sum(1 for it in items[:adv_pos[0]] if it[0] in "ns")
    if adjacent and first and r:
        nb = len(basic_items)
        order = list(range(r, r + first)) + list(range(r)) + list(range(r + first, r + nb))
        y = e.op("Transpose", [y], perm=order)
    return y


def scatter_add(e, index):
    """Zeros shaped like input 1 with input 0 added at ``index`` (inputs 2… are index
    nodes)."""
    g = e.arg(0)
    x_node = e.node.inputs[1]
    shape = e.shape_of(1)
    n = e.op("Size", [e.raw(1)])
    positions = e.op("Reshape", [e.op("Range", [e.const(0, np.int64), n,
                                                e.const(1, np.int64)]), shape])
    picked = getitem_tensor(e, positions, x_node, index,
                            [k + 2 for k in range(len(e.node.inputs) - 2)])
    flat = e.ints([-1])
    value = e.onnx.numpy_helper.from_array(np.array([0], dtype=e.node.dtype))
    zeros = e.op("ConstantOfShape", [e.op("Reshape", [n, flat])], value=value)
    out = e.op("ScatterElements", [zeros, e.op("Reshape", [picked, flat]),
                                   e.op("Reshape", [g, flat])], axis=0, reduction="add")
    return e.op("Reshape", [out, shape])
