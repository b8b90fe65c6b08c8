"""Is a custom_jvp rule linear in its tangents? Checked before it is transposed.

flowgrad builds a custom_jvp function's reverse rule by sweeping the jvp rule's nodes
backwards from its output to the tangent stand-ins (flowgrad/custom.py). That sweep is
the transpose of the rule only when the rule is linear in the tangents; for any other
rule it is silently wrong — ``sin(t)`` swept at t = 0 gives cos(0)·v̄ = v̄, ``t*t`` gives
0, and an affine ``t + 1`` loses its offset. JAX refuses to transpose a rule it cannot
prove linear; so does flowgrad, by the same structural test:

* a node that depends on no tangent is a *constant* (a *zero* when it is known to be 0:
  ``zeros_like``, an all-zero constant, or linear ops of zeros);
* a node that depends on the tangents is *linear* when its op is linear in the inputs
  that carry them: a shape or reduction op of one linear input (``sum``, ``reshape``,
  ``transpose``, indexing …), a sum of linear inputs and zeros (``add``, ``sub``,
  ``concatenate``, ``where`` with a constant condition), or a product with exactly one
  linear factor (``mul``, ``matmul``, ``einsum``, ``conv2d``, ``t / c``);
* anything else is refused: a nonlinear op of a tangent (``sin``, ``abs``, ``exp``), a
  product of two tangent terms (``t*t``), a constant added (``t + 1``), an op whose
  reverse rule passes nothing (``stop_gradient``), or an output that does not depend on
  the tangents at all and is not known to be zero.

The test is exact for these ops: it accepts only forms whose transpose the sweep
builds, and refuses every form it cannot prove linear, naming the node and the line
of the rule that built it.
"""
from __future__ import annotations

import numpy as np

from .autodiff import ancestors_above

ZERO, CONST, LINEAR = "zero", "constant", "linear"

#: ops linear in argument 0, whose other arguments (shape references, index arrays)
#: must be constants
_UNARY = frozenset({
    "neg", "sum", "mean", "reshape", "reshape_like", "transpose", "broadcast_to",
    "broadcast_like", "sum_to", "shaped_like", "expand_dims", "squeeze", "cumsum",
    "trace", "conj", "real", "imag", "avg_pool2d", "concat_part", "concat_unpart",
    "getitem", "scatter_add", "astype", "pad", "avg_pool2d_grad"})
#: ops whose value is a sum of their (listed) arguments: each linear or zero
_SUMS = {"add": None, "sub": None, "concatenate": None, "where": (1, 2)}
#: ops linear in each listed argument separately: exactly one may be linear
_PRODUCTS = {"mul": None, "matmul": None, "einsum": None, "conv2d": (0, 1),
             "conv2d_grad_x": (0, 1), "conv2d_grad_w": (0, 1), "div": (0,)}
#: ops whose value does not depend on their inputs' values (only on shapes)
_SHAPE_ONLY = frozenset({"ones_like", "reduced_size", "batch_norm_count"})


class NotLinear(Exception):
    """Raised inside the check with the offending node and why; custom_op words it."""

    def __init__(self, node, why):
        super().__init__(why)
        self.node, self.why = node, why


def _known_zero(node) -> bool:
    """A node outside the rule's new nodes that is structurally zero."""
    if node.op is not None:
        return node.op.name == "zeros_like"
    if node.kind != "constant":
        return False
    value = node.value
    return value is not None and not np.any(np.asarray(value))


def check_linear(out, tangents) -> None:
    """Raise NotLinear unless ``out`` (a jvp rule's result) is linear in ``tangents``
    (the stand-in nodes the rule was given; None entries are skipped)."""
    ids = {t.id for t in tangents if t is not None}
    if not ids:
        return
    graph = out.graph
    data = graph.handles
    cls = {i: LINEAR for i in ids}
    for nid in ancestors_above(out, min(ids)):
        if nid not in cls:
            cls[nid] = _classify(graph.node(nid), data, cls)
    if cls.get(out.id, ZERO if _known_zero(out) else CONST) == CONST:
        raise NotLinear(out, "its result does not depend on the tangents, so it is "
                             "an offset, not a linear map (for a zero derivative return "
                             "fg.zeros_like(ans), or multiply the tangents by 0)")


