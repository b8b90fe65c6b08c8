"""A loop in a graph file (issue 20): its spec as data, each body a list of node records.

A ``loop`` node's attribute ``spec`` (flowgrad/loops/loop_op.py) holds traced bodies,
which are graphs of their own. In a file the spec is ``{"$loop": {...}}``: the kind,
counts and flags, every result's shape and dtype, and per body its nodes (op name,
kind, shape, dtype, input ids, attributes; constants' values inline as base64 of their
bytes), which of them are its arguments, its captures and its outputs. Loading
rebuilds each body node by node through ``ops.base.apply``, as the loader rebuilds
the graph itself, checking every inferred shape and dtype against the record: a file
holds data only, never code.

A ``loop_out`` node holds only its ``index``: it reads its loop's spec from the loop
node, so a file holds each spec once.
"""
from __future__ import annotations

import base64
import math

import numpy as np

from flowgrad.errors import FlowgradError, GraphFileError

from .attrs import decode, dtype_name, encode, parse_dtype
from .loop_results import declared_results_agree
from .opsig import check_record
from .rebuild import apply_record

KINDS = {"scan": 1, "while": 2, "cond": 2}     # kind -> how many bodies
MAX_BODY_NODES = 1_000_000
MAX_INLINE_BYTES = 64 << 20
MAX_COUNT = 1 << 20
MAX_NDIM = 64          # numpy's most dimensions


def is_spec(value) -> bool:
    from flowgrad.loops.loop_op import LoopSpec
    return isinstance(value, LoopSpec)


# -- writing -------------------------------------------------------------------------------

def spec_encoder():
    """``encode(value)``: ``{"$loop": ...}`` for a LoopSpec, else None."""
    def encode_spec(value):
        return {"$loop": _spec_doc(value)} if is_spec(value) else None
    return encode_spec


def _spec_doc(spec):
    return {"kind": spec.kind, "name": spec.name, "reverse": spec.reverse,
            "length": spec.length, "max_iters": spec.max_iters, "where": spec.where,
            "caps_of": spec.caps_of, "n_carry": spec.n_carry, "n_xs": spec.n_xs,
            "n_ys": spec.n_ys,
            # the declared results only: the draws' are derived from the bodies again
            "out_shapes": [list(s) for s in spec.out_shapes[:spec.n_declared]],
            "out_dtypes": [dtype_name(d) for d in spec.out_dtypes[:spec.n_declared]],
            "bodies": [_body_doc(b) for b in spec.bodies]}


def _inline(arr):
    arr = np.array(arr, order="C")   # (ascontiguousarray makes a 0-d array 1-d)
    return {"dtype": dtype_name(arr.dtype), "shape": list(arr.shape),
            "b64": base64.b64encode(arr.astype(arr.dtype.newbyteorder("<")).tobytes())
            .decode("ascii")}


def _body_doc(body):
    arrays = []

    def store(arr):
        arrays.append(_inline(arr))
        return str(len(arrays) - 1)

    extra = _body_encoder()
    nodes = []
    for node in body.graph.nodes:
        d = node.record
        where = f"loop body {body.name!r}, node {d['name']!r}"
        rec = {"op": node.op.name if node.op is not None else None, "kind": node.kind,
               "name": d["name"], "shape": list(node.shape),
               "dtype": _dtype_text(node), "inputs": list(d["inputs"]),
               "attrs": {k: encode(v, store, f"{where}, attribute {k!r}", extra)
                         for k, v in node.attrs.items()}}
        if node.kind == "constant":
            rec["value"] = encode(d["value"] if d["weak"] else np.asarray(d["value"]),
                                  store, where)
            rec["weak"] = bool(d["weak"])
        elif node.kind not in ("placeholder", "op"):
            raise GraphFileError(f"{where}: a body's {node.kind} cannot be saved")
        nodes.append(rec)
    return {"name": body.name, "nodes": nodes, "arrays": arrays,
            "params": [p.id for p in body.params],
            "cap_params": [p.id for p in body.cap_params],
            "outs": [o.id for o in body.outs]}


def _body_encoder():
    """A body's attribute objects: a nested loop's spec, a random node's stream (its
    seed, as at the top level: a loaded body's draws start their sequence over)."""
    from flowgrad.random import Stream
    loops = spec_encoder()

    def encode_obj(value):
        if isinstance(value, Stream):
            return {"$stream": int(value.seed)}
        return loops(value)
    return encode_obj


def _body_decoders(where):
    from flowgrad.random import Stream

    def stream(seed):
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise GraphFileError(f"{where}: a malformed random stream")
        return Stream(seed)
    return {"$stream": stream, **spec_decoders(where)}


