"""``fg.import_onnx(path)``: an ONNX model as a flowgrad graph, to differentiate it.

Initializers of a float dtype become variables (the model's weights: gradients,
Hessian-vector products and optimizers apply to them); integer or bool ones, and
``Constant`` nodes, become constants. Graph inputs become placeholders (a
symbolic or missing dimension is ``None``). Each ONNX node is rebuilt from
flowgrad ops by ``IMPORTERS[op_type]``, and the node computing an ONNX tensor is
named after it, so ``g.by_name("logits")`` finds it. An op type with no importer
is an error naming it and the model's node; so is a shape or axes operand that is
not a constant (flowgrad shapes are fixed when the graph is built).

Reading a model parses protobuf only: no code in the file is run, and no other file
is read (a tensor with external data is refused, wherever it is). Every tensor made
at import time is charged to a budget (``max_bytes=``) before it is allocated, and a
malformed tensor, operand or attribute is an ``OnnxImportError`` naming the node. Each
node is held to its operator's schema first (onnx_import_check), so that a model no
runtime would accept does not import as some other graph (tests/test_onnx_import_fuzz.py
mutates models to check it, against onnxruntime).
"""
from __future__ import annotations

import math

import numpy as np

from flowgrad.engine.program import run
from flowgrad.errors import FlowgradError, GraphFileError
from flowgrad.graph import Graph
from flowgrad.ops.base import building_at, user_site

from .limits import Budget, check_max_bytes
from .onnx_import_check import (check_attributes, check_counts, check_declared,
                                 check_types, optional_output, schema_of)

MAX_NDIM = 64


class OnnxImportError(GraphFileError):
    """An ONNX model flowgrad cannot rebuild: an unsupported op type or operand."""


_ABSENT = object()


class Scope(dict):
    """Names in scope: one flat dict, whose entries set inside a loop body (``enter`` …
    ``leave``) are undone when the body ends, so that the enclosing graph never sees a
    body's tensors. A look-up costs one dict look-up however deep bodies nest (a
    ChainMap's walks its maps in Python: a fifth of a body node's import)."""

    __slots__ = ("undo",)

    def __init__(self):
        super().__init__()
        self.undo: list = []     # per open body: {name: its value before, or _ABSENT}

    def __setitem__(self, key, value):
        if self.undo and key not in self.undo[-1]:
            self.undo[-1][key] = self.get(key, _ABSENT)
        dict.__setitem__(self, key, value)

    def hide(self, key):
        """Take ``key`` out of scope until the body ends (a body input named like an
        enclosing tensor shadows it)."""
        if key in self:
            self[key] = None          # (logged)
            dict.__delitem__(self, key)

    def enter(self):
        self.undo.append({})

    def leave(self):
        for key, old in self.undo.pop().items():
            if old is _ABSENT:
                dict.pop(self, key, None)
            else:
                dict.__setitem__(self, key, old)


