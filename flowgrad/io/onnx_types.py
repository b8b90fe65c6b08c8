"""Which tensor types the ONNX operators flowgrad writes accept, and the exact ways
around a gap; used by onnx_export and its converters.

A type is accepted by an operator when the ONNX standard allows it at the model's opset
(``onnx.defs``) AND onnxruntime's CPU kernels run it (``RUNTIME`` below, the kernels
onnxruntime 1.32 registers for opset 18 where they cover fewer types than the standard;
tests/test_onnx_dtypes.py checks the table against the installed onnxruntime). float16 is
left out of the runtime's gaps: onnxruntime computes a float16 node it has no kernel for
in float32 and rounds back, as numpy's float16 loops do.

A converter asks ``compute_dtype(op_type, dtype, kind)`` for the dtype to compute in:
``dtype`` itself when accepted; otherwise a wider type whose result, cast back, is
bit-for-bit numpy's for every input —

- ``"ring"`` ops (Add, Sub, Mul, Neg, MatMul, Einsum, ReduceSum, ReduceProd, CumSum) on
  integers compute in int64: integer arithmetic modulo 2^64 reduced to 2^k by the Cast
  back (ONNX's Cast wraps) is numpy's arithmetic modulo 2^k, wrap-around included; on
  bool, the int64 result cast to bool is numpy's (True + True is True, a bool matmul is
  an or of ands);
- ``"order"`` ops (Max, Min, Relu, Abs, Sign, ReduceMax, Where, Pad, MaxPool) compute in
  the first of int32, int64, float32, float64 the operator accepts that holds every value
  of ``dtype`` exactly (int64 and uint64 fit in none but themselves).

Anything else is left as it is, and export_onnx refuses the model before it is
written (``first_type_gap``): an ``OnnxExportError`` naming the flowgrad node, the user's line, the operator
and the dtype.
"""
from __future__ import annotations

import functools

import numpy as np

#: onnxruntime (1.32) CPU kernels, opset 18, where they cover fewer of flowgrad's dtypes
#: than the standard: {operator: {type constraint: the dtypes they run}}
RUNTIME = {name: {c: frozenset(types.split()) for c, types in constraints.items()}
           for name, constraints in {
    "Abs": {"T": "int8 int16 int32 int64 uint8 uint16 uint32 uint64 float32 float64"},
    "Add": {"T": "int8 int16 int32 int64 uint8 uint16 uint32 uint64 float32 float64"},
    "ArgMax": {"T": "int8 int32 int64 uint8 float32 float64"},
    "AveragePool": {"T": "float32"},
    "Conv": {"T": "float32"},
    "ConvTranspose": {"T": "float32"},
    "Cos": {"T": "float32 float64"},
    "CumSum": {"T": "int32 int64 float32 float64"},
    "Det": {"T": "float32"},
    "Div": {"T": "int8 int16 int32 int64 uint8 uint16 uint32 uint64 float32 float64"},
    "Einsum": {"T": "int32 int64 float32 float64"},
    "Equal": {"T": "bool int8 int16 int32 int64 uint8 uint16 uint32 uint64 float32 float64"},
    "Exp": {"T": "float32 float64"},
    "EyeLike": {"T1": "int32 int64 uint64 float32 float64",
                "T2": "int32 int64 uint64 float32 float64"},
    "Floor": {"T": "float32 float64"},
    "Greater": {"T": "int8 int16 int32 int64 uint8 uint16 uint32 uint64 float32 float64"},
    "GreaterOrEqual": {"T": "int8 int16 int32 int64 uint8 uint16 uint32 uint64 float32 "
                            "float64"},
    "Less": {"T": "int8 int16 int32 int64 uint8 uint16 uint32 uint64 float32 float64"},
    "LessOrEqual": {"T": "int8 int16 int32 int64 uint8 uint16 uint32 uint64 float32 float64"},
    "Log": {"T": "float32 float64"},
    "MatMul": {"T": "int32 int64 uint32 uint64 float32 float64"},
    "Max": {"T": "int8 int32 int64 uint8 uint32 uint64 float32 float64"},
    "MaxPool": {"T": "int8 uint8 float32 float64"},
    "Min": {"T": "int8 int32 int64 uint8 uint32 uint64 float32 float64"},
    "Mul": {"T": "int8 int16 int32 int64 uint8 uint16 uint32 uint64 float32 float64"},
    "Neg": {"T": "int8 int16 int32 int64 float32 float64"},
    "Pad": {"T": "bool int8 int32 int64 uint8 uint32 uint64 float32 float64"},
    "Pow": {"T": "int32 int64 float32 float64", "T1": "int32 int64 float32 float64"},
    "ReduceMax": {"T": "int8 int32 int64 uint8 float32 float64"},
    "ReduceMean": {"T": "int32 int64 float32 float64"},
    "ReduceProd": {"T": "int32 int64 float32 float64"},
    "ReduceSum": {"T": "int32 int64 float32 float64"},
    "Relu": {"T": "int8 int32 float32 float64"},
    "Sin": {"T": "float32 float64"},
    "Size": {"T": "bool int8 int16 int32 int64 uint8 uint16 uint32 uint64 float32 float64"},
    "Sqrt": {"T": "float32 float64"},
    "Sub": {"T": "int8 int16 int32 int64 uint8 uint16 uint32 uint64 float32 float64"},
    "Tanh": {"T": "float32 float64"},
    "Trilu": {"T": "bool int32 int64 float32 float64"},
    "Where": {"T": "int8 int32 int64 uint8 uint32 float32 float64"},
}.items()}

