"""``walkthrough``: the seed's forward and backward pass, one frame per step.

The graph is laid out once by ``dot`` (so nothing moves between frames); each frame
is then only a restyling: which nodes show their value, which show their adjoint v̄,
which node is current, which edges carry the step, and a caption with the numbers.
A frame's style is two integers per node (the frame at which its value and its v̄
appear) plus the frame's own lists; the same CSS serves the HTML player (restyled by
a few lines of JavaScript) and the numbered SVG files (restyled here, in Python).
"""
from __future__ import annotations

import html
import json
import os
import re

import numpy as np

from flowgrad.autodiff import ancestors

from . import labels as L
from .dot import draw
from .local import edge_terms

CSS = """
svg.wt text { font-family: "DejaVu Sans", Verdana, sans-serif; }
svg.wt g.node:not(.v) { opacity: .28; }
svg.wt g.node:not(.v) g.val text, svg.wt g.node:not(.a) g.adj text { visibility: hidden; }
svg.wt g.node.cur polygon, svg.wt g.node.cur path, svg.wt g.node.cur ellipse
  { stroke: #d62728; stroke-width: 3px; }
svg.wt g.node.cur { filter: drop-shadow(0 0 4px #d62728); }
svg.wt g.node.use polygon, svg.wt g.node.use path, svg.wt g.node.use ellipse
  { stroke: #1f77b4; stroke-width: 2.5px; }
svg.wt g.edge.on path { stroke: #d62728; stroke-width: 2.5px; }
svg.wt g.edge.on polygon { stroke: #d62728; fill: #d62728; }
svg.wt g.edge.on text { fill: #d62728; font-weight: bold; }
svg.wt.phase-fw g.edge text, svg.wt.phase-seed g.edge text { visibility: hidden; }
svg.wt g.caption text { font-size: 13px; fill: #222; }
svg.wt g.caption text.title { font-weight: bold; font-size: 15px; }
"""


# -- the steps ------------------------------------------------------------------------------

