"""What a graph file may say about an op node: how many inputs, which attributes, of
what types. ``load_graph`` checks a record against this before it rebuilds the node,
so a malformed file is a ``GraphFileError`` naming the node, never a raw error from
deep inside an op (or, worse, a graph that loads and then fails to compile).

The arity and the attribute names are read off the op registry, not listed by hand:
an op's ``forward(xp, *inputs, **attrs)`` names its inputs then its attributes, and
its reverse rules (``Op.vjp_rule``, one per input) say where the inputs end. The
attribute *types* are the one declared table here, ``ATTR_CHECKS`` (by attribute
name) with ``OP_ATTR_CHECKS`` for an op whose attribute of a common name differs.
An op added later needs a line here when it brings an attribute name not yet listed;
until then an attribute with no check must be plain data (numbers, strings, None and
tuples or lists of them), which is what a user's own op registered with ``fg.ops.Op``
may save, and the op's shape inference is its only other check.
An op whose public function refuses attribute values of the right type (a pool size of
0, a ddof of −1) declares that check as ``Op.check_attrs``, run here on every record: a
file gives no attribute the function would not have given.
``INPUT_AXES`` and ``AGREE`` hold what an op's builder guarantees about attributes
relative to the inputs (axes in range, a flag matching a dtype), which the op's own
shape inference does not check again; an op whose builder guarantees more adds a line.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass

import numpy as np

from flowgrad.errors import DifferentiationError, FlowgradError, GraphFileError

#: the most dimensions an axis number may address, and the widest int an attribute holds
MAX_AXIS = 64
INT_LIMIT = 2 ** 63
#: how many reverse rules to probe before calling an op's inputs unbounded
_PROBE = 64


@dataclass(frozen=True)
class OpSignature:
    min_inputs: int
    max_inputs: int | None          # None: any number (concatenate, getitem's tensors)
    required: frozenset             # attribute names every record must give
    optional: frozenset             # attribute names a record may give
    #: an op with one reverse rule for every argument and fixed parameters: where its
    #: inputs end is known only from the record (its attributes are the parameters after)
    params: tuple = ()

    def attributes(self, n_inputs):
        """(required, optional) attribute names for a record with ``n_inputs`` inputs."""
        if not self.params:
            return self.required, self.optional
        rest = self.params[n_inputs:]
        return (frozenset(p.name for p in rest if p.default is p.empty),
                frozenset(p.name for p in rest if p.default is not p.empty))


def _rules(op, start) -> int | None:
    """The number of inputs ``op`` has reverse rules for, probing from ``start``;
    None if every probe has one (a variadic rule)."""
    for k in range(start, _PROBE):
        try:
            op.vjp_rule(k)
        except DifferentiationError:
            return k
    return None


@functools.lru_cache(maxsize=None)
def signature(op) -> OpSignature:
    """``op``'s arity and attribute names, read off its forward and its rules."""
    params = list(inspect.signature(op.forward).parameters.values())[1:]   # after xp
    star = [k for k, p in enumerate(params) if p.kind is p.VAR_POSITIONAL]
    if star:
        fixed = params[:star[0]]
        attrs = params[star[0] + 1:]
        most = _rules(op, len(fixed))
        least = len(fixed)
    else:
        most = _rules(op, 0)
        if most is None:           # one rule for all: the record says where inputs end
            return OpSignature(0, len(params), frozenset(), frozenset(), tuple(params))
        most = min(most, len(params))
        fixed, attrs = params[:most], params[most:]
        least = sum(1 for p in fixed if p.default is p.empty)
    return OpSignature(least, most,
                       frozenset(p.name for p in attrs if p.default is p.empty),
                       frozenset(p.name for p in attrs if p.default is not p.empty))