#: ONNX's tensor type strings, as numpy dtype names
_TYPE_STR = {"tensor(float)": "float32", "tensor(double)": "float64",
             **{f"tensor({n})": n for n in ("bool", "int8", "int16", "int32", "int64", "uint8",
                                            "uint16", "uint32", "uint64", "float16")}}

#: a wider type that holds every value of the key's dtype exactly (for "order" ops)
_HOLDS = {"bool": ("int32", "int64", "float32", "float64"),
          "int8": ("int32", "int64", "float32", "float64"),
          "uint8": ("int32", "int64", "float32", "float64"),
          "int16": ("int32", "int64", "float32", "float64"),
          "uint16": ("int32", "int64", "float32", "float64"),
          "int32": ("int64", "float64"), "uint32": ("int64", "float64"),
          "float16": ("float32", "float64"), "float32": ("float64",)}


@functools.lru_cache(maxsize=None)
def allowed(op_type: str, constraint: str, opset: int) -> frozenset | None:
    """The dtype names ``op_type``'s type ``constraint`` takes (None: not a constraint of
    it, so unconstrained here)."""
    import onnx
    schema = onnx.defs.get_schema(op_type, opset)
    for tc in schema.type_constraints:
        if tc.type_param_str == constraint:
            spec = frozenset(_TYPE_STR[t] for t in tc.allowed_type_strs if t in _TYPE_STR)
            runtime = RUNTIME.get(op_type, {}).get(constraint)
            if runtime is None:
                return spec
            return spec & (runtime | {"float16"})
    return None


def accepts(op_type: str, dtype, opset: int, k: int = 0) -> bool:
    """Whether ``op_type``'s input ``k`` (default its first: its data) may be of ``dtype``."""
    import onnx
    constraint = onnx.defs.get_schema(op_type, opset).inputs[k].type_str
    ok = allowed(op_type, constraint, opset)
    return ok is None or np.dtype(dtype).name in ok


def compute_dtype(op_type: str, dtype, kind: str, opset: int, k: int = 0):
    """The dtype to compute ``op_type`` in for a ``dtype`` result whose data enters as
    input ``k`` (module docstring), or ``dtype`` itself where no exact wider type exists
    (first_type_gap then finds it, and the export is refused)."""
    dtype = np.dtype(dtype)
    if accepts(op_type, dtype, opset, k):
        return dtype
    if kind == "ring" and dtype.kind in "iub" and accepts(op_type, np.int64, opset, k):
        return np.dtype(np.int64)
    if kind == "order":
        for wide in _HOLDS.get(dtype.name, ()):
            if accepts(op_type, wide, opset, k):
                return np.dtype(wide)
    return dtype


# -- the check of a finished model -----------------------------------------------------------

def _elem_types(model) -> dict:
    """{tensor name: dtype name} of every tensor whose type onnx's shape inference knows,
    in the graph and its subgraphs (names are unique across the model)."""
    import onnx
    inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False)
    by_code = {code: np.dtype(onnx.helper.tensor_dtype_to_np_dtype(code)).name
               for code in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE,
                            onnx.TensorProto.FLOAT16, onnx.TensorProto.BOOL,
                            onnx.TensorProto.INT8, onnx.TensorProto.INT16,
                            onnx.TensorProto.INT32, onnx.TensorProto.INT64,
                            onnx.TensorProto.UINT8, onnx.TensorProto.UINT16,
                            onnx.TensorProto.UINT32, onnx.TensorProto.UINT64)}
    types, stack = {}, [inferred.graph]
    while stack:
        g = stack.pop()
        for info in (*g.input, *g.output, *g.value_info):
            code = info.type.tensor_type.elem_type
            if code in by_code:
                types[info.name] = by_code[code]
        for init in g.initializer:
            if init.data_type in by_code:
                types[init.name] = by_code[init.data_type]
        for node in g.node:
            stack.extend(a.g for a in node.attribute if a.HasField("g"))
    return types, inferred


def _nodes(graph):
    """Every node of ``graph`` and its subgraphs, without recursion."""
    stack = [graph]
    while stack:
        g = stack.pop()
        for node in g.node:
            yield node
            stack.extend(a.g for a in node.attribute if a.HasField("g"))


def first_type_gap(model, opset: int):
    """(ONNX node, dtype name, tensor name) of the first node that reads or writes a type
    its operator does not accept (module docstring), or None."""
    import onnx
    types, inferred = _elem_types(model)
    for node in _nodes(inferred.graph):
        schema = onnx.defs.get_schema(node.op_type, opset, node.domain)
        for names, formals in ((node.input, schema.inputs), (node.output, schema.outputs)):
            for k, name in enumerate(names):
                if not name or name not in types or not formals:
                    continue
                constraint = formals[min(k, len(formals) - 1)].type_str
                ok = allowed(node.op_type, constraint, opset)
                if ok is not None and types[name] not in ok:
                    return node, types[name], name
    return None
