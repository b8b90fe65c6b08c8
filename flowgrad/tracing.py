"""Trace: the values of one run, and the adjoint v̄ of each node, for inspection and drawing."""
from __future__ import annotations

from .errors import NodeLookupError, UsageError, located
from .graph import Node


class Trace:
    """``tr.value(node)`` (or ``tr[node]``) is a node's value; ``tr.adjoint(node)`` its
    adjoint v̄ with respect to the program's first output (when that output is a real
    scalar: a complex one has no implicit seed, as in torch).
    In Jupyter a trace shows itself drawn, with every value and v̄."""

    def __init__(self, program, values: dict, adjoints: dict, loop_runs=None):
        self.program = program
        self.graph = program.graph
        self._values = values
        #: {forward node: its adjoint node}
        self.adjoint_nodes = adjoints
        self._loop_runs = dict(loop_runs or {})

    def loop_run(self, loop: Node):
        """The iterations of loop node ``loop`` in this run (a ``LoopRun``: each
        iteration's body values, up to 12 iterations), or None if none were kept (or
        ``loop`` is no loop node)."""
        spec = loop.attrs.get("spec") if loop.op is not None else None
        return self._loop_runs.get(id(spec)) if spec is not None else None

    @property
    def outputs(self) -> list[Node]:
        return list(self.program.outputs)

    @property
    def nodes(self) -> list[Node]:
        """The nodes of the program (its outputs and what they need), in evaluation order."""
        return [self.graph.node(i) for i in self.program.order]

    def __contains__(self, node) -> bool:
        return isinstance(node, Node) and node.graph is self.graph \
            and node.id in self._values

    def __getitem__(self, node: Node):
        """The node's value; a node this trace does not hold (not computed, or of another
        graph, whose id would name another node here) is a NodeLookupError (a KeyError
        too), and something that is not a node a UsageError."""
        if not isinstance(node, Node):
            raise located(UsageError, f"a trace is indexed by a node of its graph, got "
                                      f"{type(node).__name__} {node!r:.60}")
        if node.graph is not self.graph:
            raise located(NodeLookupError, f"{node.name!r} belongs to another graph than "
                                           "this trace's program")
        try:
            return self._values[node.id]
        except KeyError:
            raise located(NodeLookupError,
                          f"{node.name!r} was not computed in this trace") from None

    def value(self, node: Node):
        """v = the node's value in this run (the same as ``tr[node]``)."""
        return self[node]

    def has_adjoint(self, node: Node) -> bool:
        """Whether ``node`` lies on a path to the output (else its v̄ is zero)."""
        return node in self.adjoint_nodes

    def adjoint(self, node: Node):
        """v̄ = ∂(first output)/∂node at this point; zeros where the output does not depend on it."""
        if not self.adjoint_nodes:
            raise located(UsageError, "this trace has no adjoints: its program's first "
                                      "output is not a scalar, or is complex (which has "
                                      "no implicit seed: fg.adjoints with seed=)")
        value = self[node]   # (refuses a node of another graph, or one not computed)
        adj = self.adjoint_nodes.get(node)
        if adj is None:
            return self.program.backend.xp.zeros_like(value)
        return self._values[adj.id]

    def __repr__(self):
        return f"<flowgrad.Trace of {len(self.program.order)} nodes>"

    def _repr_mimebundle_(self, include=None, exclude=None):
        from .viz.notebook import mimebundle  # drawn inline in Jupyter, text without `dot`
        return mimebundle(self, include, exclude)