def _dtype_text(node) -> str:
    from flowgrad.loops.loop_op import is_loop
    return "object" if is_loop(node) else dtype_name(node.dtype)


def node_dtype(d) -> str:
    """The dtype text of a node record (``d``: its attrs dict): a loop's is "object"."""
    op = d["op"]
    return "object" if op is not None and op.name == "loop" else dtype_name(d["dtype"])


def parse_node_dtype(text, op_name) -> np.dtype:
    """The dtype of a record: "object" only for a loop node."""
    if text == "object" and op_name == "loop":
        return np.dtype(object)
    return parse_dtype(text)


# -- reading -------------------------------------------------------------------------------

def _int(v, where, lo=0, hi=MAX_COUNT, none=False):
    if none and v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise GraphFileError(f"{where}: a malformed loop ({v!r:.40} out of range)")
    return v


def spec_decoders(where):
    """The ``$loop`` tag's decoder."""
    return {"$loop": lambda doc: _spec(doc, where)}


def _spec(doc, where):
    from flowgrad.loops.loop_op import LoopSpec
    try:
        kind, bodies = doc["kind"], doc["bodies"]
        if kind not in KINDS or not isinstance(bodies, list) or len(bodies) != KINDS[kind]:
            raise GraphFileError(f"{where}: a malformed loop")
        counts = [_int(doc[k], where) for k in ("n_carry", "n_xs", "n_ys")]
        shapes = [tuple(_int(s, where, 0, 2 ** 62, none=True) for s in shape)
                  for shape in doc["out_shapes"]]
        dtypes = [parse_dtype(t) for t in doc["out_dtypes"]]
        caps_of = [[_int(i, where) for i in c] for c in doc["caps_of"]]
        flags = (doc["reverse"], doc["name"], doc["where"])
        length = _int(doc["length"], where, 0, 2 ** 62, none=True)
        max_iters = _int(doc["max_iters"], where, 0, 2 ** 62, none=True)
    except (KeyError, TypeError):
        raise GraphFileError(f"{where}: a malformed loop") from None
    if not isinstance(flags[0], bool) or not isinstance(flags[1], str) or \
            not isinstance(flags[2], (str, type(None))) or len(shapes) != len(dtypes) or \
            len(caps_of) != len(bodies):
        raise GraphFileError(f"{where}: a malformed loop")
    if kind == "scan" and any(len(s) == 0 for s in shapes[counts[0]:]):
        # a scan's results after its carries are stacked along a leading axis (LoopSpec
        # reads that axis as the trip count)
        raise GraphFileError(f"{where}: a malformed loop (a stacked result is 0-d)")
    built = [_body(b, where) for b in bodies]
    return LoopSpec(kind, flags[1], built, caps_of, *counts, shapes, dtypes,
                    reverse=flags[0], length=length, max_iters=max_iters, where=flags[2])


def _array(entry, where):
    try:
        dtype = parse_dtype(entry["dtype"])
        shape = tuple(_int(s, where, 0, MAX_INLINE_BYTES) for s in entry["shape"])
        raw = base64.b64decode(entry["b64"], validate=True)
    except (KeyError, TypeError, ValueError):
        raise GraphFileError(f"{where}: a malformed array in a loop body") from None
    # math.prod of Python ints: np.prod's int64 wraps ((2**16,) * 4 would hold 0 bytes)
    if len(shape) > MAX_NDIM or len(raw) > MAX_INLINE_BYTES or \
            len(raw) != math.prod(shape) * dtype.itemsize:
        raise GraphFileError(f"{where}: an array in a loop body has the wrong size")
    return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)


def _body(doc, where):
    from flowgrad.loops.body import Body
    from flowgrad.graph import Graph
    try:
        name, nodes, arrays = doc["name"], doc["nodes"], doc["arrays"]
        ids = [[_int(i, where, 0, len(nodes) - 1) for i in doc[k]]
               for k in ("params", "cap_params", "outs")]
    except (KeyError, TypeError):
        raise GraphFileError(f"{where}: a malformed loop body") from None
    if not isinstance(name, str) or not isinstance(nodes, list) or \
            len(nodes) > MAX_BODY_NODES or not isinstance(arrays, list):
        raise GraphFileError(f"{where}: a malformed loop body")
    load = [_array(a, where) for a in arrays]

    def load_array(key):
        k = _int(int(key) if isinstance(key, str) and key.isdigit() else -1, where, 0,
                 len(load) - 1)
        return load[k]

    graph = Graph()
    handles = []
    with graph:
        for k, rec in enumerate(nodes):
            handles.append(_body_node(graph, handles, rec, k, load_array, f"{where}, "
                                      f"loop body {name!r}, node {k}"))
    params, caps, outs = ([handles[i] for i in group] for group in ids)
    if any(p.kind != "placeholder" for p in params + caps):
        raise GraphFileError(f"{where}: a loop body's arguments must be placeholders")
    return Body(name, graph, params, outs, None, [], caps)


