"""The graph's leaves: placeholders (fed at run time), variables (trainable state)
and constants (fixed values, including the Python scalars that mix into expressions)."""
from __future__ import annotations

import numbers

import numpy as np

from .dtypes import as_dtype
from .errors import ArgumentError, FeedError, ShapeError, UsageError, located
from .graph import Node, default_graph


def _as_shape(shape) -> tuple:
    if shape is None:
        raise located(ShapeError, "a placeholder needs a shape; use None for a length that varies, "
                         "e.g. shape=(None, 3)")
    shape = (shape,) if isinstance(shape, (int, np.integer)) or shape is None else tuple(shape)
    for s in shape:
        if s is not None and (not isinstance(s, (int, np.integer)) or s < 0):
            raise located(ShapeError,
                          f"shape entries must be non-negative ints or None, got {shape}")
    return tuple(None if s is None else int(s) for s in shape)


def placeholder(name: str, shape=(), dtype="float64") -> Node:
    """A value fed at run time, by ``name`` or by node; ``None`` in ``shape`` = any length."""
    if not isinstance(name, str) or not name:
        raise located(ArgumentError,
                      "a placeholder needs a non-empty string name (it is fed by name)")
    dtype = as_dtype(dtype, f"placeholder {name!r}")
    g = default_graph()
    return g.add_node(None, (), {}, _as_shape(shape), dtype, name=name,
                      kind="placeholder", exact_name=True)


def variable(value, name: str | None = None, dtype=None) -> Node:
    """A trainable value held by the graph; optimizers update it in place."""
    arr = _numeric_array(value, dtype, "variable")
    g = default_graph()
    return g.add_node(None, (), {}, arr.shape, arr.dtype, name=name or "variable",
                      kind="variable", value=arr)


def constant(value, name: str | None = None, dtype=None) -> Node:
    """A fixed value, part of the graph. Python scalars (bool, int, float, complex) stay
    *weakly typed*, as in numpy 2, so ``0.1 * x`` keeps a float32 ``x`` float32 and
    ``z * 1j`` a complex64 ``z`` complex64; numpy scalars are strong, as in numpy."""
    g = default_graph()
    return constant_in(g, value, name, dtype)


def constant_in(g, value, name=None, dtype=None) -> Node:
    weak = dtype is None and isinstance(value, numbers.Complex) \
        and not isinstance(value, np.generic)
    if weak:
        py = bool(value) if isinstance(value, bool) else (
            int(value) if isinstance(value, numbers.Integral) else
            float(value) if isinstance(value, numbers.Real) else complex(value))
        return g.add_node(None, (), {}, (), np.result_type(py), name=name or "const",
                          kind="constant", value=py, weak=True)
    arr = _numeric_array(value, dtype, "constant")
    arr.setflags(write=False)  # a constant must never be mutated through a result
    return g.add_node(None, (), {}, arr.shape, arr.dtype, name=name or "const",
                      kind="constant", value=arr)


def _numeric_array(value, dtype, what):
    """``value`` as a numpy array of numbers (bool, int, float, complex); strings,
    objects and ragged lists are a TypeError naming what was being made."""
    if dtype is not None:
        dtype = as_dtype(dtype, what)
    from .engine.binding import refuse_masked   # (lazily: the engine imports this module)
    refuse_masked(value, f"a {what}", UsageError)
    try:
        arr = np.array(value, dtype=dtype if dtype is not None else _default_dtype(value))
    except (ValueError, TypeError) as e:
        raise located(UsageError,
                      f"cannot make a {what} of {type(value).__name__} {value!r}: {e}") \
            from e
    if arr.dtype.kind not in "biufc":
        raise located(UsageError,
                      f"cannot make a {what} of {type(value).__name__} {value!r}: a {what} "
                        f"holds numbers, not dtype {arr.dtype}")
    return arr


def _default_dtype(value):
    """Python floats and lists of them become float64; arrays keep their dtype."""
    if isinstance(value, (np.ndarray, np.generic)):
        return value.dtype
    if hasattr(value, "__array__") or hasattr(value, "__cuda_array_interface__"):
        return None
    arr = np.asarray(value)
    return np.float64 if arr.dtype.kind in "iu" else None  # bools stay bool (masks)


def assigned_value(node: Node, new):
    """``node.value = new``'s stored value: ``check_variable_value``'s, and the variable's
    own storage, never the caller's array (``w.value = a; a[0] = 9`` leaves ``w`` as it
    was, as ``torch``'s ``param.copy_(a)``): copied where it may share memory with it."""
    arr = check_variable_value(node, new)
    if arr is new or (isinstance(arr, np.ndarray) and isinstance(new, np.ndarray)
                      and np.may_share_memory(arr, new)):
        arr = arr.copy()
    return arr


def check_variable_value(node: Node, new):
    """Validate an assignment to ``node.value``: same shape, a castable dtype. A numpy
    scalar or subclass (``np.matrix``, whose ``*`` is a matrix product) is held as the
    plain array it stands for, as every other value is; a masked array is refused."""
    from .engine.binding import refuse_masked   # (lazily: the engine imports this module)
    refuse_masked(new, f"variable {node.name!r}")
    if isinstance(new, np.generic) or (isinstance(new, np.ndarray) and
                                       type(new) is not np.ndarray):
        new = np.asarray(new)
    arr = new if hasattr(new, "shape") and hasattr(new, "dtype") else np.asarray(new)
    if arr.dtype.kind not in "biufc":   # None, a string: say so, not "shape ()"
        raise located(FeedError, f"variable {node.name!r} holds numbers of dtype {node.dtype}; "
                        f"cannot assign {type(new).__name__} {new!r:.60}")
    if tuple(arr.shape) != node.shape:
        raise located(FeedError, f"variable {node.name!r} has shape {node.shape}; "
                        f"cannot assign a value of shape {tuple(arr.shape)}")
    if not np.can_cast(arr.dtype, node.dtype, "same_kind"):
        raise located(FeedError, f"variable {node.name!r} has dtype {node.dtype}; "
                        f"cannot assign a value of dtype {arr.dtype}")
    if arr.dtype != node.dtype and not np.can_cast(arr.dtype, node.dtype, "safe"):
        from .engine.binding import narrowed     # 2**40 into int32: FeedError, never wrapped
        arr = narrowed(node, arr)
    return arr.astype(node.dtype, copy=False) if arr.dtype != node.dtype else arr