class Context:
    """State while importing: tensors by name, statically known values, the opset, and
    the budget every tensor made at import time is charged to before it is made."""

    def __init__(self, onnx, opset, budget):
        self.onnx, self.opset, self.budget = onnx, opset, budget
        self.env = Scope()        # tensor name -> Node
        self.static = Scope()     # tensor name -> numpy value known at import time
        self.where = ""
        self.claimed: set = set()   # (graph, id) of nodes already named after an ONNX tensor
        self.depth = 0              # how many loop bodies deep the import is (onnx_import_loops)
        self.body = None            # the graph of the body being imported, if any
        self.reads: set = set()     # (graph, id) of the enclosing nodes that body reads
        #: id(node) -> (node, entries, is_scalar): the lengths each run-time shape vector
        #: holds, entries known ints or (input, axis) pairs (onnx_import_shapes)
        self.shape_dims: dict = {}

    def node_of(self, name):
        """The node of tensor ``name``; inside a loop body being imported, a node of an
        enclosing graph is read through the body's capture, so that what the body
        computes from it stays in the body (an If's untaken branch never runs it)."""
        node = self.env[name]
        if self.depth and node.graph is not self.body:
            from flowgrad.loops.body import capture
            self.reads.add((id(node.graph), node.id))
            node = capture(node)
        return node

    def value(self, name, what="operand"):
        """The constant integer value of tensor ``name`` (a shape, axes, bounds, pads,
        indices: ONNX types them int64 or int32), or an error naming the node."""
        if name not in self.static:
            raise OnnxImportError(f"{self.where}: its {what} {name!r} must be a constant "
                                  "(flowgrad fixes shapes and axes when the graph is built)")
        value = self.static[name]
        if value.dtype.kind not in "iu":    # a float or complex one would be truncated
            raise OnnxImportError(f"{self.where}: its {what} {name!r} is {value.dtype}, "
                                  "not an integer tensor")
        return value

    def vector(self, name, what):
        """``value(name)``, which must be 1-d (a shape, axes, bounds or pads: ONNX and
        onnxruntime take no other rank; flattening a 2-d one would read it as another)."""
        value = np.asarray(self.value(name, what))
        if value.ndim != 1:
            raise OnnxImportError(f"{self.where}: its {what} {name!r} is {value.ndim}-d, "
                                  "not a 1-d tensor")
        return value

    def dtype(self, elem_type) -> np.dtype:
        """The numpy dtype of an ONNX element type that flowgrad can hold."""
        try:
            dtype = np.dtype(self.onnx.helper.tensor_dtype_to_np_dtype(elem_type))
        except (KeyError, TypeError, ValueError):
            raise OnnxImportError(f"{self.where}: unknown ONNX element type {elem_type!r}") \
                from None
        if dtype.kind not in "biufc":
            raise OnnxImportError(f"{self.where}: element type {elem_type} ({dtype}) is not a "
                                  "number type flowgrad holds")
        return dtype

    def allocate(self, shape, dtype, what):
        """Charge an array of ``shape`` and ``dtype`` to the budget, before it is made."""
        if len(shape) > MAX_NDIM or not all(type(d) is int and d >= 0 for d in shape):
            raise OnnxImportError(f"{self.where}: {what} has a bad shape {tuple(shape)!r:.80}")
        self.budget.take(math.prod(shape) * np.dtype(dtype).itemsize,
                         f"{self.where}: {what} of shape {tuple(shape)} {np.dtype(dtype)}")

    def tensor(self, t) -> np.ndarray:
        """A TensorProto as an array (possibly a read-only view of the model's bytes),
        its size checked against the budget and its dims against its data first."""
        if t.data_location == self.onnx.TensorProto.EXTERNAL or len(t.external_data):
            raise OnnxImportError(f"{self.where}: its tensor keeps its data in another file")
        dtype = self.dtype(t.data_type)
        self.allocate([int(d) for d in t.dims], dtype, "a tensor")
        self._one_data_field(t)
        try:
            arr = self.onnx.numpy_helper.to_array(t)
        except (ValueError, TypeError, KeyError, IndexError) as err:
            raise OnnxImportError(f"{self.where}: a malformed tensor "
                                  f"({type(err).__name__}: {err})") from None
        if arr.dtype != dtype or arr.shape != tuple(t.dims):
            raise OnnxImportError(f"{self.where}: a malformed tensor (its data is {arr.dtype} "
                                  f"{arr.shape}, its header says {dtype} {tuple(t.dims)})")
        return arr


    def _one_data_field(self, t):
        """A tensor's data in one field, the one of its type (the checker's rule): two
        would leave which one counts to the reader (onnx reads raw_data, ignoring the
        other), a float_data of a double tensor is read as no data at all."""
        fields = [f for f in _DATA_FIELDS if len(getattr(t, f))] + \
            (["raw_data"] if t.HasField("raw_data") else [])
        own = self.onnx.helper.tensor_dtype_to_field(t.data_type)
        if len(fields) > 1 or fields and fields[0] not in ("raw_data", own) or \
                t.HasField("segment"):
            raise OnnxImportError(f"{self.where}: a malformed tensor (its data is in "
                                  f"{fields or ['segment']}, where a {self.dtype(t.data_type)}"
                                  f" tensor holds it in raw_data or {own})")