def _body_node(graph, handles, rec, k, load_array, where):
    from flowgrad.leaves import placeholder
    from flowgrad.ops.base import REGISTRY, as_node
    try:
        kind, op_name, shape = rec["kind"], rec["op"], tuple(rec["shape"])
        dtype = parse_node_dtype(rec["dtype"], op_name)
        if kind != "op" and (op_name is not None or rec["inputs"] or rec["attrs"]):
            # as at the top level: a leaf has no op, inputs or attributes (else they
            # would be read, even built, and then ignored)
            raise GraphFileError(f"{where}: a {kind!r:.20} has no op, inputs or attributes")
        inputs = [handles[_int(i, where, 0, k - 1)] for i in rec["inputs"]]
        extra = _body_decoders(where)
        attrs = {n: decode(v, load_array, f"{where}, attribute {n!r}", extra)
                 for n, v in rec["attrs"].items()}
        if kind == "placeholder":
            node = placeholder(rec["name"], shape, dtype)
        elif kind == "constant":
            value = decode(rec["value"], load_array, where)
            if rec["weak"] is not isinstance(value, (bool, int, float, complex)):
                raise GraphFileError(f"{where}: a malformed constant")
            node = as_node(value if rec["weak"] else np.asarray(value, dtype), graph)
        elif kind == "op" and op_name in REGISTRY:
            check_record(REGISTRY[op_name], inputs, attrs, where)   # as a top-level node's
            node = apply_record(REGISTRY[op_name], inputs, attrs, where)
        else:
            raise GraphFileError(f"{where}: unknown op {op_name!r:.40} or kind {kind!r:.20}")
    except GraphFileError:
        raise
    except FlowgradError as e:
        raise GraphFileError(f"{where}: rebuilding it failed: {e}") from None
    except (KeyError, TypeError, ValueError, IndexError, OverflowError, AttributeError,
            ZeroDivisionError) as e:
        raise GraphFileError(f"{where}: rebuilding it failed: {type(e).__name__}: {e}") \
            from None
    if node.shape != shape or node.dtype != dtype:
        raise GraphFileError(f"{where}: the file says shape {shape} dtype {dtype}, but "
                             f"rebuilding gives shape {node.shape} dtype {node.dtype}")
    _name(node, rec.get("name"), where)
    return node


def _name(node, name, where):
    """Give a rebuilt body node its saved name (a user's ``.named("h")`` in a step, a
    constant's ``name=``): errors inside the loop name it, and saving again writes it."""
    if not isinstance(name, str) or not name:
        raise GraphFileError(f"{where}: a malformed node name {name!r:.40}")
    try:
        node.name = name
    except FlowgradError:
        raise GraphFileError(f"{where}: two nodes of the loop body are named "
                             f"{name!r:.60}") from None


def spec_agrees(ins, spec) -> bool:
    """A loop record's inputs fit its spec: the lead inputs (carries, xs, a cond's
    predicate) then the captures, each body's captured placeholders the shape and dtype
    of the inputs its ``caps_of`` names (a file could pair a body with other inputs),
    and its declared results the ones its bodies give on those inputs."""
    n_caps = 1 + max((i for c in spec.caps_of for i in c), default=-1)
    if len(ins) != spec.n_lead + n_caps:
        return False
    for body, caps in zip(spec.bodies, spec.caps_of):
        if len(body.cap_params) != len(caps):
            return False
        for p, i in zip(body.cap_params, caps):
            x = ins[spec.n_lead + i]
            if p.shape != x.shape or p.dtype != x.dtype:
                return False
    # the declared results must be what the bodies give (loop_results.py)
    return len(spec.out_shapes) >= spec.n_results and \
        declared_results_agree(spec, ins[:spec.n_lead])


def out_agrees(ins, index) -> bool:
    """A loop_out record reads result ``index`` of a loop node, with the loop's inputs."""
    from flowgrad.loops.loop_op import is_loop
    if not ins or not is_loop(ins[0]):
        return False
    spec = ins[0].attrs["spec"]
    return index < len(spec.out_shapes) and len(ins) == 1 + len(ins[0].inputs)
