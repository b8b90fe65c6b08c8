"""``fg.export_onnx(outputs, path)``: a flowgrad graph as an ONNX model.

Placeholders become graph inputs (a run-time length is a symbolic dimension named
``<placeholder>.shape[<axis>]``), variables become initializers, constants become
``Constant`` nodes (so an importer does not take them for weights), and every op
node becomes the ONNX nodes that ``onnx_ops.CONVERTERS`` writes for it, the last
of them carrying the flowgrad node's name (what Netron shows). Derivative nodes
are nodes, so a loss exported with its gradients is a gradient program.

An op without a converter is exported through ``op.decompose(*inputs, **attrs)``
when it has one: the decomposition is built in a scratch graph over placeholders
standing for the inputs and exported in its place. Otherwise ``OnnxExportError``
names the op and the node.

Python scalars in expressions are weakly typed in flowgrad (``0.5 * x`` stays
float32); ONNX has no such thing, so each use of one is written as a constant of
the dtype that use computes in, and other operands are cast where flowgrad
promotes them.
"""
from __future__ import annotations

import contextlib
import pathlib

import numpy as np

from flowgrad.errors import FlowgradError, GraphFileError
from flowgrad.graph import Graph, Node, same_graph
from flowgrad.userfiles import write_atomically

from .onnx_pin import Pinning, pin

OPSET = 18


class OnnxExportError(GraphFileError):
    """A graph that cannot be written as ONNX: an op without an ONNX counterpart."""


def _onnx():
    try:
        import onnx
    except ImportError:   # pragma: no cover - the [onnx] extra is installed by make test
        raise ImportError("ONNX export needs the onnx package: pip install 'flowgrad[onnx]'") \
            from None
    return onnx


class Final(str):
    """A tensor name a converter returns already named after its node (a loop's
    result, flowgrad/io/onnx_loops.py): used as it is, with no Identity to rename it."""


