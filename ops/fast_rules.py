"""The reverse rules of the commonest elementwise ops, in *builder form*, for the sweep.

Each entry is its op's own reverse rule (ops/elementwise.py), written against a
:class:`NodeBuilder` instead of Node operators: ``g * cos(x)`` is
``b.binary(mul, g, b.unary(cos, x))``. The sweep (flowgrad/autodiff.py) then builds the
rule's nodes straight onto the graph, with the site it found once: no operator
dispatch, no ``Op`` call with its packed arguments, no site look-up a node. That is
about 2 µs of a sin chain's ~6 µs a forward node in ``grad`` (benchmarks/RESULTS.md).

Why a second form and not the rules rewritten: the op's rule stays the readable
definition (and the one every other sweep, dtype and shape uses); these forms are used
only where they are the same rule — real floating inputs, no attributes — and
tests/test_fast_rules.py builds every entry both ways, over dtypes, shapes and 0-d
inputs, and asserts the two graphs are identical (ops, inputs, attributes, shapes,
dtypes, sites). The builder falls back to the op's call wherever ``apply`` would do
more than build one node (a Python-scalar operand, a node of another graph), so each
form builds exactly the nodes, in the order, its rule does.
"""
from __future__ import annotations

from flowgrad.graph import Node

from . import elementwise as _ew
from .base import apply

__all__ = ["NodeBuilder", "REVERSE"]


class NodeBuilder:
    """Builds op nodes into one graph at one site, as ``apply`` would from a primitive
    rule in a sweep (its ``rule_site``; unary nodes shared with the forward's, as
    ``sharing_unary`` does, when ``sharing``). One per sweep."""

    __slots__ = ("graph", "site", "sharing")

    def __init__(self, graph, site, sharing):
        self.graph, self.site, self.sharing = graph, site, sharing

    def unary(self, op, x):
        graph = self.graph
        if type(x) is not Node or x.graph is not graph or (x.op is None and x.weak):
            return apply(op, x)      # a scalar folds, another graph is refused: as apply
        if self.sharing:
            twin = graph.unary_twin(op, x)
            if twin is not None:
                return twin
        shape, dtype = op.infer(x)   # (a tuple and an np.dtype: the elementwise infers')
        return graph.add_node(op, (x,), None, shape, dtype, where=self.site)

    def binary(self, op, x, y):
        graph = self.graph
        if type(x) is not Node or type(y) is not Node or x.graph is not graph \
                or y.graph is not graph or (x.op is None and x.weak):
            return apply(op, x, y)   # a Python-scalar operand becomes a weak constant there
        shape, dtype = op.infer(x, y)
        return graph.add_node(op, (x, y), None, shape, dtype, where=self.site)


_mul, _div, _sub, _add, _neg = _ew.mul, _ew.div, _ew.sub, _ew.add, _ew.neg

#: {op: (one builder-form rule an argument, or None: that argument's own rule)}; each
#: ``rule(b, g, ans, *inputs)`` builds what the op's reverse rule builds (the comment)
REVERSE = {
    # g * cos(x)
    _ew.sin: (lambda b, g, ans, x: b.binary(_mul, g, b.unary(_ew.cos, x)),),
    # -g * sin(x)
    _ew.cos: (lambda b, g, ans, x: b.binary(_mul, b.unary(_neg, g), b.unary(_ew.sin, x)),),
    # g * ans
    _ew.exp: (lambda b, g, ans, x: b.binary(_mul, g, ans),),
    # g / x
    _ew.log: (lambda b, g, ans, x: b.binary(_div, g, x),),
    # g * (1 - ans * ans)
    _ew.tanh: (lambda b, g, ans, x:
               b.binary(_mul, g, b.binary(_sub, 1, b.binary(_mul, ans, ans))),),
    # g / (2 * ans)
    _ew.sqrt: (lambda b, g, ans, x: b.binary(_div, g, b.binary(_mul, 2, ans)),),
    # g / (1 + x)
    _ew.log1p: (lambda b, g, ans, x: b.binary(_div, g, b.binary(_add, 1, x)),),
    # -g
    _ew.neg: (lambda b, g, ans, x: b.unary(_neg, g),),
    # g, -g
    _ew.sub: (None, lambda b, g, ans, x, y: b.unary(_neg, g)),
    # g * y, g * x
    _ew.mul: (lambda b, g, ans, x, y: b.binary(_mul, g, y),
              lambda b, g, ans, x, y: b.binary(_mul, g, x)),
    # g / y, -g * ans / y
    _ew.div: (lambda b, g, ans, x, y: b.binary(_div, g, y),
              lambda b, g, ans, x, y:
              b.binary(_div, b.binary(_mul, b.unary(_neg, g), ans), y)),
}
