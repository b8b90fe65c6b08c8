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

import numpy as np

#: numpy dtype name -> ONNX type string, for the dtypes flowgrad holds
TYPE_STR = {"float16": "tensor(float16)", "float32": "tensor(float)",
            "float64": "tensor(double)", "bool": "tensor(bool)",
            "complex64": "tensor(complex64)", "complex128": "tensor(complex128)",
            **{f"{s}int{b}": f"tensor({s}int{b})" for s in ("", "u") for b in (8, 16, 32, 64)}}

_ATTR_TYPES = {1: "FLOAT", 2: "INT", 3: "STRING", 4: "TENSOR", 5: "GRAPH", 6: "FLOATS",
               7: "INTS", 8: "STRINGS", 9: "TENSORS", 10: "GRAPHS", 11: "SPARSE_TENSOR",
               12: "SPARSE_TENSORS", 13: "TYPE_PROTO", 14: "TYPE_PROTOS"}


@functools.lru_cache(maxsize=4096)
def schema_of(op_type: str, opset: int, domain: str):
    """The operator's schema at ``opset`` and its type constraints ({type parameter:
    the type strings it allows}); (None, None) when it is not defined there."""
    from onnx import defs
    try:
        schema = defs.get_schema(op_type, opset, "" if domain == "ai.onnx" else domain)
    except defs.SchemaError:
        return None, None
    return schema, {tc.type_param_str: frozenset(tc.allowed_type_strs)
                    for tc in schema.type_constraints}


def check_attributes(n, schema):
    """Every attribute known to the operator, once, of its declared type; the required
    ones given. Returns the error message, or None."""
    seen = set()
    for a in n.attribute:
        spec = schema.attributes.get(a.name)
        if a.name in seen:
            return f"its attribute {a.name!r} is given twice"
        seen.add(a.name)
        if spec is None:
            return f"{n.op_type} has no attribute {a.name!r}"
        if a.ref_attr_name:
            return f"its attribute {a.name!r} refers to a function's attribute"
        if int(a.type) != int(spec.type):
            return (f"its attribute {a.name!r} is {_ATTR_TYPES.get(int(a.type), a.type)}, "
                    f"but {n.op_type} takes {_ATTR_TYPES.get(int(spec.type), spec.type)}")
    missing = sorted(k for k, s in schema.attributes.items() if s.required and k not in seen)
    return f"its required attribute {missing[0]!r} is missing" if missing else None


def _formal(formals, k):
    """The formal parameter actual ``k`` binds to (the last one is variadic)."""
    return formals[k] if k < len(formals) else formals[-1] if formals else None


def check_types(schema, constraints, names, nodes, what, bound):
    """The element types of ``nodes`` (inputs or outputs, None where omitted) against the
    schema's formals; ``bound`` ({type parameter: type string}) is filled as they bind.
    Returns the error message, or None."""
    from onnx.defs import OpSchema
    option = OpSchema.FormalParameterOption
    formals = schema.inputs if what == "input" else schema.outputs
    for k, (name, node) in enumerate(zip(names, nodes)):
        formal = _formal(formals, k)
        if formal is None:
            return f"it has {len(names)} {what}s, but its operator takes none"
        if node is None:
            # "" stands for an omitted optional input; a variadic one (Concat's, Sum's)
            # cannot be omitted (flowgrad would concatenate one input fewer)
            if formal.option == option.Single or \
                    what == "input" and formal.option != option.Optional:
                return f"its required {what} {formal.name!r} (#{k}) is left out"
            continue
        t = TYPE_STR.get(node.dtype.name, f"tensor({node.dtype.name})")
        want = formal.type_str
        allowed = constraints.get(want, frozenset([want]))
        if t not in allowed:
            return (f"its {what} {name!r} is {node.dtype}, which {schema.name}'s "
                    f"{formal.name!r} does not take ({', '.join(sorted(allowed))[:120]})")
        if want in constraints and (formal.is_homogeneous or formal.option != option.Variadic):
            if bound.setdefault(want, t) != t:
                return (f"its {what} {name!r} is {node.dtype}, but another tensor of type "
                        f"{want} is {bound[want][7:-1]}: ONNX has no type promotion")
    return None


def optional_output(schema, k) -> bool:
    """Whether output ``k`` of the operator may be left out ("" or absent)."""
    from onnx.defs import OpSchema
    formal = _formal(schema.outputs, k)
    return formal is not None and formal.option == OpSchema.FormalParameterOption.Optional


def check_counts(n, schema):
    """The numbers of inputs and outputs within the schema's bounds (or the message)."""
    for what, count, lo, hi in (("inputs", len(n.input), schema.min_input, schema.max_input),
                                ("outputs", len(n.output), schema.min_output,
                                 schema.max_output)):
        if not lo <= count <= hi:
            bound = f"{lo}" if lo == hi else f"{lo} to {hi}" if hi < 2 ** 30 else f"{lo} or more"
            return f"it has {count} {what}, but {n.op_type} takes {bound}"
    return None


def check_declared(where, value_info, node, error):
    """A graph's (or body's) declared output against the node computing it: the same
    element type. (A declared shape that disagrees is left as onnxruntime leaves it, a
    hint it merges leniently: the values are the nodes', in both.)"""
    if not value_info.type.HasField("tensor_type"):
        raise error(f"{where}: output {value_info.name!r} is declared as no tensor")
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