class Emitter:
    """Collects ONNX nodes, initializers and inputs; maps flowgrad nodes to tensor names."""

    def __init__(self, onnx):
        self.onnx = onnx
        self.helper = onnx.helper
        self.nodes, self.initializers, self.inputs = [], [], []
        self.used: set[str] = set()
        # casts and typed weak scalars, shared by every use: key -> tensor name, and back
        self._shared: dict = {}
        self._shared_key: dict = {}
        self.final: set[str] = set()   # tensor names that hold a flowgrad node's value
        self.prefix = ""           # "name/" while exporting a decomposition
        self.node = None           # the flowgrad node being converted
        self.tensor = {}           # flowgrad node id -> tensor name (one graph at a time)
        self.pinning = Pinning()   # export_onnx(feed=...): pinned placeholders, folded wheres
        self.opset = OPSET
        # ONNX node name prefix -> the flowgrad node it computes (a user's node: a
        # decomposition's own nodes are not entered), for errors found in the model
        self.origin: dict = {}
        self.decomposing = 0

    # -- names --------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.used:
            name, k = f"{base}_{k}", k + 1
        self.used.add(name)
        return name

    @contextlib.contextmanager
    def subgraph(self, tag: str):
        """While a subgraph (a loop's body, flowgrad/io/onnx_loops.py) is written: a node
        list and shared casts and scalars of its own (a tensor made inside is invisible
        outside), the enclosing ones still readable, names prefixed ``tag/``; all
        restored after."""
        saved = (self.nodes, self._shared, self._shared_key, self.prefix, self.node)
        self.nodes = []
        self._shared, self._shared_key = dict(self._shared), dict(self._shared_key)
        self.prefix = f"{tag}/"
        try:
            yield self
        finally:
            self.nodes, self._shared, self._shared_key, self.prefix, self.node = saved

    def elem(self, dtype) -> int:
        return self.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))

    # -- writing nodes ---------------------------------------------------------------
    def op(self, op_type: str, inputs, **attrs) -> str:
        """Append one ONNX node; returns its (single) output's name."""
        base = f"{self.prefix}{self.node.name}" if self.node is not None else "fg"
        out = self.fresh(f"{base}/{op_type}")
        self.nodes.append(self.helper.make_node(op_type, list(inputs), [out], name=out,
                                                **attrs))
        return out

    def typed(self, op_type: str, inputs, dtype, kind: str, data=None, **attrs) -> str:
        """``op(op_type, inputs)`` whose inputs ``data`` (default: all) and result are of
        ``dtype``, computed in the wider dtype onnx_types.compute_dtype gives where the
        operator (or onnxruntime) lacks ``dtype``, and cast back: exact (see there)."""
        from .onnx_types import compute_dtype
        data = range(len(inputs)) if data is None else data
        wide = compute_dtype(op_type, dtype, kind, self.opset, min(data))
        if wide == np.dtype(dtype):
            return self.op(op_type, inputs, **attrs)
        ins = [self.cast(x, dtype, wide) if k in data else x for k, x in enumerate(inputs)]
        return self.op("Cast", [self.op(op_type, ins, **attrs)], to=self.elem(dtype))

    def const(self, value, dtype=None) -> str:
        arr = np.asarray(value, dtype=dtype)
        base = f"{self.prefix}{self.node.name}" if self.node is not None else "fg"
        out = self.fresh(f"{base}/const")
        self.nodes.append(self.helper.make_node(
            "Constant", [], [out], name=out,
            value=self.onnx.numpy_helper.from_array(np.array(arr, order="C"), out)))
        return out

    def ints(self, values) -> str:
        return self.const(np.asarray(list(values), dtype=np.int64))

    def cast(self, name: str, src, dst) -> str:
        if np.dtype(src) == np.dtype(dst):
            return name
        return self._share(("cast", name, np.dtype(dst)),
                           lambda: self.op("Cast", [name], to=self.elem(dst)))

    def _share(self, key, make):
        if key not in self._shared:
            self._shared[key] = make()
            self._shared_key[self._shared[key]] = key
        return self._shared[key]

    # -- operands of the node being converted --------------------------------------------
    def arg(self, k: int, dtype=None) -> str:
        """Input ``k`` of the current node as a tensor of ``dtype`` (default: the node's)."""
        src = self.node.inputs[k]
        dtype = np.dtype(self.node.dtype if dtype is None else dtype)
        if src.weak:
            value = src.more["value"]   # the constant depends on value and dtype only
            return self._share(("weak", type(value).__name__, repr(value), dtype),
                               lambda: self.const(value, dtype))
        return self.cast(self.tensor[src.id], src.dtype, dtype)

    def raw(self, k: int) -> str:
        """Input ``k`` in its own dtype (weak scalars in theirs)."""
        return self.arg(k, self.node.inputs[k].dtype)

    def shape_of(self, k: int) -> str:
        return self.op("Shape", [self.raw(k)])

    def dim(self, k: int, axis: int) -> str:
        """Length of input k along ``axis`` as a 1-element int64 tensor (static if known)."""
        s = self.node.inputs[k].shape[axis]
        if s is not None:
            return self.ints([s])
        return self.op("Gather", [self.shape_of(k), self.ints([axis])], axis=0)


# -- the walk ---------------------------------------------------------------------------

def _outputs(outputs):
    outs = [outputs] if isinstance(outputs, Node) else list(outputs)
    if not outs or not all(isinstance(o, Node) for o in outs):
        raise TypeError("export_onnx takes a node or a non-empty list of nodes")
    same_graph(outs)
    return outs


def emit_graph(e: Emitter, graph: Graph, order, bound: dict) -> dict:
    """Convert the nodes ``order`` of ``graph``; ``bound`` maps placeholder ids to tensor
    names already in the model (a decomposition's inputs). Returns {node id: tensor name}.
    Loops, never recurses, over the graph; only a decomposition or a loop's body (a
    subgraph, onnx_loops) inside one nests, as deep as the user's code nested them."""
    from .onnx_ops import CONVERTERS
    data = graph.nx.nodes
    saved, e.tensor = e.tensor, dict(bound)
    # a decomposition's scratch graph has ids of its own: pins belong to the model's graph
    pinned = e.pinning if not e.prefix else Pinning()
    try:
        for nid in order:
            n = graph.node(nid)
            kind = data[nid]["kind"]
            if nid in bound:
                continue
            _refuse_complex(e, n)
            if nid in pinned.alias:        # a where folded onto the branch it takes
                taken = pinned.alias[nid]
                if taken in e.tensor:
                    e.tensor[nid] = e.tensor[taken]
                    continue
            if kind == "placeholder" and nid in pinned.values:
                e.node = n
                e.tensor[nid] = _rename_last(e, e.const(pinned.values[nid]), n)
            elif kind == "placeholder":
                _emit_input(e, n)
            elif kind == "variable":
                name = e.fresh(e.prefix + n.name)
                e.initializers.append(e.onnx.numpy_helper.from_array(
                    np.array(_host(n.value), order="C"), name))
                e.tensor[nid] = name
            elif kind == "constant":
                if not data[nid]["weak"]:   # weak scalars are written per use, typed
                    e.node = n
                    e.tensor[nid] = _rename_last(e, e.const(_host(n.value)), n)
            else:
                e.node = n
                if not e.decomposing:
                    e.origin[e.prefix + n.name] = n
                conv = CONVERTERS.get(n.op.name)
                out = conv(e, **n.attrs) if conv is not None else _decomposed(e, n)
                # a loop's converter gives a tuple: one tensor per result (onnx_loops)
                e.tensor[nid] = out if isinstance(out, (tuple, Final)) else \
                    _rename_last(e, out, n)
        return e.tensor
    finally:
        e.tensor = saved