def check_record(op, ins, attrs, where):
    """Refuse a record whose inputs (nodes) or attribute names and types do not fit."""
    sig = signature(op)
    n_inputs = len(ins)
    if n_inputs < sig.min_inputs or (sig.max_inputs is not None and n_inputs > sig.max_inputs):
        want = (f"at least {sig.min_inputs}" if sig.max_inputs is None else
                f"{sig.min_inputs}" if sig.min_inputs == sig.max_inputs else
                f"{sig.min_inputs} to {sig.max_inputs}")
        raise GraphFileError(f"{where}: {op.name} takes {want} inputs, the file gives "
                             f"{n_inputs}")
    names = set(attrs)
    required, optional = sig.attributes(n_inputs)
    if not required <= names or not names <= required | optional:
        raise GraphFileError(f"{where}: {op.name} takes the attributes "
                             f"{sorted(required | optional)}, the file gives "
                             f"{sorted(names)}")
    for name, value in attrs.items():
        check = OP_ATTR_CHECKS.get((op.name, name), ATTR_CHECKS.get(name, _plain_data))
        if not check(value):
            raise GraphFileError(f"{where}: attribute {name!r} of {op.name} cannot be "
                                 f"{value!r:.80}")
    _check_values(op, ins, attrs, where)
    ndim = len(ins[0].shape) if ins else 0
    for name in INPUT_AXES.get(op.name, ()):
        if name not in attrs:   # an optional axis left out: the op's default
            continue
        axes = attrs[name] if type(attrs[name]) is tuple else (attrs[name],)
        # the builders hand ops their axes counted from 0, each once
        if not all(a is None or 0 <= a < ndim for a in axes) or len(set(axes)) < len(axes):
            raise GraphFileError(f"{where}: attribute {name!r} of {op.name} is {attrs[name]!r} "
                                 f"for an input of {ndim} dimensions")
    agree = AGREE.get(op.name)
    if agree is not None and not agree(ins, attrs):
        raise GraphFileError(f"{where}: the attributes of {op.name} disagree with its "
                             f"inputs' dtypes or shapes")


def _check_values(op, ins, attrs, where):
    """The op's own attribute validator (``Op.check_attrs``), the one its public function
    runs: what the builder refuses (a pool size of 0, a stride of True) is refused here."""
    if op.check_attrs is None:
        return
    try:
        op.check_attrs(*ins, **attrs)
    except FlowgradError as e:
        detail = str(e).split("\n")[0]   # (not the user's line: the file gave the value)
        raise GraphFileError(f"{where}: an attribute of {op.name} is refused: {detail}") \
            from None


# -- the checks: attribute value -> bool --------------------------------------------

def _int(v, lo=-INT_LIMIT, hi=INT_LIMIT - 1):
    return type(v) is int and lo <= v <= hi


def _axis_int(v):
    return _int(v, -MAX_AXIS, MAX_AXIS - 1)


def _axes(v):
    return type(v) is tuple and len(v) <= MAX_AXIS and all(_axis_int(a) for a in v)


def _axis_or_axes(v):
    return v is None or _axis_int(v) or _axes(v)


def _shape(v):
    return type(v) is tuple and len(v) <= MAX_AXIS and \
        all(s is None or _int(s, -1, 2 ** 62) for s in v)


def _plain_data(v):
    """Numbers (ints within int64), strings, None, and tuples/lists of them, nested a
    little: an attribute of an op this table does not know yet."""
    stack, seen = [(v, 0)], 0
    while stack:
        x, depth = stack.pop()
        seen += 1
        if seen > 10_000 or depth > 8:
            return False
        if type(x) in (tuple, list):
            stack.extend((y, depth + 1) for y in x)
        elif not (x is None or type(x) in (bool, float, str) or _int(x)):
            return False
    return True


def _bool(v):
    return type(v) is bool


def _str(v):
    return type(v) is str and len(v) <= 64


def _custom_function(v):
    """A custom function the registry gave back (io/custom_io's decoder): never a file's."""
    from flowgrad.custom import CustomFunction, registered
    return isinstance(v, CustomFunction) and registered(v.name) is v


def _opt_int(v):
    return v is None or _int(v)


def _index(v):
    """getitem / scatter_add's index: a tuple of items, whose "t" items number the
    tensor inputs after the indexed ones, each exactly once and in order."""
    if type(v) is not tuple or len(v) > MAX_AXIS:
        return False
    tensors = []
    for it in v:
        if type(it) is not tuple or not it or it[0] not in _ITEMS:
            return False
        if not _ITEMS[it[0]](it[1:]):
            return False
        if it[0] == "t":
            tensors.append(it[1])
    return tensors == list(range(len(tensors)))


