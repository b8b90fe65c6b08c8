"""flowgrad objects that op attributes hold, in a graph file: the body of a
``basis_map`` node (jacobian, hessian) and the random stream of a random node.

A random stream is its seed, ``{"$stream": seed}``: a loaded graph's random nodes
start their sequences over, as a copy of the graph's would.

A body is not data of its own: it names nodes of the same graph — the placeholders
it binds and the node it computes per basis vector — all built before the map node
itself. So it is stored as those nodes' ids, ``{"$body": {...}}``, and saving some
outputs keeps the nodes their bodies name as well as their ancestors.
"""
from __future__ import annotations

from flowgrad.errors import GraphFileError

from . import custom_io, loop_io

REDUCES = ("stack", "sum")


def _body_type():
    from flowgrad.higher_order import MapBody
    return MapBody


def _stream_type():
    try:
        from flowgrad.random import Stream
    except ImportError:      # a flowgrad without random ops
        return None
    return Stream


def is_body(value) -> bool:
    """Whether ``value`` is a basis_map body (as objects.decoder rebuilds one)."""
    return isinstance(value, _body_type())


def is_stream(value) -> bool:
    """Whether ``value`` is a random stream (as objects.decoder rebuilds one)."""
    stream_type = _stream_type()
    return stream_type is not None and isinstance(value, stream_type)


def body_nodes(value):
    """The nodes a body names (empty for any other attribute value)."""
    if not isinstance(value, _body_type()):
        return []
    return [value.out, value.basis, *value.params, *value.sliced]


def closure(graph, ids):
    """``ids`` (ascending) with the ancestors of every node a kept body names."""
    from flowgrad.autodiff import ancestors
    data = graph.nx.nodes
    keep, todo = set(ids), list(ids)
    while todo:
        nid = todo.pop()
        for value in data[nid]["attrs"].values():
            for extra in ancestors(body_nodes(value)) if body_nodes(value) else ():
                if extra not in keep:
                    keep.add(extra)
                    todo.append(extra)
    return sorted(keep)


def encoder(new_id):
    """``extra`` for attrs.encode: a body as the saved ids of the nodes it names."""
    body_type = _body_type()

    stream_type = _stream_type()

    loops = loop_io.spec_encoder()   # issue 20: a loop's spec, its bodies as data

    def encode(value):
        if (custom := custom_io.encode(value)) is not None:   # issue 21: a custom function
            return custom
        if (loop := loops(value)) is not None:
            return loop
        if stream_type is not None and isinstance(value, stream_type):
            return {"$stream": int(value.seed)}
        if not isinstance(value, body_type):
            return None
        try:
            ref = [new_id[n.id] for n in body_nodes(value)]
        except KeyError:
            raise GraphFileError("a basis_map body names a node that is not saved") from None
        k = len(value.params)
        return {"$body": {"out": ref[0], "basis": ref[1], "params": ref[2:2 + k],
                          "sliced": ref[2 + k:], "reduce": value.reduce,
                          "dynamic": bool(value.dynamic)}}
    return encode


def decoder(handles, where):
    """``extra`` for attrs.decode: rebuild a body from already loaded nodes."""
    def node(i):
        if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < len(handles):
            raise GraphFileError(f"{where}: a basis_map body names node {i!r}, which is "
                                 "not an earlier node")
        return handles[i]

    def decode(payload):
        try:
            out, basis = node(payload["out"]), node(payload["basis"])
            params = [node(i) for i in payload["params"]]
            sliced = [node(i) for i in payload["sliced"]]
            reduce, dynamic = payload["reduce"], payload["dynamic"]
        except (KeyError, TypeError):
            raise GraphFileError(f"{where}: a malformed basis_map body") from None
        if reduce not in REDUCES or not isinstance(dynamic, bool) or \
                any(p.kind != "placeholder" for p in [basis, *params, *sliced]):
            raise GraphFileError(f"{where}: a malformed basis_map body")
        return _body_type()(out, basis, params, sliced, reduce, dynamic=dynamic)

    def stream(seed):
        if not isinstance(seed, int) or isinstance(seed, bool) or stream_type is None:
            raise GraphFileError(f"{where}: a malformed random stream")
        return stream_type(seed)
    stream_type = _stream_type()
    return {"$body": decode, "$stream": stream,
            "$custom": custom_io.decoder(where),   # issue 21: a custom function by name
            **loop_io.spec_decoders(where)}   # issue 20: loops