def _host(value):
    from flowgrad.backends import to_numpy
    return np.asarray(to_numpy(value))


def _refuse_complex(e: Emitter, n: Node):
    """ONNX (opset 18) has no arithmetic on complex tensors: Add, Mul, Exp, Cast … take
    real types only, and onnx.checker does not look, so such a model would be written
    and fail in the runtime that loads it. Refuse it here, naming the node and its line
    (a weak ``1j`` too: a complex64 ``z * 1j`` is refused at ``z``, a float ``x * 1j`` at
    the ``1j``)."""
    dtype = n.dtype
    if isinstance(dtype, np.dtype) and dtype.kind == "c":
        where = f", built at {n.where}" if n.where else ""
        inside = f" inside {e.prefix[:-1]!r}" if e.prefix else ""
        what = f"the Python complex {n.value!r} (node {n.name!r}" if n.weak else \
            f"node {n.name!r} ({dtype}"
        raise OnnxExportError(f"{what}{inside}{where}) is not exported: ONNX has no "
                              "operators on complex tensors (opset 18); write the model "
                              "in real arithmetic on real and imaginary parts")


def _refuse_type_gaps(e: Emitter, model, opset: int):
    """onnx.checker does not check operand types, and a model with an operator on a type
    it lacks (MatMul on int8, Add on bool, onnxruntime's Where on int16 …) would be
    written and then fail in the runtime that loads it: refuse it here, naming the
    flowgrad node that wrote that operator and its line (onnx_types)."""
    from .onnx_types import first_type_gap
    gap = first_type_gap(model, opset)
    if gap is None:
        return
    onnx_node, dtype, tensor = gap
    name = onnx_node.name or (onnx_node.output[0] if onnx_node.output else "")
    keys = [k for k in e.origin if name == k or name.startswith(k + "/")]
    n = e.origin[max(keys, key=len)] if keys else None
    what = f"ONNX node {name!r}" if n is None else f"node {n.name!r} (op {n.op.name!r}" + \
        (f", built at {n.where})" if n.where else ")")
    raise OnnxExportError(f"{what} is not exported in {dtype}: its ONNX form uses "
                          f"{onnx_node.op_type} (node {name!r}) on a {dtype} tensor "
                          f"{tensor!r}, which ONNX (opset {opset}) or onnxruntime's CPU "
                          f"kernels do not accept; compute it in another dtype "
                          "(fg.astype) before exporting")


def _emit_input(e: Emitter, n: Node):
    if e.prefix:
        raise OnnxExportError(f"a decomposition of {e.prefix[:-1]!r} has a placeholder "
                              f"{n.name!r} of its own")
    name = e.fresh(n.name)
    dims = [s if s is not None else f"{n.name}.shape[{a}]" for a, s in enumerate(n.shape)]
    e.inputs.append(e.helper.make_tensor_value_info(name, e.elem(n.dtype), dims))
    e.tensor[n.id] = name


def _rename_last(e: Emitter, out: str, n: Node) -> str:
    """Give the node that computed ``out`` the flowgrad node's name (and output name);
    if ``out`` was computed earlier (an identity), add an Identity so Netron shows it."""
    want = e.fresh(e.prefix + n.name)
    last = e.nodes[-1] if e.nodes else None
    if last is not None and list(last.output) == [out] and out not in e.final:
        last.output[0] = want
        last.name = want
        e.used.discard(out)
        key = e._shared_key.pop(out, None)
        if key is not None:            # a shared cast or scalar now carries this node's name
            e._shared.pop(key)
    else:
        e.nodes.append(e.helper.make_node("Identity", [out], [want], name=want))
    e.final.add(want)
    return want


