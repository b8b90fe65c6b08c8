"""The numbers on a drawing's edges: each child's reverse rule evaluated at the traced point.

The term child j sends to input i in the backward sweep is ``rule_j(v̄_j, v_j, inputs)``
summed back to v_i's shape. With v̄_j = 1 and scalar v_i, v_j that term *is* the local
derivative ∂v_j/∂v_i at the current point; with v̄_j = the traced adjoint it is the exact
summand of v̄_i = Σ_j v̄_j ∂v_j/∂v_i that the walkthrough shows.

The rules are applied in a private scratch graph whose leaves are constants holding the
traced values, so drawing never adds a node to the user's graph. All terms are built
first and evaluated by one compiled program.
"""
from __future__ import annotations

import numpy as np

from flowgrad.backends import get_backend, to_numpy
from flowgrad.errors import DifferentiationError
from flowgrad.graph import Graph
from flowgrad.leaves import constant_in
from flowgrad.loops.loop_op import is_loop_result


def _numpy(value):
    """A traced value on the host: Python scalars stay scalars (weakly typed)."""
    if isinstance(value, (bool, int, float, complex)):
        return value
    return np.asarray(to_numpy(value))


class _Scratch:
    """A throwaway graph holding each traced value once, as a constant."""

    def __init__(self, trace):
        self.trace = trace
        self.graph = Graph()
        self._consts = {}

    def const(self, node):
        c = self._consts.get(node.id)
        if c is None:
            c = self._consts[node.id] = constant_in(self.graph, _numpy(self.trace[node]))
        return c

    def cotangent(self, child, mode):
        """v̄_child as a constant: all ones (local derivatives) or the traced adjoint."""
        if mode == "one":
            value = np.ones(np.shape(self.trace[child]), dtype=child.dtype)
        else:
            value = _numpy(self.trace.adjoint(child))
        return constant_in(self.graph, np.asarray(value, dtype=child.dtype))


def _term(scratch, child, argnum, g):
    """One rule's contribution to the input ``argnum`` of ``child``, or None."""
    from flowgrad.ops import sum_to_like
    inp = child.inputs[argnum]
    if inp.dtype.kind not in "fc" or child.op is None or is_loop_result(child):
        return None   # (a loop's rule is a loop over its body: no number on its edge)
    try:
        rule = child.op.vjp_rule(argnum)
    except DifferentiationError:
        return None  # an op without a rule for this argument: no number to show
    if rule is None:
        return None
    inputs = [scratch.const(n) for n in child.inputs]
    try:
        term = rule(g, scratch.const(child), *inputs, **child.attrs)
    except DifferentiationError:
        return None  # a rule that needs the graph itself (fg.remat's replay): no number
    return None if term is None else sum_to_like(term, inputs[argnum])


def edge_terms(trace, edges, mode="one") -> dict:
    """{(i, j): value} for each edge i → j (ids): Σ over the arguments of j fed by i of
    rule(g, ...), with g = 1 (``mode="one"``) or g = v̄_j (``mode="adjoint"``).
    Edges with no differentiable rule are left out."""
    from flowgrad.ops import add
    from flowgrad.engine.program import Program
    scratch = _Scratch(trace)
    g_of = {}
    built = {}
    handles = trace.graph.handles
    with scratch.graph:  # constants made by the rules land in the scratch graph
        for i, j in edges:
            child = handles[j]
            if j not in g_of:
                g_of[j] = scratch.cotangent(child, mode)
            total = None
            for argnum, inp in enumerate(child.inputs):
                if inp.id != i:
                    continue
                term = _term(scratch, child, argnum, g_of[j])
                if term is not None:
                    total = term if total is None else add(total, term)
            if total is not None:
                built[(i, j)] = total
    if not built:
        return {}
    keys = list(built)
    with np.errstate(all="ignore"):  # log of a negative base in pow's rule is just nan
        values = Program([built[k] for k in keys], get_backend("numpy"))()
    return {k: np.asarray(to_numpy(v)) for k, v in zip(keys, values)}