def _block_of(offsets, index):
    """``offsets`` is a concat_offsets node and block ``index`` exists (the offsets hold
    one more entry than there are blocks)."""
    return offsets.op is not None and offsets.op.name == "concat_offsets" and \
        index < offsets.shape[0] - 1


def _tensor_items(index):
    return sum(1 for it in index if it[0] == "t")


def _int_array(args):
    if len(args) != 1 or not isinstance(args[0], np.ndarray) or args[0].dtype.kind not in "iu":
        return False
    args[0].setflags(write=False)     # as indexing freezes the arrays it keeps
    return True


_ITEMS = {"i": lambda a: len(a) == 1 and _int(a[0]),
          "s": lambda a: len(a) == 3 and all(_opt_int(x) for x in a) and a[2] != 0,
          "n": lambda a: a == (), "e": lambda a: a == (),
          "a": _int_array,
          "t": lambda a: len(a) == 1 and _int(a[0], 0, MAX_AXIS)}


#: attribute name -> check, for every attribute of the registered ops
ATTR_CHECKS = {
    "axis": _axis_or_axes, "axes": lambda v: v is None or _axes(v),
    "keepdims": _bool, "labels": _bool, "shape": _shape,
    "reduction": lambda v: v in ("mean", "sum", "none"),
    "index": _index, "kind": _str,
    # diagonal offsets: numpy's eye/tri/trace take a C int
    "k": lambda v: _int(v, -2 ** 31 + 1, 2 ** 31 - 1),
    "offset": lambda v: _int(v, -2 ** 31 + 1, 2 ** 31 - 1),
    "axis1": _axis_int, "axis2": _axis_int,
    "depth": lambda v: _int(v, 0, 2 ** 62),
    "length": lambda v: v is None or _int(v, 0, 2 ** 62),
    "total": lambda v: v is None or _int(v, 0, 2 ** 62),
    # random draws (their objects are built by objects.decoder, which checks them)
    "dtype": lambda v: isinstance(v, np.dtype) and v.kind in "biuf",
    "dist": _str,
    "params": lambda v: type(v) is tuple and all(type(p) in (int, float) for p in v),
    "stream": lambda v: _is_stream(v),
    "body": lambda v: _is_body(v),
}

#: (op name, attribute name) -> check, where an op's attribute differs from the common one
OP_ATTR_CHECKS = {
    ("concat_part", "index"): lambda v: _int(v, 0, 2 ** 62),
    ("custom_input", "index"): lambda v: _int(v, 0, 2 ** 62),   # issue 21: input k of a call
    ("custom_call", "fn"): _custom_function,   # decoded from {"$custom": name} (custom_io)
    ("custom_call", "lifted"): lambda v: _int(v, 0, 2 ** 62),
    ("concat_unpart", "index"): lambda v: _int(v, 0, 2 ** 62),
    ("concatenate", "axis"): _axis_int, ("concat_offsets", "axis"): _axis_int,
    ("concat_part", "axis"): _axis_int, ("concat_unpart", "axis"): _axis_int,
    ("softmax_cross_entropy", "axis"): _axis_int, ("one_hot_like", "axis"): _axis_int,
    ("mask", "kind"): lambda v: v in ("tri", "eye"),
    ("one_hot", "axis"): _axis_int,
    ("loop", "spec"): lambda v: _loop_io().is_spec(v),   # issue 20: decoded by loop_io
    ("loop_out", "index"): lambda v: _int(v, 0, 2 ** 62),
    # astype to a complex dtype: fg.astype's, and a complex input's adjoint of real terms
    ("astype", "dtype"): lambda v: isinstance(v, np.dtype) and v.kind in "biufc",
}
for _dist, _n in (("normal", 2), ("uniform", 2), ("bernoulli", 1)):
    OP_ATTR_CHECKS.update({
        (f"random_{_dist}", "shape"): lambda v: v is None or _random_shape(v),
        (f"random_{_dist}", "dist"): lambda v, d=_dist: v == d,
        (f"random_{_dist}", "params"): lambda v, k=_n: type(v) is tuple and len(v) == k
        and all(type(p) in (int, float) for p in v)})