def _decomposed(e: Emitter, n: Node) -> str:
    """Export ``n`` through ``n.op.decompose`` built in a scratch graph, or refuse."""
    from flowgrad.autodiff import ancestors
    from flowgrad.leaves import constant_in, placeholder
    from .onnx_ops import REFUSED
    if n.op.name in REFUSED:
        raise OnnxExportError(f"op {n.op.name!r} (node {n.name!r}) is not exported: "
                              f"{REFUSED[n.op.name]}")
    decompose = n.op.decompose
    if decompose is None:
        raise OnnxExportError(
            f"op {n.op.name!r} (node {n.name!r}) has no ONNX counterpart and no "
            "decomposition into ops that have one")
    scratch, bound = Graph(), {}
    with scratch:
        ins = []
        for k, src in enumerate(n.inputs):
            if src.weak:
                ins.append(constant_in(scratch, src.more["value"]))
            else:
                p = placeholder(f"in{k}", src.shape, src.dtype)
                bound[p.id] = e.tensor[src.id]
                ins.append(p)
        try:
            out = decompose(*ins, **n.attrs)
        except FlowgradError as err:
            raise OnnxExportError(f"decomposing {n.op.name!r} (node {n.name!r}) failed: "
                                  f"{err}") from None
    if out.shape != n.shape or out.dtype != n.dtype:
        raise OnnxExportError(f"the decomposition of {n.op.name!r} (node {n.name!r}) gives "
                              f"shape {out.shape} {out.dtype}, not {n.shape} {n.dtype}")
    node, prefix = e.node, e.prefix
    e.prefix = f"{prefix}{n.name}/"
    e.decomposing += 1
    try:
        table = emit_graph(e, scratch, ancestors([out]), bound)
        if out.weak:
            e.node = out
            return e.const(out.more["value"], out.dtype)
        return table[out.id]
    finally:
        e.node, e.prefix = node, prefix
        e.decomposing -= 1


def export_onnx(outputs, path, *, opset: int = OPSET, check: bool = True,
                feed=None) -> pathlib.Path:
    """Write ``outputs`` (a node or a list, e.g. ``[loss, *fg.grad(loss, params)]``) and
    everything they depend on to ``path`` as an ONNX model; graph outputs are named
    after the nodes. ``check`` runs onnx.checker on the result. Returns the path.

    ``feed`` ({placeholder or name: value}) pins placeholders to constants in the file,
    and a ``where`` on a pinned 0-d condition keeps only its taken branch: ``feed={training:
    False}`` exports a model with dropout or batch norm in inference mode."""
    from flowgrad.autodiff import ancestors
    onnx = _onnx()
    outs = _outputs(outputs)
    graph = outs[0].graph
    e = Emitter(onnx)
    e.opset = opset
    e.pinning = pin(outs, ancestors(outs), feed)
    e.tensor = emit_graph(e, graph, e.pinning.order, {})
    for nid, taken in e.pinning.alias.items():   # an output that is a folded where
        if taken in e.tensor:
            e.tensor.setdefault(nid, e.tensor[taken])
    out_infos = []
    for o in outs:
        name = e.tensor.get(o.id)
        if name is None:            # a weak Python scalar, written per use: write it here
            e.node = o
            name = e.const(o.more["value"], o.dtype)
        if name in [i.name for i in e.inputs] + [i.name for i in e.initializers] or \
                name in [v.name for v in out_infos]:
            e.node = o
            alias = e.fresh(f"{o.name}:out")
            e.nodes.append(e.helper.make_node("Identity", [name], [alias], name=alias))
            name = alias
        dims = [s if s is not None else None for s in o.shape]
        out_infos.append(e.helper.make_tensor_value_info(name, e.elem(o.dtype), dims))
    g = e.helper.make_graph(e.nodes, "flowgrad", e.inputs, out_infos, e.initializers)
    model = e.helper.make_model(g, opset_imports=[e.helper.make_opsetid("", opset)],
                                producer_name="flowgrad")
    if check:
        onnx.checker.check_model(model)
    _refuse_type_gaps(e, model, opset)
    path = pathlib.Path(path)
    data = model.SerializeToString()
    with write_atomically(path) as f:     # the user's umask applies; all or nothing
        f.write(data)
    return path
