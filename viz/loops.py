"""A loop's body drawn as a cluster beside its box (``fg.viz.draw(..., expand=...)``).

A loop (scan, while_loop, cond) is one box of the drawing, "scan × T". Asked to expand
it — ``expand=True``, or a list naming the loop ("scan", "while_loop", "cond",
"scan vjp" for a derivative's) — the drawing also shows each traced body as a cluster: its argument placeholders
(the carry entering, the x slice), the captured nodes of the graph around it, its ops
and its outputs, with a dashed edge from the loop's box to each body. The body is the
graph the loop's kernel runs once per iteration. (``draw(tr, unroll=True)`` draws a traced
run instead as one copy of the body per iteration: viz/unroll.py.)
"""
from __future__ import annotations

from flowgrad.loops.loop_op import is_loop

from . import labels as L


def _wanted(spec, expand) -> bool:
    if expand is True:
        return True
    if isinstance(expand, (list, tuple, set)):
        return spec.name in expand      # "scan" opens the user's scans, not "scan vjp"
    return False


def _role(body, node, spec) -> str:
    """A body node's caption: what it stands for in the loop."""
    if node in body.params:
        k = body.params.index(node)
        if spec.kind == "cond":
            return f"operand {k}"
        return f"carry {k}" if k < spec.n_carry else f"x slice {k - spec.n_carry}"
    if node in body.cap_params:
        k = body.cap_params.index(node)
        if k >= len(body.captured):          # a body loaded from a file: by position
            return f"captured input {k}"
        return f"captured {L.display_name(body.captured[k])}"
    return L.op_text(node)


def emit_bodies(dot, scene, ids, expand):
    """Add a cluster per body of every drawn loop that ``expand`` opens."""
    if not expand:
        return
    for i in ids:
        node = scene.handles[i]
        if not is_loop(node) or not _wanted(node.attrs["spec"], expand):
            continue
        spec = node.attrs["spec"]
        for k, body in enumerate(spec.bodies):
            _emit_body(dot, f"n{i}", f"b{i}_{k}", body, spec)


def _emit_body(dot, loop_id, prefix, body, spec):
    outs = {o.id: k for k, o in enumerate(body.outs)}
    with dot.subgraph(name=f"cluster_{prefix}") as c:
        c.attr(label=L.plain(f"body of {spec.label()}: {body.name}"), style="dashed",
               fontname=L.FONT)
        for node in body.graph.nodes:
            text = f"{L.display_name(node)}\n{_role(body, node, spec)} {L.fmt_shape(node.shape)}"
            if node.id in outs:
                text += f"\nresult {outs[node.id]}"
            c.node(f"{prefix}_{node.id}", label=L.plain(text), shape="box", fontsize="9",
                   style="rounded" if node.kind == "op" else "")
            for src in dict.fromkeys(node.input_ids):
                c.edge(f"{prefix}_{src}", f"{prefix}_{node.id}")
    first = body.graph.nodes[0].id if len(body.graph) else None
    if first is not None:
        dot.edge(loop_id, f"{prefix}_{first}", style="dashed", arrowhead="none",
                 constraint="false")