#: TensorProto's typed data fields (raw_data besides)
_DATA_FIELDS = ("float_data", "int32_data", "string_data", "int64_data", "double_data",
                "uint64_data")


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
    if len(t.shape.dim) > MAX_NDIM:   # numpy's limit: no array could ever be fed to it
        raise OnnxImportError(f"graph input {value_info.name!r} has {len(t.shape.dim)} "
                              f"dimensions, more than the {MAX_NDIM} an array may have")
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)


def _claim(g, node, name):
    """Name ``node`` ``name``; a node merely auto-named that holds it gets a new name."""
    if node.name == name:
        return
    blocker_id = g.name_id(name)
    if blocker_id is not None:
        blocker = g.node(blocker_id)
        blocker.name = g.unique_name(name + "_")
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
            reads = list(graph.node[k].input) + outer_reads(graph.node[k])
            stack.extend(producer[i] for i in reads if i in producer)
    return [n for k, n in enumerate(graph.node) if k in keep]


def outer_reads(node) -> list:
    """The tensors of enclosing scopes that the subgraphs of ``node`` (a Loop's body,
    an If's branches, nested ones included) read by name: they are inputs too. Walked
    with a stack; a name defined anywhere inside counts as inner (ONNX names are
    assigned once)."""
    graphs, stack = [], [a.g for a in node.attribute if a.HasField("g")]
    stack += [g for a in node.attribute for g in a.graphs]
    while stack:
        gr = stack.pop()
        graphs.append(gr)
        for n in gr.node:
            stack.extend(a.g for a in n.attribute if a.HasField("g"))
            stack.extend(g for a in n.attribute for g in a.graphs)
    inner = {v.name for gr in graphs for v in gr.input}
    inner |= {t.name for gr in graphs for t in gr.initializer}
    inner |= {o for gr in graphs for n in gr.node for o in n.output}
    return [i for gr in graphs for n in gr.node for i in n.input if i and i not in inner]


def import_onnx(path, outputs=None, *, max_bytes=None) -> Graph:
    """A flowgrad Graph holding the ONNX model at ``path``; find nodes by their ONNX
    tensor names with ``g.by_name``. ``outputs`` (tensor names) limits the import to
    what they need, e.g. the forward part of a model that also holds other programs.
    Raises ``OnnxImportError`` (a ``GraphFileError``) naming the op type and node the op
    table does not cover, or the node whose operands or attributes are malformed.

    A tensor that keeps its data in another file is refused, wherever it is (an
    initializer, a node attribute, a subgraph): the model is read from ``path`` alone.
    ``max_bytes`` bounds the tensor data the import may allocate (weights, constants,
    ``ConstantOfShape``), checked before each allocation; by default 64 times the
    file's size, at least 1 MiB (see ``flowgrad/io/limits.py``)."""
    from .onnx_import_ops import IMPORTERS
    onnx = _onnx()
    check_max_bytes(max_bytes)
    with open(path, "rb") as f:
        data = f.read()
    try:
        # from bytes: onnx.load would resolve external data relative to a directory
        model = onnx.load_model_from_string(data)
    except Exception as err:   # protobuf's DecodeError and friends
        raise GraphFileError(f"{path}: not a readable ONNX model ({type(err).__name__})") \
            from None
    budget = Budget(path, len(data), max_bytes, OnnxImportError)
    del data
    opset = _opset(model, path, onnx)
    _refuse_external_data(model, path, onnx)
    ctx = Context(onnx, opset, budget)
    graph = model.graph
    g = Graph()
    # every node takes the user's line that called import_onnx, found once here (apply
    # would walk out of the importer's frames for each: deeper ones in a loop body)
    with g, building_at(user_site()):
        _leaves(ctx, g, graph)
        wanted = [o.name for o in graph.output] if outputs is None else list(outputs)
        nodes = graph.node if outputs is None else _needed(graph, wanted)
        _check_op_types(nodes, IMPORTERS)
        for k, n in enumerate(nodes):
            import_node(ctx, g, n, k, IMPORTERS)
        missing = [o for o in wanted if o not in ctx.env]
        if missing:
            raise OnnxImportError(f"{path}: graph outputs {missing} are computed by no node")
        for vi in graph.output:
            if vi.name in wanted:
                check_declared(path, vi, ctx.env[vi.name], OnnxImportError)
        _name_outputs(g, ctx, wanted)
    return g