class _Plan:
    """The frames of one walkthrough and, per node, when its value and v̄ appear."""

    def __init__(self, trace, precision, max_elems):
        if not trace.adjoint_nodes:
            raise ValueError("walkthrough needs a trace with adjoints: compile a scalar loss "
                             "first, e.g. fg.compile(loss).trace(...)")
        self.trace, self.p, self.m = trace, precision, max_elems
        self.loss = trace.outputs[0]
        self.h = trace.graph._handles
        self.ids = ancestors([self.loss])
        self.frames, self.val_at, self.adj_at = [], {}, {}

    # formatting helpers: one line of numbers, a node's name, its adjoint's symbol
    def num(self, a) -> str:
        return L.one_line(np.asarray(_host(a)), self.p, self.m)

    def name(self, i) -> str:
        return L.display_name(self.h[i], self.p)

    def vbar(self, i) -> str:
        return L.bar(self.name(i))

    def add(self, phase, cur, use=(), edges=(), lines=()):
        self.frames.append({"phase": phase, "cur": [f"n{i}" for i in cur],
                            "use": [f"n{i}" for i in use], "edges": list(edges),
                            "lines": list(lines)})
        return len(self.frames) - 1

    def build(self):
        self.leaves()
        self.ops = [i for i in self.ids if self.h[i].op is not None]
        for i in self.ops:
            self.forward_step(i)
        self.seed()
        order = [i for i in reversed(self.ids) if i != self.loss.id
                 and self.trace.has_adjoint(self.h[i]) and self.h[i].kind != "constant"]
        terms, ones = self.terms(order)
        for k, i in enumerate(order):
            self.backward_step(i, k + 1, len(order), terms, ones)
        self.done()
        return self

    def leaves(self):
        leaves = [i for i in self.ids if self.h[i].op is None]
        lines = ["The leaves hold their values before anything is computed:"]
        for i in leaves:
            node = self.h[i]
            if node.kind != "constant" or L.user_name(node):
                lines.append(f"{self.name(i)} = {self.num(self.trace[node])}  ({node.kind})")
        consts = [self.name(i) for i in leaves
                  if self.h[i].kind == "constant" and not L.user_name(self.h[i])]
        if consts:
            lines.append("constants: " + ", ".join(consts))
        k = self.add("fw", leaves, lines=["Forward pass: the leaves"] + lines)
        for i in leaves:
            self.val_at[i] = k

    def forward_step(self, j):
        node = self.h[j]
        ins = list(node._d["inputs"])
        n_ops, step = len(self.ops), self.ops.index(j) + 1
        args = ", ".join(self.name(i) for i in ins)
        vals = ", ".join(self.num(self.trace[self.h[i]]) for i in ins)
        op = L.op_text(node)
        lines = [f"Forward pass: step {step} of {n_ops}",
                 f"v_{step}: {self.name(j)} = {op}({args})",
                 f"= {op}({vals})",
                 f"= {self.num(self.trace[node])}"]
        k = self.add("fw", [j], ins, [f"en{i}_n{j}" for i in dict.fromkeys(ins)], lines)
        self.val_at[j] = k

    def seed(self):
        n = self.name(self.loss.id)
        k = self.add("seed", [self.loss.id], lines=[
            "Backward pass: the seed", f"{self.vbar(self.loss.id)} = ∂{n}/∂{n} = 1",
            "Now visit the nodes in reverse order: v̄_i = Σ_{j ∈ children(i)} v̄_j ∂v_j/∂v_i"])
        self.adj_at[self.loss.id] = k

    def terms(self, order):
        """Each child's summand v̄_j ∂v_j/∂v_i and, on scalar edges, ∂v_j/∂v_i alone."""
        edges = [(i, j) for i in order for j in self.children(i)]
        scalar = [(i, j) for i, j in edges if self.h[i].shape == () and self.h[j].shape == ()]
        return edge_terms(self.trace, edges, "adjoint"), edge_terms(self.trace, scalar, "one")

    def children(self, i):
        ids = set(self.ids)
        users = self.trace.graph.nx.successors(i)
        return sorted(j for j in users if j in ids and self.trace.has_adjoint(self.h[j]))

    def backward_step(self, i, step, total, terms, ones):
        kids = [j for j in self.children(i) if (i, j) in terms]
        head = [f"Backward pass: step {step} of {total}",
                f"{self.vbar(i)} = Σ over children of {self.name(i)}: v̄_j ∂v_j/∂{self.name(i)}"]
        if kids and all((i, j) in ones for j in kids):
            body = self.scalar_sum(i, kids, terms, ones)
        else:
            body = [f"from {self.name(j)}: " + " ; ".join(
                L.rule_text(self.h[j], a, self.p) for a, n in
                enumerate(self.h[j]._d["inputs"]) if n == i) + f"  →  {self.num(terms[(i, j)])}"
                for j in kids]
        body.append(f"{self.vbar(i)} = {self.num(self.trace.adjoint(self.h[i]))}")
        k = self.add("bw", [i], kids, [f"en{i}_n{j}" for j in kids], head + body)
        self.adj_at[i] = k

    def scalar_sum(self, i, kids, terms, ones):
        """The sum written out: symbols, then numbers, then each product."""
        sym = " + ".join(f"{self.vbar(j)} · ∂{self.name(j)}/∂{self.name(i)}" for j in kids)
        nums = " + ".join(f"{self.num(self.trace.adjoint(self.h[j]))} × "
                          f"{self.num(ones[(i, j)])}" for j in kids)
        lines = [f"= {sym}", f"= {nums}"]
        if len(kids) > 1:
            lines.append("= " + " + ".join(self.num(terms[(i, j)]) for j in kids))
        return lines

    def done(self):
        asked = [i for i in self.ids if self.h[i].kind in ("variable", "placeholder")
                 and self.trace.has_adjoint(self.h[i])]
        n = self.name(self.loss.id)
        lines = ["Done: the gradient"] + [
            f"∂{n}/∂{self.name(i)} = {self.vbar(i)} = {self.num(self.trace.adjoint(self.h[i]))}"
            for i in asked]
        self.add("done", asked, lines=lines)


def _host(a):
    from flowgrad.backends import to_numpy
    return to_numpy(a)


# -- the one layout ---------------------------------------------------------------------------