def _classify(node, data, cls):
    """The class of ``node`` from its inputs' classes (nodes the check did not visit are
    older than the tangents: constants, or zeros)."""
    op = node.op
    if op is None:
        return ZERO if _known_zero(node) else CONST
    if op.name == "zeros_like":
        return ZERO
    kinds = [cls.get(i) or (ZERO if _known_zero(data[i]) else CONST)
             for i in node.input_ids]
    if LINEAR not in kinds or op.name in _SHAPE_ONLY:
        return _constant_class(node, op.name, kinds)
    return _linear_class(node, op.name, kinds)


def _constant_class(node, name, kinds) -> str:
    """A node on no tangent's path: zero where it is a linear op of zeros."""
    if name in _SHAPE_ONLY or not kinds:
        return CONST
    if name == "pad" and kinds[0] == ZERO:
        return ZERO if _pad_value(node) == 0 else CONST
    if name in _UNARY:
        return kinds[0]
    if name == "linear":
        return _sum_of(_product_class(kinds[:2], (0, 1)), *kinds[2:])
    if name in _SUMS:
        args = _SUMS[name] or range(len(kinds))
        return _sum_of(*[kinds[k] for k in args])
    if name in _PRODUCTS:
        return _product_class(kinds, _PRODUCTS[name])
    return CONST


def _product_class(kinds, args) -> str:
    args = args or range(len(kinds))
    return ZERO if any(kinds[k] == ZERO for k in args) else CONST


def _sum_of(*kinds) -> str:
    return ZERO if all(k == ZERO for k in kinds) else CONST


def _pad_value(node):
    return node.attrs.get("value", 0)


def _linear_class(node, name, kinds) -> str:
    """LINEAR for a linear op of the tangents; else NotLinear saying why."""
    if name in _UNARY:   # other arguments are shapes or indices: only argument 0 counts
        if kinds[0] != LINEAR:
            return _constant_class(node, name, kinds)
        _unary_ok(node, name)
        return LINEAR
    if name == "linear":                                      # x·w + b
        product = _linear_class(node, "matmul", kinds[:2]) if LINEAR in kinds[:2] \
            else _product_class(kinds[:2], (0, 1))
        return _linear_class(node, "add", [product, *kinds[2:]])
    if name in _SUMS:
        args = _SUMS[name] or range(len(kinds))
        if any(kinds[k] == LINEAR for k in range(len(kinds)) if k not in args):
            raise NotLinear(node, f"its {name} chooses by a condition that depends on "
                                  "the tangents (a piecewise map is not linear)")
        if any(kinds[k] == CONST for k in args):
            what = {"concatenate": "joins a part", "where": "chooses a branch"}.get(
                name, "adds a term")
            raise NotLinear(node, f"its {name} {what} that does not depend on the "
                                  "tangents (an affine offset, not a linear map)")
        return LINEAR
    if name in _PRODUCTS:
        args = _PRODUCTS[name] or range(len(kinds))
        linear = [k for k in range(len(kinds)) if kinds[k] == LINEAR]
        if len(linear) > 1 or linear[0] not in args:
            raise NotLinear(node, "it divides by a tangent term (not linear)"
                            if name == "div" else f"its {name} multiplies tangent terms "
                            "together: a product of tangents is not linear")
        return LINEAR
    if name == "stop_gradient":
        raise NotLinear(node, "its stop_gradient of a tangent term passes no "
                              "derivative back, so the transposed rule would be 0")
    raise NotLinear(node, f"it applies {name} to a tangent term, which is not one of "
                          "the ops linear in its input")


def _unary_ok(node, name):
    if name == "astype" and np.dtype(node.dtype).kind not in "fc":
        raise NotLinear(node, f"its astype to {node.dtype} rounds a tangent term")
    if name == "pad" and _pad_value(node) != 0:
        raise NotLinear(node, f"its pad fills with {_pad_value(node)!r}, a constant "
                              "added (pad with 0 for a linear map)")