def _opset(model, path, onnx):
    """The model's standard opset: imported once (two would leave which one counts to
    the reader: onnxruntime takes another than the first), and one the installed onnx
    knows the operators of (their schemas are what each node is checked against)."""
    opsets = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if not opsets:
        raise OnnxImportError(f"{path}: the model imports no standard ONNX opset")
    if len(opsets) > 1:
        raise OnnxImportError(f"{path}: the model imports the standard ONNX opset "
                              f"{len(opsets)} times ({opsets[:4]})")
    latest = onnx.defs.onnx_opset_version()
    if not 1 <= opsets[0] <= latest:
        raise OnnxImportError(f"{path}: opset {opsets[0]} is not an ONNX opset this onnx "
                              f"knows (1 to {latest})")
    return opsets[0]


def _name_outputs(g, ctx, wanted):
    """Name after it each graph output whose node kept another name: an ``Identity`` (as
    flowgrad's export writes for an output named like its node) makes no node, so its
    input's node, named after an inner tensor, is renamed to the output. A node that is
    a leaf (an output that is a graph input or a weight: flowgrad's export writes
    ``p:out = Identity(p)``) or is itself named after another graph output keeps its
    name, and the output gets a node of its own, the identity in value, dtype and
    derivative, so that ``g.by_name`` finds every graph output."""
    for name in wanted:
        node = ctx.env[name]
        if node.name == name:
            continue
        if node.graph is g and node.kind == "op" and node.name not in wanted and \
                g.name_id(name) is None:
            node.name = name
        else:
            _claim(g, _identity_of(node), name)


def _identity_of(node):
    """A new node equal to ``node``: x·1 (exact for every number, −0 and NaN included;
    the weak 1 keeps x's dtype), x == True for a bool."""
    import flowgrad as fg
    return fg.equal(node, True) if node.dtype == np.bool_ else node * 1


def _leaves(ctx, g, graph):
    """Initializers as variables (float) or constants, graph inputs as placeholders."""
    from flowgrad.leaves import constant, placeholder, variable
    inits = {i.name for i in graph.initializer}
    for init in graph.initializer:
        ctx.where = f"initializer {init.name!r}"
        arr = ctx.tensor(init)
        if arr.dtype.kind == "f":
            node = variable(arr, name=init.name, dtype=arr.dtype)
        else:
            node = constant(arr, name=init.name)
            ctx.static[init.name] = node.value     # the constant's own (frozen) copy
        _claim(g, node, init.name)
        ctx.env[init.name] = node
    for vi in graph.input:
        if vi.name in inits:
            continue
        ctx.where = f"graph input {vi.name!r}"
        dtype = ctx.dtype(vi.type.tensor_type.elem_type)
        try:
            ctx.env[vi.name] = placeholder(vi.name, _shape(vi), dtype)
        except (FlowgradError, ValueError, TypeError) as err:
            raise OnnxImportError(f"{ctx.where}: {type(err).__name__}: {err}") from None
        _claim(g, ctx.env[vi.name], vi.name)


