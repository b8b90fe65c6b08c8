"""fg.summary: the variables of a model, by name scope, with their parameter counts.

    print(fg.summary(loss))      # the variables ``loss`` depends on
    fg.summary(g)                # every variable of graph g; in a notebook, an HTML table
"""
from __future__ import annotations

import html
import math

from .graph import Graph, Node

__all__ = ["summary", "Summary"]


def _shape(shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


class Summary:
    """``rows``: (name, scope, shape, dtype, count) per variable, in creation order;
    ``scopes``: {scope path: count}; ``total``: all parameters; ``nbytes``."""

    def __init__(self, variables):
        self.variables = list(variables)
        self.rows = [(v.name, "/".join(v.scope), v.shape, v.dtype, math.prod(v.shape))
                     for v in self.variables]
        self.scopes: dict[str, int] = {}
        for _, scope, _, _, count in self.rows:
            self.scopes[scope] = self.scopes.get(scope, 0) + count
        self.total = sum(r[4] for r in self.rows)
        self.nbytes = sum(r[4] * r[3].itemsize for r in self.rows)

    def _grouped(self):
        """[(scope, [rows])] in order of first appearance."""
        groups: dict[str, list] = {}
        for r in self.rows:
            groups.setdefault(r[1], []).append(r)
        return list(groups.items())

    def _footer(self) -> str:
        n, s = len(self.rows), len(self.scopes)
        return (f"total: {self.total:,} parameters in {n} variable{'s' * (n != 1)}, "
                f"{s} scope{'s' * (s != 1)} ({_size(self.nbytes)})")

    def __str__(self):
        head = ("variable", "shape", "dtype", "parameters")
        body = []
        for scope, rows in self._grouped():
            for name, _, shape, dtype, count in rows:
                body.append((name, _shape(shape), str(dtype), f"{count:,}"))
            if scope and len(rows) > 1:
                body.append((f"  {scope} (scope)", "", "", f"{self.scopes[scope]:,}"))
        widths = [max(len(r[k]) for r in [head] + body) for k in range(4)]

        def line(r):
            return (f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  "
                    f"{r[3]:>{widths[3]}}").rstrip()
        rule = "-" * len(line(head))
        return "\n".join([line(head), rule, *map(line, body), rule, self._footer()])

    def __repr__(self):
        return str(self)

    def _repr_html_(self):
        e = html.escape
        out = ["<table><thead><tr><th style='text-align:left'>variable</th><th>shape</th>"
               "<th>dtype</th><th style='text-align:right'>parameters</th></tr></thead><tbody>"]
        for scope, rows in self._grouped():
            if scope:
                out.append(f"<tr><td colspan='3'><b>{e(scope)}</b></td>"
                           f"<td style='text-align:right'><b>{self.scopes[scope]:,}</b>"
                           f"</td></tr>")
            for name, _, shape, dtype, count in rows:
                out.append(f"<tr><td style='text-align:left'>{e(name)}</td>"
                           f"<td>{e(_shape(shape))}</td><td>{e(str(dtype))}</td>"
                           f"<td style='text-align:right'>{count:,}</td></tr>")
        out.append(f"</tbody><tfoot><tr><td colspan='4'>{e(self._footer())}</td></tr>"
                   f"</tfoot></table>")
        return "".join(out)


def _size(nbytes) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024


def summary(outputs_or_graph=None) -> Summary:
    """A table of variables (name, shape, dtype, count) grouped by name scope, with the
    total parameter count (state variables, such as batch norm's running statistics,
    are not parameters and are left out). Give a graph (every variable), a node or a list of nodes (the
    variables they depend on), a layer or model (its ``.variables``), or nothing (the
    default graph)."""
    from .autodiff import ancestors
    from .graph import default_graph
    obj = outputs_or_graph
    if obj is None:
        obj = default_graph()
    from .state import is_state       # state (running statistics) is no parameter
    if isinstance(obj, Graph):
        return Summary(n for n in obj.nodes if n.kind == "variable" and not is_state(n))
    if hasattr(obj, "variables") and not isinstance(obj, (Node, list, tuple)):
        return Summary(obj.variables)
    nodes = [obj] if isinstance(obj, Node) else list(obj)
    if not nodes or not all(isinstance(n, Node) for n in nodes):
        raise TypeError("fg.summary takes a graph, a node, a list of nodes or a layer")
    g = nodes[0].graph
    return Summary(g.node(i) for i in ancestors(nodes)
                   if g.nx.nodes[i]["kind"] == "variable" and not is_state(g.node(i)))