#: op name -> its attributes that number axes of input 0 (0 … ndim−1, none twice), as
#: the op's builder makes them; a file rebuilds the op without its builder
INPUT_AXES = {
    "sum": ("axis",), "mean": ("axis",), "max": ("axis",), "logsumexp": ("axis",),
    "norm2": ("axis",), "max_weights": ("axis",), "reduced_size": ("axis",),
    "batch_norm_count": ("axis",),
    "argmax": ("axis",), "softmax_cross_entropy": ("axis",), "squeeze": ("axis",),
    "concatenate": ("axis",), "concat_offsets": ("axis",), "concat_part": ("axis",),
    "concat_unpart": ("axis",),
    "mask": ("axis1", "axis2"), "trace": ("axis1", "axis2"),
}

#: op name -> fn(input nodes, attrs) -> bool, for what the builder derives from the inputs
AGREE = {
    "softmax_cross_entropy": lambda ins, a: a["labels"] == (ins[1].dtype.kind in "iu"),
    "transpose": lambda ins, a: a["axes"] is None or
    sorted(x % max(len(ins[0].shape), 1) for x in a["axes"]) == list(range(len(ins[0].shape))),
    "getitem": lambda ins, a: _tensor_items(a["index"]) == len(ins) - 1,
    "scatter_add": lambda ins, a: _tensor_items(a["index"]) == len(ins) - 2,
    "concat_part": lambda ins, a: _block_of(ins[1], a["index"]),
    "concat_unpart": lambda ins, a: _block_of(ins[1], a["index"]),
    "mask": lambda ins, a: a["axis1"] != a["axis2"],
    "trace": lambda ins, a: a["axis1"] != a["axis2"],
    "basis_map": lambda ins, a: _body_agrees(ins, a["body"]),
    "loop": lambda ins, a: _loop_io().spec_agrees(ins, a["spec"]),
    "loop_out": lambda ins, a: _loop_io().out_agrees(ins, a["index"]),
    "custom_call": lambda ins, a: _lifted_agrees(ins, a),
}


def _lifted_agrees(ins, attrs):
    """A call's ``lifted`` inputs (the weights a remat block reads, flowgrad/remat.py)
    are among its inputs after the forward's output, and only fg.remat's rule lifts: a
    user's rule takes exactly its explicit inputs (a count past them made the rule
    build ranges of that length: fg.grad hung on a lifted of 10⁹)."""
    lifted = attrs.get("lifted", 0)
    return lifted == 0 or (lifted <= len(ins) - 1 and
                           getattr(attrs["fn"], "builtin_rule", False))


def _body_agrees(ins, body):
    """A basis_map's inputs bind its body's placeholders as _make_map binds them (params
    whole, sliced ones with the basis axes in front, then the shape reference when the
    basis length is a run-time one), and the body reads no other placeholder."""
    from flowgrad.autodiff import ancestors
    k, m, nb = len(body.params), len(body.sliced), len(body.basis.shape)
    if len(ins) != k + m + (1 if body.dynamic else 0):
        return False
    if any(p.shape != x.shape or p.dtype != x.dtype for p, x in zip(body.params, ins)):
        return False
    if any(x.shape[nb:] != s.shape or len(x.shape) != nb + len(s.shape)
           for s, x in zip(body.sliced, ins[k:k + m])):
        return False
    bound = {body.basis.id, *(p.id for p in body.params), *(s.id for s in body.sliced)}
    data = body.out.graph.nx.nodes
    return all(data[nid]["kind"] != "placeholder" or nid in bound
               for nid in ancestors([body.out]))


def _random_shape(v):
    return type(v) is tuple and len(v) <= MAX_AXIS and \
        all(s is None or _int(s, 0, 2 ** 62) for s in v)


def _loop_io():
    from . import loop_io
    return loop_io


def _is_stream(v):
    from .objects import is_stream
    return is_stream(v)


def _is_body(v):
    from .objects import is_body
    return is_body(v)
