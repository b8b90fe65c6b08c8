"""What the ONNX standard says a node is, checked before flowgrad imports it.

The importers read a node's attributes and inputs loosely (an int where a bool is
meant, a missing attribute's default), so a malformed node could import as *some*
graph: an ``Add`` of a float64 and a float32 promoted as numpy would, an attribute the
operator does not have ignored, ``keepdims=2`` read as true. onnxruntime refuses such a
model; flowgrad must not build a graph from it that no runtime would agree with. Each
node is therefore held to its operator's schema at the model's opset (``onnx.defs``,
the checker's own tables), and every violation is an ``OnnxImportError`` naming the node:

* the operator exists at the model's opset (``Gelu`` at opset 18 does not);
* every attribute is one the operator has, given once, of the declared type, and every
  required one is given;
* the number of inputs and outputs is within the schema's bounds, and a required input
  is not left out;
* input and output element types fit the schema's type constraints, and every tensor
  bound to one type parameter (``T`` of ``Add``) has the same type: flowgrad computes
  with numpy's promotion, ONNX has none. The outputs are checked after the node is
  built, so an importer whose flowgrad op gives another dtype than ONNX's is caught
  here, not by a user comparing numbers.

Graph outputs (and a loop body's) are held to their declared element type the same way
(``check_declared``).
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

#: ONNX type string -> numpy dtype, for the dtypes flowgrad holds
_DTYPE_OF = {"tensor(float16)": "float16", "tensor(float)": "float32",
             "tensor(double)": "float64", "tensor(bool)": "bool",
             "tensor(complex64)": "complex64", "tensor(complex128)": "complex128",
             **{f"tensor({s}int{b})": f"{s}int{b}" for s in ("", "u") for b in (8, 16, 32, 64)}}

_ATTR_TYPES = {1: "FLOAT", 2: "INT", 3: "STRING", 4: "TENSOR", 5: "GRAPH", 6: "FLOATS",
               7: "INTS", 8: "STRINGS", 9: "TENSORS", 10: "GRAPHS", 11: "SPARSE_TENSOR",
               12: "SPARSE_TENSORS", 13: "TYPE_PROTO", 14: "TYPE_PROTOS"}

SINGLE, OPTIONAL, VARIADIC = 0, 1, 2


class Formal(NamedTuple):
    """One formal input or output: its name, its type parameter (``T``; None for a
    fixed type), the numpy dtypes it takes, its option (SINGLE, OPTIONAL, VARIADIC), and
    whether a variadic one binds its parameter once for all (homogeneous)."""
    name: str
    param: str | None
    dtypes: frozenset
    option: int
    binds: bool


class Plan(NamedTuple):
    """What a node of one operator at one opset is checked against, read once from its
    schema (a few dict look-ups a node, not the schema's Python wrappers)."""
    name: str
    attributes: dict          # {name: (attribute type, required)}
    inputs: tuple             # of Formal
    outputs: tuple
    counts: tuple             # (min inputs, max inputs, min outputs, max outputs)


def _formals(params, constraints):
    from onnx.defs import OpSchema
    option = {OpSchema.FormalParameterOption.Single: SINGLE,
              OpSchema.FormalParameterOption.Optional: OPTIONAL,
              OpSchema.FormalParameterOption.Variadic: VARIADIC}
    out = []
    for f in params:
        allowed = constraints.get(f.type_str, (f.type_str,))
        dtypes = frozenset(np.dtype(_DTYPE_OF[t]) for t in allowed if t in _DTYPE_OF)
        opt = option[f.option]
        out.append(Formal(f.name, f.type_str if f.type_str in constraints else None,
                          dtypes, opt, opt != VARIADIC or f.is_homogeneous))
    return tuple(out)


@functools.lru_cache(maxsize=4096)
def schema_of(op_type: str, opset: int, domain: str):
    """The operator's Plan at ``opset``; None when it is not defined there."""
    from onnx import defs
    try:
        schema = defs.get_schema(op_type, opset, "" if domain == "ai.onnx" else domain)
    except defs.SchemaError:
        return None
    constraints = {tc.type_param_str: tuple(tc.allowed_type_strs)
                   for tc in schema.type_constraints}
    return Plan(op_type, {k: (int(a.type), a.required) for k, a in schema.attributes.items()},
                _formals(schema.inputs, constraints), _formals(schema.outputs, constraints),
                (schema.min_input, schema.max_input, schema.min_output, schema.max_output),
                ), schema.since_version


def check_attributes(op_type, attributes, plan):
    """Every attribute (AttributeProtos) known to operator ``op_type``, once, of its
    declared type; the required ones given. Returns the error message, or None."""
    known = plan.attributes
    seen = set()
    for a in attributes:
        name = a.name
        spec = known.get(name)
        if name in seen:
            return f"its attribute {name!r} is given twice"
        seen.add(name)
        if spec is None:
            return f"{op_type} has no attribute {name!r}"
        if a.ref_attr_name:
            return f"its attribute {name!r} refers to a function's attribute"
        if a.type != spec[0]:
            return (f"its attribute {name!r} is {_ATTR_TYPES.get(a.type, a.type)}, "
                    f"but {op_type} takes {_ATTR_TYPES.get(spec[0], spec[0])}")
    if len(seen) < len(known):
        missing = sorted(k for k, (_, required) in known.items() if required and k not in seen)
        if missing:
            return f"its required attribute {missing[0]!r} is missing"
    return None


def _formal(formals, k):
    """The formal parameter actual ``k`` binds to (the last one is variadic)."""
    return formals[k] if k < len(formals) else formals[-1] if formals else None


def check_types(plan, names, nodes, what, bound):
    """The element types of ``nodes`` (inputs or outputs, None where omitted) against the
    operator's formals; ``bound`` ({type parameter: dtype}) is filled as they bind.
    Returns the error message, or None."""
    formals = plan.inputs if what == "input" else plan.outputs
    last = len(formals) - 1
    for k, node in enumerate(nodes):
        formal = formals[k] if k <= last else formals[last] if formals else None
        if formal is None:
            return f"it has {len(names)} {what}s, but its operator takes none"
        if node is None:
            # "" stands for an omitted optional input; a variadic one (Concat's, Sum's)
            # cannot be omitted (flowgrad would concatenate one input fewer)
            if formal.option == SINGLE or what == "input" and formal.option != OPTIONAL:
                return f"its required {what} {formal.name!r} (#{k}) is left out"
            continue
        dtype = node.dtype
        if dtype not in formal.dtypes:
            allowed = ", ".join(sorted(d.name for d in formal.dtypes))
            return (f"its {what} {names[k]!r} is {dtype}, which {plan.name}'s "
                    f"{formal.name!r} does not take ({allowed[:120] or 'no number type'})")
        if formal.param is not None and formal.binds:
            first = bound.setdefault(formal.param, dtype)
            if first != dtype:
                return (f"its {what} {names[k]!r} is {dtype}, but another tensor of type "
                        f"{formal.param} is {first}: ONNX has no type promotion")
    return None


def optional_output(plan, k) -> bool:
    """Whether output ``k`` of the operator may be left out ("" or absent)."""
    formal = _formal(plan.outputs, k)
    return formal is not None and formal.option == OPTIONAL


def check_counts(plan, n_inputs, n_outputs):
    """The numbers of inputs and outputs within the schema's bounds (or the message)."""
    lo_in, hi_in, lo_out, hi_out = plan.counts
    if lo_in <= n_inputs <= hi_in and lo_out <= n_outputs <= hi_out:
        return None
    for what, count, lo, hi in (("inputs", n_inputs, lo_in, hi_in),
                                ("outputs", n_outputs, lo_out, hi_out)):
        if not lo <= count <= hi:
            bound = f"{lo}" if lo == hi else f"{lo} to {hi}" if hi < 2 ** 30 else f"{lo} or more"
            return f"it has {count} {what}, but {plan.name} takes {bound}"
    return None


def check_declared(where, value_info, node, error):
    """A graph's (or body's) declared output against the node computing it: the same
    element type. (A declared shape that disagrees is left as onnxruntime leaves it, a
    hint it merges leniently: the values are the nodes', in both.)"""
    kind = value_info.type.WhichOneof("value")
    if kind is None:            # no type declared (a body's output may leave it out)
        return
    if kind != "tensor_type":
        raise error(f"{where}: output {value_info.name!r} is declared a {kind}, not a "
                    "tensor")
    t = value_info.type.tensor_type
    if t.elem_type:
        from onnx import helper
        try:
            declared = np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type))
        except (KeyError, TypeError, ValueError):
            raise error(f"{where}: output {value_info.name!r} has an unknown element type "
                        f"{t.elem_type}") from None
        if declared != node.dtype:
            raise error(f"{where}: output {value_info.name!r} is declared {declared}, but "
                        f"the graph computes {node.dtype}")