def _layout(trace, plan, rankdir, precision, max_elems) -> str:
    """The graph as SVG, laid out once, with each node's value and v̄ cells tagged."""
    dot = draw(trace, rankdir=rankdir, precision=precision, max_elems=max_elems,
               _cell_ids=True, _only=set(plan.ids))
    svg = dot.pipe(format="svg").decode("utf-8")
    svg = re.sub(r"<\?xml.*?\?>|<!DOCTYPE.*?>|<!--.*?-->", "", svg, flags=re.S)
    # Graphviz writes a tagged cell as <g id="a_n5_val"><a xlink:href="#" ...>: keep the
    # group (renamed, with a class the CSS can hide) and drop the link.
    svg = re.sub(r'<g id="a_(n\d+)_(val|adj)">', r'<g id="\1_\2" class="\2">', svg)
    svg = re.sub(r"<a\b[^>]*>|</a>", "", svg)
    return svg.strip()


def _size(svg):
    """The (width, height) in points Graphviz gave the drawing."""
    w = float(re.search(r'<svg[^>]*?width="([\d.]+)pt"', svg).group(1))
    h = float(re.search(r'<svg[^>]*?height="([\d.]+)pt"', svg).group(1))
    return w, h


def frame_classes(plan, k) -> dict:
    """{DOM id: class} of every node and edge at frame ``k`` (the JavaScript twin is
    ``show`` in the HTML player)."""
    f = plan.frames[k]
    out = {}
    for i in plan.ids:
        c = "node"
        if plan.val_at.get(i, 1 << 30) <= k:
            c += " v"
        if plan.adj_at.get(i, 1 << 30) <= k:
            c += " a"
        nid = f"n{i}"
        c += " cur" if nid in f["cur"] else " use" if nid in f["use"] else ""
        out[nid] = c
    for e in f["edges"]:
        out[e] = "edge on"
    return out


def _restyle(svg, classes) -> str:
    def repl(m):
        return f'<g id="{m.group(1)}" class="{classes.get(m.group(1), m.group(2))}">'
    return re.sub(r'<g id="([^"]+)" class="(node|edge)">', repl, svg)


def frame_svg(base, plan, k) -> str:
    """Frame ``k`` as one standalone SVG: the caption above the restyled graph."""
    f = plan.frames[k]
    w, h = _size(base)
    line_h, top = 18, 22
    cap_h = top + line_h * len(f["lines"])
    width = max(w, 16 + 7.4 * max(len(t) for t in f["lines"]))
    title = ' class="title"'
    texts = "".join(
        f'<text x="8" y="{top + line_h * n}"{title if n == 0 else ""}>'
        f'{html.escape(t)}</text>' for n, t in enumerate(f["lines"]))
    inner = _restyle(base, frame_classes(plan, k))
    inner = re.sub(r'<svg\b[^>]*?width="[\d.]+pt" height="[\d.]+pt"',
                   f'<svg x="0" y="{cap_h}" width="{w}" height="{h}"', inner, count=1)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" '
            f'xmlns:xlink="http://www.w3.org/1999/xlink" class="wt phase-{f["phase"]}" '
            f'width="{width:.0f}pt" height="{h + cap_h:.0f}pt" '
            f'viewBox="0 0 {width:.1f} {h + cap_h:.1f}"><style>{CSS}</style>'
            f'<rect width="100%" height="100%" fill="white"/>'
            f'<g class="caption">{texts}</g>{inner}</svg>')


# -- the HTML player ----------------------------------------------------------------------------

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: "DejaVu Sans", Verdana, sans-serif; margin: 12px; color: #222; }}
#bar {{ display: flex; gap: 10px; align-items: center; margin-bottom: 8px; }}
#slider {{ flex: 1; }}
#caption {{ font-size: 15px; min-height: 7em; background: #f7f7f7; padding: 8px 12px;
           border-left: 4px solid #d62728; white-space: pre-wrap; }}