def _tensors_of(graph):
    """Every TensorProto a graph holds, its subgraphs' included, with a label; walked
    with a stack (a model may nest graphs deeply)."""
    stack = [graph]
    while stack:
        gr = stack.pop()
        yield from ((t, f"initializer {t.name!r}") for t in gr.initializer)
        for sp in gr.sparse_initializer:
            yield from ((t, f"sparse initializer {sp.values.name!r}")
                        for t in (sp.values, sp.indices))
        for n in gr.node:
            label = f"node {n.name or (n.output[0] if n.output else n.op_type)!r}"
            for a in n.attribute:
                sparse = [*a.sparse_tensors] + ([a.sparse_tensor]
                                                if a.HasField("sparse_tensor") else [])
                tensors = [*a.tensors] + ([a.t] if a.HasField("t") else []) + \
                    [x for sp in sparse for x in (sp.values, sp.indices)]
                yield from ((t, f"{label}, attribute {a.name!r}") for t in tensors)
                stack.extend([a.g] if a.HasField("g") else [])
                stack.extend(a.graphs)


def _refuse_external_data(model, path, onnx):
    """A tensor whose data lies in another file would make the import read that file
    (any file the model names, relative to the working directory): refuse them all,
    before any tensor is read."""
    graphs = [model.graph] + [x for ti in model.training_info
                              for x in (ti.initialization, ti.algorithm)]
    # functions hold nodes whose attributes may hold tensors too
    graphs += [onnx.helper.make_graph(list(f.node), f.name, [], []) for f in model.functions]
    found = [label for gr in graphs for t, label in _tensors_of(gr)
             if t.data_location == onnx.TensorProto.EXTERNAL or len(t.external_data)]
    if found:
        raise OnnxImportError(f"{path}: {', '.join(found[:5])}: tensors that keep their data "
                              "in other files, which import_onnx does not read")


def _check_op_type(n, k, importers):
    """The importer of node ``n``, or an error naming its op type and the node."""
    label = n.name or (n.output[0] if n.output else f"#{k}")
    if n.domain not in ("", "ai.onnx"):
        raise OnnxImportError(f"op type {n.domain}.{n.op_type} of node {label!r} is not in "
                              "the standard ONNX domain")
    fn = importers.get(n.op_type)
    if fn is None:
        raise OnnxImportError(f"op type {n.op_type!r} (node {label!r}) has no flowgrad "
                              "counterpart")
    return fn


def _check_op_types(nodes, importers):
    """Refuse an op type flowgrad lacks before importing any node, subgraphs' included
    (walked with a stack): the error then names that op (an LSTM, say), not a node
    before it that merely could not be built from the unsupported op's surroundings."""
    stack = [list(nodes)]
    while stack:
        for k, n in enumerate(stack.pop()):
            _check_op_type(n, k, importers)
            stack.extend(list(a.g.node) for a in n.attribute if a.HasField("g"))
            stack.extend(list(gr.node) for a in n.attribute for gr in a.graphs)


def import_node(ctx, g, n, k, importers):
    # the NodeProto's fields are read once: each read makes new Python objects
    op_type, outputs = n.op_type, list(n.output)
    ctx.where = f"node {n.name or (outputs[0] if outputs else f'#{k}')!r} ({op_type})"
    fn = importers.get(op_type)
    if fn is None or n.domain not in ("", "ai.onnx"):
        fn = _check_op_type(n, k, importers)
    env = ctx.env
    named = [o for o in outputs if o]
    twice = [o for o in named if o in env]
    if twice or len(set(named)) < len(named):
        # ONNX tensors are assigned once; a second producer would rename the first
        raise OnnxImportError(f"{ctx.where}: its output {(twice or named)[0]!r} "
                              "is already produced by an input, initializer or node")
    inputs = list(n.input)
    ins = []
    for name in inputs:
        if name and name not in env:
            raise OnnxImportError(f"{ctx.where}: its input {name!r} is computed by no "
                                  "earlier node")
        ins.append(ctx.node_of(name) if name else None)
    attributes = list(n.attribute)
    plan, bound = _check_schema(ctx, n, (inputs, ins, outputs, attributes))
    attrs = {a.name: ctx.onnx.helper.get_attribute_value(a) for a in attributes}
    first = len(g)
    try:
        outs = fn(ctx, n, ins, attrs)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        _fold_static(ctx, n, inputs, outputs, outs)
    except OnnxImportError:
        raise
    except (FlowgradError, ValueError, TypeError, IndexError, KeyError, ArithmeticError,
            AttributeError) as err:
        raise OnnxImportError(f"{ctx.where}: {type(err).__name__}: {err}") from None
    _check_results(ctx, outputs, plan, bound, outs)
    for name, node in zip(outputs, outs):
        if not name:
            continue
        env[name] = node
        key = (id(node.graph), node.id)
        if node.graph is g and node.id >= first and key not in ctx.claimed:
            _claim(g, node, name)            # made here: take its name
            ctx.claimed.add(key)


