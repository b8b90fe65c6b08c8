"""``fg.import_onnx(path)``: an ONNX model as a flowgrad graph, to differentiate it.

Initializers of a float dtype become variables (the model's weights: gradients,
Hessian-vector products and optimizers apply to them); integer or bool ones, and
``Constant`` nodes, become constants. Graph inputs become placeholders (a
symbolic or missing dimension is ``None``). Each ONNX node is rebuilt from
flowgrad ops by ``IMPORTERS[op_type]``, and the node computing an ONNX tensor is
named after it, so ``g.by_name("logits")`` finds it. An op type with no importer
is an error naming it and the model's node; so is a shape or axes operand that is
not a constant (flowgrad shapes are fixed when the graph is built).

Reading a model parses protobuf only: no code in the file is run.
"""
from __future__ import annotations

import numpy as np

from flowgrad.errors import FlowgradError, GraphFileError
from flowgrad.graph import Graph


class OnnxImportError(GraphFileError):
    """An ONNX model flowgrad cannot rebuild: an unsupported op type or operand."""


class Context:
    """State while importing: tensors by name, statically known values, the opset."""

    def __init__(self, onnx, opset):
        self.onnx, self.opset = onnx, opset
        self.env: dict = {}       # tensor name -> Node
        self.static: dict = {}    # tensor name -> numpy value known at import time
        self.where = ""
        self.claimed: set = set()   # ids of nodes already named after an ONNX tensor

    def value(self, name, what="operand"):
        """The constant value of tensor ``name``, or an error naming the node."""
        if name not in self.static:
            raise OnnxImportError(f"{self.where}: its {what} {name!r} must be a constant "
                                  "(flowgrad fixes shapes and axes when the graph is built)")
        return self.static[name]


def _onnx():
    try:
        import onnx
    except ImportError:   # pragma: no cover
        raise ImportError("ONNX import needs the onnx package: pip install 'flowgrad[onnx]'") \
            from None
    return onnx


def _shape(value_info):
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        raise OnnxImportError(f"graph input {value_info.name!r} has no shape")
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)


def _claim(g, node, name):
    """Name ``node`` ``name``; a node merely auto-named that holds it gets a new name."""
    if node.name == name:
        return
    blocker_id = g._name_id(name)
    if blocker_id is not None:
        blocker = g.node(blocker_id)
        blocker.name = g._unique_name(name + "_")
    node.name = name


def _needed(graph, outputs):
    """The nodes of ``graph`` that the tensors ``outputs`` depend on, in model order."""
    producer = {o: k for k, n in enumerate(graph.node) for o in n.output if o}
    known = {o.name for o in graph.output} | set(producer) | \
        {i.name for i in graph.input} | {i.name for i in graph.initializer}
    unknown = [o for o in outputs if o not in known]
    if unknown:
        raise OnnxImportError(f"the model has no tensors named {unknown}")
    keep, stack = set(), [producer[o] for o in outputs if o in producer]
    while stack:
        k = stack.pop()
        if k not in keep:
            keep.add(k)
            stack.extend(producer[i] for i in graph.node[k].input if i in producer)
    return [n for k, n in enumerate(graph.node) if k in keep]


def import_onnx(path, outputs=None) -> Graph:
    """A flowgrad Graph holding the ONNX model at ``path``; find nodes by their ONNX
    tensor names with ``g.by_name``. ``outputs`` (tensor names) limits the import to
    what they need, e.g. the forward part of a model that also holds other programs.
    Raises ``OnnxImportError`` (a ``GraphFileError``) naming the op type and node the op
    table does not cover."""
    from .onnx_import_ops import IMPORTERS
    onnx = _onnx()
    try:
        # external data would make the model read other files: refused below
        model = onnx.load(str(path), load_external_data=False)
    except OSError:
        raise
    except Exception as err:   # protobuf's DecodeError and friends
        raise GraphFileError(f"{path}: not a readable ONNX model ({type(err).__name__})") \
            from None
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None:
        raise OnnxImportError(f"{path}: the model imports no standard ONNX opset")
    graph = model.graph
    external = [i.name for i in graph.initializer
                if i.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise OnnxImportError(f"{path}: initializers {external[:5]} keep their data in "
                              "other files, which import_onnx does not read")
    ctx = Context(onnx, opset)
    g = Graph()
    from flowgrad.leaves import constant, placeholder, variable
    with g:
        inits = {i.name for i in graph.initializer}
        for init in graph.initializer:
            arr = onnx.numpy_helper.to_array(init)
            if arr.dtype.kind == "f":
                node = variable(np.array(arr), name=init.name, dtype=arr.dtype)
            else:
                node = constant(np.array(arr), name=init.name)
                ctx.static[init.name] = np.array(arr)
            _claim(g, node, init.name)
            ctx.env[init.name] = node
        for vi in graph.input:
            if vi.name in inits:
                continue
            dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
            ctx.env[vi.name] = placeholder(vi.name, _shape(vi), dtype)
            _claim(g, ctx.env[vi.name], vi.name)
        wanted = [o.name for o in graph.output] if outputs is None else list(outputs)
        nodes = graph.node if outputs is None else _needed(graph, wanted)
        for k, n in enumerate(nodes):
            _import_node(ctx, g, n, k, IMPORTERS)
        missing = [o for o in wanted if o not in ctx.env]
        if missing:
            raise OnnxImportError(f"{path}: graph outputs {missing} are computed by no node")
    return g


def _import_node(ctx, g, n, k, importers):
    label = n.name or (n.output[0] if n.output else f"#{k}")
    ctx.where = f"node {label!r} ({n.op_type})"
    if n.domain not in ("", "ai.onnx"):
        raise OnnxImportError(f"op type {n.domain}.{n.op_type} of node {label!r} is not in "
                              "the standard ONNX domain")
    fn = importers.get(n.op_type)
    if fn is None:
        raise OnnxImportError(f"op type {n.op_type!r} (node {label!r}) has no flowgrad "
                              "counterpart")
    ins = []
    for name in n.input:
        if name and name not in ctx.env:
            raise OnnxImportError(f"{ctx.where}: its input {name!r} is computed by no "
                                  "earlier node")
        ins.append(ctx.env.get(name) if name else None)
    attrs = {a.name: ctx.onnx.helper.get_attribute_value(a) for a in n.attribute}
    first = len(g)
    try:
        outs = fn(ctx, n, ins, attrs)
    except OnnxImportError:
        raise
    except (FlowgradError, ValueError, TypeError, IndexError, KeyError) as err:
        raise OnnxImportError(f"{ctx.where}: {type(err).__name__}: {err}") from None
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    for name, node in zip(n.output, outs):
        if not name:
            continue
        ctx.env[name] = node
        if node.id >= first and node.id not in ctx.claimed:   # made here: take its name
            _claim(g, node, name)
            ctx.claimed.add(node.id)