#caption .title {{ font-weight: bold; }}
#graph {{ overflow: auto; border: 1px solid #ddd; margin-top: 8px; }}
#graph svg {{ max-width: 100%; height: auto; }}
{css}
</style></head><body>
<h2>{title}</h2>
<div id="bar"><button id="prev">&#9664; prev</button>
<input id="slider" type="range" min="0" max="{last}" value="0">
<button id="next">next &#9654;</button><span id="counter"></span></div>
<div id="caption"></div>
<div id="graph">{svg}</div>
<script>
const D = {data};
const svg = document.querySelector("#graph svg");
svg.setAttribute("class", "wt");
const nodes = Array.from(svg.querySelectorAll("g.node"));
const edges = Array.from(svg.querySelectorAll("g.edge"));
const slider = document.getElementById("slider");
let k = 0;
function show(n) {{
  k = Math.max(0, Math.min(D.frames.length - 1, n));
  const f = D.frames[k];
  for (const g of nodes) {{
    let c = "node";
    if (g.id in D.valAt && D.valAt[g.id] <= k) c += " v";
    if (g.id in D.adjAt && D.adjAt[g.id] <= k) c += " a";
    if (f.cur.includes(g.id)) c += " cur"; else if (f.use.includes(g.id)) c += " use";
    g.setAttribute("class", c);
  }}
  for (const g of edges) g.setAttribute("class", f.edges.includes(g.id) ? "edge on" : "edge");
  svg.setAttribute("class", "wt phase-" + f.phase);
  const cap = document.getElementById("caption");
  cap.replaceChildren();
  f.lines.forEach((t, n) => {{
    const div = document.createElement("div");
    div.textContent = t;
    if (n === 0) div.className = "title";
    cap.appendChild(div);
  }});
  slider.value = k;
  document.getElementById("counter").textContent = (k + 1) + " / " + D.frames.length;
  document.body.dataset.frame = k;
}}
document.getElementById("prev").onclick = () => show(k - 1);
document.getElementById("next").onclick = () => show(k + 1);
slider.oninput = () => show(parseInt(slider.value, 10));
document.addEventListener("keydown", e => {{
  if (e.key === "ArrowLeft") show(k - 1);
  if (e.key === "ArrowRight") show(k + 1);
}});
show(0);
</script></body></html>
"""


def _page(base, plan, title) -> str:
    ids = {f"n{i}" for i in plan.ids}
    data = {"frames": plan.frames,
            "valAt": {f"n{i}": k for i, k in plan.val_at.items() if f"n{i}" in ids},
            "adjAt": {f"n{i}": k for i, k in plan.adj_at.items() if f"n{i}" in ids}}
    # "</" must not close the script element early, whatever a caption contains
    blob = json.dumps(data, ensure_ascii=False).replace("</", "<\\/")
    return PAGE.format(title=html.escape(title), css=CSS, last=len(plan.frames) - 1,
                       svg=base, data=blob)


def walkthrough(trace, path, *, format=None, rankdir="LR", precision=4, max_elems=6,
                title="Backpropagation, step by step"):
    """Write the trace's forward and backward pass one step per frame.

    ``path`` ending in ``.html`` (or ``format="html"``): one self-contained HTML file
    (inline SVG, no network) with previous/next buttons, arrow keys and a slider.
    Otherwise (or ``format="svg"``) ``path`` is a folder that receives numbered SVG
    files ``frame_000.svg`` …, one per frame, for slides. Returns the path(s) written.
    The trace must have adjoints (its first output a scalar loss); laying the graph
    out needs Graphviz's ``dot``.
    """
    path = os.fspath(path)
    fmt = format or ("html" if path.lower().endswith((".html", ".htm")) else "svg")
    plan = _Plan(trace, precision, max_elems).build()
    base = _layout(trace, plan, rankdir, precision, max_elems)
    if fmt == "html":
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(_page(base, plan, title))
        return path
    if fmt != "svg":
        raise ValueError(f"walkthrough writes 'html' or 'svg', not {fmt!r}")
    os.makedirs(path, exist_ok=True)
    digits = max(3, len(str(len(plan.frames) - 1)))
    paths = []
    for k in range(len(plan.frames)):
        p = os.path.join(path, f"frame_{k:0{digits}d}.svg")
        with open(p, "w", encoding="utf-8") as fh:
            fh.write(frame_svg(base, plan, k))
        paths.append(p)
    return paths