def _check_results(ctx, outputs, plan, bound, outs):
    """What the importer built for a node of ``outputs`` (names) against them: as many
    (an output left out only where the operator's is optional, Dropout's mask: a Scan
    given more outputs than its body returns is refused), of the types ONNX gives them
    (an importer whose flowgrad op gives another type than ONNX's is caught here)."""
    if len(outs) != len(outputs) and (len(outs) > len(outputs) or not all(
            name == "" and optional_output(plan, k)
            for k, name in enumerate(outputs[len(outs):], len(outs)))):
        raise OnnxImportError(f"{ctx.where}: it has {len(outputs)} outputs, but computes "
                              f"{len(outs)}")
    problem = check_types(plan, outputs,
                          [node if name else None for name, node in zip(outputs, outs)],
                          "output", bound)
    if problem:
        raise OnnxImportError(f"{ctx.where}: {problem}")


def _check_schema(ctx, n, fields):
    """Node ``n`` against its operator's schema at the model's opset (onnx_import_check);
    ``fields``: its input names, input nodes, output names and AttributeProtos. Returns
    (the operator's Plan, the type parameters its inputs bound), for the outputs' check."""
    inputs, ins, outputs, attributes = fields
    found = schema_of(n.op_type, ctx.opset, n.domain)
    if found is None:
        later = schema_of(n.op_type, 1 << 30, n.domain)
        raise OnnxImportError(f"{ctx.where}: op type {n.op_type!r} is not defined at "
                              f"opset {ctx.opset}" + (f" (only from opset {later[1]} on)"
                                                      if later is not None else ""))
    plan, bound = found[0], {}
    problem = check_counts(plan, len(inputs), len(outputs)) or \
        check_attributes(plan.name, attributes, plan) or \
        check_types(plan, inputs, ins, "input", bound)
    if problem:
        raise OnnxImportError(f"{ctx.where}: {problem}")
    return plan, bound


#: ops whose value is not a function of their inputs' values alone (a loop's body, a
#: random draw): never folded
_NOT_FOLDED = {"Scan", "Loop", "If", "RandomNormal", "RandomUniform", "RandomNormalLike",
               "RandomUniformLike", "Multinomial", "Bernoulli"}


def _fold_static(ctx, n, inputs, outputs, outs):
    """An integer node whose inputs are all known at import time is known too: its value
    is computed now (charged to the budget first), so that shape, pads and axes operands
    that an exporter computes (torch writes Concat, Cast, Slice … chains of constants)
    count as constants. Float results stay nodes (their inputs may be weights)."""
    if ctx.depth or not any(inputs) or n.op_type in _NOT_FOLDED:   # (a body runs later)
        return
    static = ctx.static
    if not all(i in static for i in inputs if i):
        return
    for name, node in zip(outputs, outs):
        if not name or name in static or node.dtype.kind not in "iub" or \
                None in node.shape:
            continue
        ctx.allocate(list(node.shape), node.dtype, "its value known at import time")
        static[name] = np.asarray(run(node, {}))
