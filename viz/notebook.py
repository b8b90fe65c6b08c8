"""Inline display in Jupyter: a ``Graph``, ``Program`` or ``Trace`` shows itself drawn.

``mimebundle(obj)`` is what their ``_repr_mimebundle_`` returns: an SVG of the drawing
(values and adjoints for a trace) plus a text line. It never raises: without Graphviz's
``dot``, or when rendering fails, the bundle is text only (the object's repr, the install
hint and a short listing of its nodes). Big graphs are cut down to the nodes nearest the
outputs, so a notebook cell never waits on laying out 10⁵ boxes.
"""
from __future__ import annotations


#: at most this many boxes are drawn inline; more are summarised as "⋯ k" inputs
MAX_INLINE_NODES = 150
#: a text listing names at most this many nodes
MAX_LISTED = 40


def _what(obj):
    """(the thing ``draw`` takes, its nodes in order) for a Graph, Program or Trace."""
    from flowgrad.graph import Graph
    from flowgrad.engine.program import Program
    from flowgrad.tracing import Trace
    if isinstance(obj, Trace):
        return obj, obj.nodes
    if isinstance(obj, Program):
        g = obj.graph
        return list(obj.outputs), [g.node(i) for i in obj.order]
    if isinstance(obj, Graph):
        return obj, obj.nodes
    raise TypeError(f"no inline drawing for {type(obj).__name__}")


def text_listing(obj) -> str:
    """The repr, then one line per node (the first ``MAX_LISTED``): name, op, shape."""
    from .labels import fmt_shape, op_text
    _, nodes = _what(obj)
    lines = [repr(obj)]
    for n in nodes[:MAX_LISTED]:
        lines.append(f"  {n.name}: {op_text(n)} {fmt_shape(n.shape)}")
    if len(nodes) > MAX_LISTED:
        lines.append(f"  … {len(nodes) - MAX_LISTED} more nodes")
    return "\n".join(lines)


def mimebundle(obj, include=None, exclude=None) -> dict:
    """{"image/svg+xml": the drawing, "text/plain": repr}, or text only when the drawing
    cannot be made (no `dot`, an empty graph, any rendering error)."""
    from .dot import INSTALL_HINT, dot_available, draw
    text = repr(obj)
    try:
        what, nodes = _what(obj)
        if not nodes:
            return {"text/plain": text}
        if not dot_available():
            return {"text/plain": text_listing(obj) + "\n\n" + INSTALL_HINT}
        big = len(nodes) > MAX_INLINE_NODES
        drawing = draw(what, max_nodes=MAX_INLINE_NODES if big else None,
                       rankdir="LR" if len(nodes) <= 12 else "TB")
        svg = drawing.pipe(format="svg").decode("utf-8")
    except Exception as err:  # a display hook must never raise in a notebook
        return {"text/plain": f"{text}\n(no drawing: {type(err).__name__}: {err})"}
    if big:
        text += f" (drawn: the {MAX_INLINE_NODES} nodes nearest the outputs)"
    return {"image/svg+xml": svg, "text/plain": text}

