"""``walkthrough``: the lecture notes' forward and backward pass, one frame per step.

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
from flowgrad.errors import ArgumentError, FlowgradError

from . import labels as L
from flowgrad.composite import groups

from .dot import GroupUnit, unit_key, draw, drawn_units
from .local import edge_terms
from flowgrad.loops.loop_op import is_loop_result

from .unroll import iteration_note, walk_view

CSS = """
svg.wt text { font-family: "DejaVu Sans", Verdana, sans-serif; }
svg.wt g.node:not(.v) { opacity: .28; }
svg.wt g.node:not(.v) g.val text, svg.wt g.node:not(.a) g.adj text { visibility: hidden; }
svg.wt g.node.cur path, svg.wt g.node.cur polygon[fill="none"], svg.wt g.node.cur > polygon,
svg.wt g.node.cur ellipse { stroke: #d62728; stroke-width: 3px; }
svg.wt g.node.cur { filter: drop-shadow(0 0 4px #d62728); }
svg.wt g.node.use path, svg.wt g.node.use polygon[fill="none"], svg.wt g.node.use > polygon,
svg.wt g.node.use ellipse { stroke: #1f77b4; stroke-width: 2.5px; }
svg.wt g.edge.on path { stroke: #d62728; stroke-width: 2.5px; }
svg.wt g.edge.on polygon { stroke: #d62728; fill: #d62728; }
svg.wt g.edge.on text { fill: #d62728; font-weight: bold; }
svg.wt.phase-fw g.edge text, svg.wt.phase-seed g.edge text { visibility: hidden; }
svg.wt g.caption text { font-size: 13px; fill: #222; }
svg.wt g.caption text.title { font-weight: bold; font-size: 15px; }
"""


# -- the steps ------------------------------------------------------------------------------

class _Plan:
    """The frames of one walkthrough and, per drawn box, when its value and v̄ appear.

    A step is a drawn box (a *unit*): an op node, or a collapsed ``fg.composite`` group
    (``level="ops"``: ``fg.linear``, ``fg.mse``, your own composites are one step each;
    an op node is one step either way). ``level="primitives"`` opens every group.
    """

    def __init__(self, trace, precision, max_elems, level="ops", expand=False,
                 constants=True):
        if not trace.adjoint_nodes:
            raise ValueError("walkthrough needs a trace with adjoints: compile a real scalar loss "
                             "first, e.g. fg.compile(loss).trace(...)")
        if level not in ("ops", "primitives"):
            raise ValueError(f"level is 'ops' or 'primitives', not {level!r}")
        self.trace, self.p, self.m = trace, precision, max_elems
        self.loss = trace.outputs[0]
        self.h = trace.graph.handles
        self.ids = ancestors([self.loss])
        self.idset = set(self.ids)
        self.expand = True if level == "primitives" else expand
        self.hidden = set() if constants else {i for i in self.ids
                                               if self.h[i].kind == "constant"}
        self.unit = drawn_units(trace.graph, self.ids, (), self.expand)
        self.members = {}
        for i in self.ids:
            self.members.setdefault(self.unit[i], []).append(i)
        self.frames, self.val_at, self.adj_at = [], {}, {}

    # formatting helpers: one line of numbers, a box's name, its adjoint's symbol
    def num(self, a) -> str:
        return L.one_line(np.asarray(_host(a)), self.p, self.m)

    def name(self, u) -> str:
        """A unit's label, as its box shows it ("z", "mul₄", "mse")."""
        return str(u) if isinstance(u, GroupUnit) else L.display_name(self.h[u], self.p)

    def vbar(self, u) -> str:
        return L.bar(self.name(u))

    def key(self, u) -> str:
        return unit_key(u)

    def keys(self) -> list:
        """The DOM ids of every drawn box."""
        return [self.key(u) for u in self.members
                if self.is_group(u) or u not in self.hidden]

    def is_group(self, u) -> bool:
        return isinstance(u, GroupUnit)

    def add(self, phase, cur, use=(), edges=(), lines=()):
        self.frames.append({"phase": phase, "cur": [self.key(u) for u in cur],
                            "use": [self.key(u) for u in dict.fromkeys(use)],
                            "edges": list(dict.fromkeys(edges)), "lines": list(lines)})
        return len(self.frames) - 1

    def where(self, u) -> str:
        """" · scan, iteration 2 of 5" for a box of an unrolled loop's copy, else ""."""
        note = "" if self.is_group(u) else iteration_note(self.trace, u)
        return f" · {note}" if note else ""

    def edge(self, a, b) -> str:
        return f"e{self.key(a)}_{self.key(b)}"

    # the structure at the level of units
    def outputs(self, u) -> list:
        """The nodes a unit hands on: itself, or a group's members used outside it."""
        if not self.is_group(u):
            return [u]
        members = self.members[u]
        inside = set(members)
        outs = [i for i in members if i == self.loss.id or any(
            j in self.idset and j not in inside for j in self.trace.graph.nx.successors(i))]
        return outs or [max(members)]

    def inputs(self, u) -> list:
        """The units a unit reads, in argument order (a group: its function's arguments)."""
        if not self.is_group(u):
            return [self.unit[i] for i in self.h[u].input_ids if i not in self.hidden]
        record = groups(self.trace.graph).get(str(u), {})
        inside = set(self.members[u])
        ext = [i for m in self.members[u] for i in self.h[m].input_ids if i not in inside]
        known = set(ext)
        # its arguments first, then what it read besides (a variable it closes over)
        ordered = [i for i in record.get("args", ()) if i in known] + ext
        return list(dict.fromkeys(self.unit[i] for i in ordered if i not in self.hidden))

    def input_names(self, j) -> list:
        """The labels of an op node's inputs as drawn (a composite's output: its name)."""
        return [self.name(self.unit[i]) for i in self.h[j].input_ids]

    def args(self, u) -> list:
        """A group's argument nodes (for its rule's formula), in call order."""
        record = groups(self.trace.graph).get(str(u), {})
        inside = set(self.members[u])
        return [i for i in record.get("args", ()) if i not in inside]

    def build(self):
        self.leaves()
        self.ops = [u for u in self.members if self.is_group(u) or self.h[u].op is not None]
        self.ops.sort(key=lambda u: min(self.members[u]))
        for k, u in enumerate(self.ops):
            self.forward_step(u, k + 1)
        self.seed()
        loss_unit = self.unit[self.loss.id]
        order = [u for u in reversed(self.ops + self.leaf_units) if u != loss_unit
                 and any(self.trace.has_adjoint(self.h[o]) for o in self.outputs(u))
                 and (self.is_group(u) or self.h[u].kind != "constant")]
        order.sort(key=lambda u: -max(self.members[u]))
        terms, ones = self.terms(order)
        for k, u in enumerate(order):
            self.backward_step(u, k + 1, len(order), terms, ones)
        self.done()
        return self

    def leaves(self):
        self.leaf_units = [u for u in self.members
                           if not self.is_group(u) and self.h[u].op is None]
        shown = [u for u in self.leaf_units if u not in self.hidden]
        lines = ["The leaves hold their values before anything is computed:"]
        for i in shown:
            node = self.h[i]
            if node.kind != "constant" or L.user_name(node):
                lines.append(f"{self.name(i)} = {self.num(self.trace[node])}  ({node.kind})")
        consts = [self.name(i) for i in shown
                  if self.h[i].kind == "constant" and not L.user_name(self.h[i])]
        if consts:
            lines.append("constants: " + ", ".join(consts))
        k = self.add("fw", shown, lines=["Forward pass: the leaves"] + lines)
        for i in shown:
            self.val_at[self.key(i)] = k

    def forward_step(self, u, step):
        ins = self.inputs(u)
        if self.is_group(u):
            op = groups(self.trace.graph).get(str(u), {}).get("label", str(u))
            args = [self.unit[i] for i in self.args(u)] or ins
            arg_text = ", ".join(self.name(a) for a in args)
            vals = ", ".join(self.num(self.trace[self.h[self.outputs(a)[0]]]) for a in args)
            outs = self.outputs(u)
            result = "; ".join(self.num(self.trace[self.h[o]]) for o in outs)
            lines = [f"Forward pass: step {step} of {len(self.ops)}",
                     f"v_{step}: {self.name(u)} = {op}({arg_text})  "
                     f"(a composite of {len(self.members[u])} nodes)",
                     f"= {op}({vals})", f"= {result}"]
        else:
            node = self.h[u]
            raw = list(node.input_ids)
            args = ", ".join(self.name(self.unit[i]) for i in raw)
            vals = ", ".join(self.num(self.trace[self.h[i]]) for i in raw)
            op = L.op_text(node)
            lines = [f"Forward pass: step {step} of {len(self.ops)}",
                     f"v_{step}: {self.name(u)} = {op}({args})",
                     f"= {op}({vals})",
                     f"= {self.num(self.trace[node])}"]
        lines[0] += self.where(u)
        k = self.add("fw", [u], ins, [self.edge(a, u) for a in ins], lines)
        self.val_at[self.key(u)] = k

    def seed(self):
        u = self.unit[self.loss.id]
        n = self.name(u)
        k = self.add("seed", [u], lines=[
            "Backward pass: the seed", f"{self.vbar(u)} = ∂{n}/∂{n} = 1",
            "Now visit the boxes in reverse order: v̄_i = Σ_{j ∈ children(i)} v̄_j ∂v_j/∂v_i"])
        self.adj_at[self.key(u)] = k

    def children(self, i):
        """The nodes that read node ``i`` and carry an adjoint (in the drawn graph)."""
        users = self.trace.graph.nx.successors(i)
        return sorted(j for j in users if j in self.idset and self.trace.has_adjoint(self.h[j]))

    def terms(self, order):
        """Each child's summand v̄_j ∂v_j/∂v_i and, on scalar edges, ∂v_j/∂v_i alone."""
        edges = [(o, j) for u in order for o in self.outputs(u) for j in self.children(o)
                 if self.unit[j] != u]
        scalar = [(i, j) for i, j in edges if self.h[i].shape == () and self.h[j].shape == ()
                  and self.unit[j] == j]
        return edge_terms(self.trace, edges, "adjoint"), edge_terms(self.trace, scalar, "one")

    def local(self, o, U, term, ones):
        """(∂U/∂o as a number or None, its formula or None) for node ``o`` read by unit U."""
        if not self.is_group(U):
            argnums = [a for a, n in enumerate(self.h[U].input_ids) if n == o]
            number = ones.get((o, U))
            names = self.input_names(U)
            formulas = {L.node_local_formula(self.h[U], a, self.p, names) for a in argnums}
            formula = formulas.pop() if len(formulas) == 1 and len(argnums) == 1 else None
            return number, formula
        outs = self.outputs(U)
        if len(outs) != 1 or self.h[o].shape != () or self.h[outs[0]].shape != ():
            return None, None
        gbar = float(np.asarray(_host(self.trace.adjoint(self.h[outs[0]]))))
        # one scalar output: every member's v̄ is v̄_U times its own ∂U/∂member, so the
        # summed terms divided by v̄_U are ∂U/∂o
        number = np.asarray(_host(term)) / gbar if gbar != 0 else None
        # no formula: a composite's is its members' (level="primitives" shows them)
        return number, None

    def backward_step(self, u, step, total, terms, ones):
        head = [f"Backward pass: step {step} of {total}{self.where(u)}"]
        body, kids_all = [], []
        for o in self.outputs(u):
            if not self.trace.has_adjoint(self.h[o]):
                continue
            me = u if len(self.outputs(u)) == 1 else o
            kids = {}
            for j in self.children(o):
                if self.unit[j] != u and (o, j) in terms:
                    kids.setdefault(self.unit[j], []).append(j)
            summed = {U: _sum(terms[(o, j)] for j in js) for U, js in kids.items()}
            locs = {U: self.local(o, U, summed[U], {(o, U): ones[(o, U)]} if (o, U) in ones
                                  else {}) for U in kids}
            name = self.name(me) if me == u else L.display_name(self.h[o], self.p)
            bar = L.bar(name)
            body.append(f"{bar} = Σ over children of {name}: v̄_j ∂v_j/∂{name}")
            rest, residual = self.unseen(o, u, terms, summed.values())
            if kids and not rest and all(locs[U][0] is not None for U in kids):
                body += self.scalar_sum(name, kids, summed, locs)
            else:
                body += [f"from {self.name(U)}: " + self.rule_line(o, U, js) +
                         f"  →  {self.num(summed[U])}" for U, js in kids.items()]
            if rest:
                body.append(f"from {', '.join(self.name(U) for U in rest)}: carried back by "
                            f"{'its' if len(rest) == 1 else 'their'} own backward pass (no "
                            f"formula on this edge)  →  {self.num(residual)}")
            body.append(f"{bar} = {self.num(self.trace.adjoint(self.h[o]))}")
            kids_all += list(kids) + rest
        k = self.add("bw", [u], kids_all, [self.edge(u, U) for U in kids_all], head + body)
        self.adj_at[self.key(u)] = k

    def unseen(self, o, u, terms, known):
        """([the units reading node ``o`` whose rule has no number on its edge: a loop
        stepped over whole, fg.remat's replay], what they carry back together), or
        ([], None) when they carry nothing: v̄_o less the terms shown, which is their
        share, since the terms of all of o's children add up to v̄_o."""
        rest = list(dict.fromkeys(
            self.unit[j] for j in self.trace.graph.nx.successors(o)
            if j in self.idset and self.unit[j] != u and (o, j) not in terms
            and not is_loop_result(self.h[j])))     # (its loop box stands for it)
        if not rest:
            return [], None
        total = np.asarray(_host(self.trace.adjoint(self.h[o])))
        shown = [np.asarray(v) for v in known]
        residual = total - sum(shown) if shown else total
        # what rounding leaves when the children carry nothing (a stop_gradient)
        eps = np.finfo(total.dtype).eps if total.dtype.kind in "fc" else 0.0
        scale = np.max(np.abs(total), initial=0.0) + sum(
            np.max(np.abs(v), initial=0.0) for v in shown)
        if not np.any(np.abs(residual) > 64 * eps * scale):
            return [], None
        return rest, residual

    def rule_line(self, o, U, js):
        """The rule(s) carrying v̄ from unit U back to node ``o``."""
        if not self.is_group(U):
            child = self.h[U]
            # the traced shapes: a mean's n is a number here, whatever the graph left open
            shapes = [np.shape(_host(self.trace[x])) for x in child.inputs]
            out_shape = np.shape(_host(self.trace[child]))
            return " ; ".join(L.rule_text(child, a, self.p, self.input_names(U), shapes,
                                          out_shape)
                              for a, n in enumerate(child.input_ids) if n == o)
        name = self.name(self.unit[o])
        return f"{L.bar(name)} += v̄ carried back through {self.name(U)}'s {len(js)} node(s)"

    def scalar_sum(self, name, kids, summed, locs):
        """The sum written out: symbols, each local derivative as formula = number, then
        the numbers, then each product."""
        def gbar(U):
            outs = self.outputs(U) if self.is_group(U) else [U]
            return self.num(self.trace.adjoint(self.h[outs[0]]))
        lines = ["= " + " + ".join(f"{self.vbar(U)} · ∂{self.name(U)}/∂{name}" for U in kids)]
        for U in kids:
            number, formula = locs[U]
            value = self.num(number)
            shown = formula and formula.replace("−", "-") != value  # "1 = 1" says nothing
            lines.append(f"∂{self.name(U)}/∂{name} = " + (f"{formula} = " if shown else "")
                         + value)
        lines.append("= " + " + ".join(f"{gbar(U)} × {self.num(locs[U][0])}" for U in kids))
        if len(kids) > 1:
            lines.append("= " + " + ".join(self.num(summed[U]) for U in kids))
        return lines

    def done(self):
        asked = [i for i in self.leaf_units if self.h[i].kind in ("variable", "placeholder")
                 and self.trace.has_adjoint(self.h[i])]
        n = self.name(self.unit[self.loss.id])
        lines = ["Done: the gradient"] + [
            f"∂{n}/∂{_whole(self.name(i))} = {self.vbar(i)} = "
            f"{self.num(self.trace.adjoint(self.h[i]))}" for i in asked]
        self.add("done", asked, lines=lines)


def _whole(name):
    """A scoped name kept together after a "/": ∂loss/∂(hidden/W)."""
    return f"({name})" if "/" in name else name


def _sum(values):
    total = None
    for v in values:
        v = np.asarray(_host(v))
        total = v if total is None else total + v
    return total


def _host(a):
    from flowgrad.backends import to_numpy
    return to_numpy(a)


# -- the one layout ---------------------------------------------------------------------------

def _layout(trace, plan, rankdir, precision, max_elems) -> str:
    """The graph as SVG, laid out once, with each box's value and v̄ cells tagged."""
    dot = draw(trace, rankdir=rankdir, precision=precision, max_elems=max_elems,
               expand=plan.expand, constants=not plan.hidden, _cell_ids=True,
               _only=set(plan.ids))
    svg = dot.pipe(format="svg").decode("utf-8")
    svg = re.sub(r"<\?xml.*?\?>|<!DOCTYPE.*?>|<!--.*?-->", "", svg, flags=re.S)
    # Graphviz writes a tagged cell as <g id="a_n5_val"><a xlink:href="#" ...>: keep the
    # group (renamed, with a class the CSS can hide) and drop the link.
    svg = re.sub(r'<g id="a_(n\d+|g_\w+?)_(val|adj)">', r'<g id="\1_\2" class="\2">', svg)
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
    for nid in plan.keys():
        c = "node"
        if plan.val_at.get(nid, 1 << 30) <= k:
            c += " v"
        if plan.adj_at.get(nid, 1 << 30) <= k:
            c += " a"
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
#graph {{ overflow: auto; max-height: 78vh; border: 1px solid #ddd; margin-top: 8px;
          cursor: grab; }}
#graph.drag {{ cursor: grabbing; user-select: none; }}
#zoom {{ display: flex; gap: 4px; align-items: center; }}
{css}
</style></head><body>
<h2>{title}</h2>
<div id="bar"><button id="prev">&#9664; prev</button>
<input id="slider" type="range" min="0" max="{last}" value="0">
<button id="next">next &#9654;</button><span id="counter"></span>
<span id="zoom"><button id="zout" title="zoom out (-)">&minus;</button>
<button id="z100" title="actual size (0)">100%</button>
<button id="zfit" title="fit the width">fit</button>
<button id="zin" title="zoom in (+)">+</button></span></div>
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
// Zoom: 100% is the drawing's own size (labels at their point size, never shrunk to fit);
// drag or scroll the frame to pan, ctrl + wheel or the buttons to zoom.
const W0 = svg.width.baseVal.value, H0 = svg.height.baseVal.value;
let zoom = 1;
function setZoom(z) {{
  zoom = Math.max(0.1, Math.min(8, z));
  svg.setAttribute("width", W0 * zoom); svg.setAttribute("height", H0 * zoom);
  document.body.dataset.zoom = zoom.toFixed(3);
}}
const box = document.getElementById("graph");
document.getElementById("zin").onclick = () => setZoom(zoom * 1.25);
document.getElementById("zout").onclick = () => setZoom(zoom / 1.25);
document.getElementById("z100").onclick = () => setZoom(1);
document.getElementById("zfit").onclick = () => setZoom((box.clientWidth - 4) / W0);
box.addEventListener("wheel", e => {{
  if (!e.ctrlKey) return;
  e.preventDefault(); setZoom(zoom * (e.deltaY < 0 ? 1.1 : 1 / 1.1));
}}, {{passive: false}});
let drag = null;
box.addEventListener("mousedown", e => {{
  drag = [e.clientX, e.clientY, box.scrollLeft, box.scrollTop]; box.classList.add("drag");
}});
window.addEventListener("mousemove", e => {{
  if (!drag) return;
  box.scrollLeft = drag[2] - (e.clientX - drag[0]);
  box.scrollTop = drag[3] - (e.clientY - drag[1]);
}});
window.addEventListener("mouseup", () => {{ drag = null; box.classList.remove("drag"); }});
setZoom(1);
document.getElementById("prev").onclick = () => show(k - 1);
document.getElementById("next").onclick = () => show(k + 1);
slider.oninput = () => show(parseInt(slider.value, 10));
document.addEventListener("keydown", e => {{
  if (e.key === "ArrowLeft") show(k - 1);
  if (e.key === "ArrowRight") show(k + 1);
  if (e.key === "+" || e.key === "=") setZoom(zoom * 1.25);
  if (e.key === "-") setZoom(zoom / 1.25);
  if (e.key === "0") setZoom(1);
}});
show(0);
</script></body></html>
"""


def _page(base, plan, title) -> str:
    keys = set(plan.keys())
    data = {"frames": plan.frames,
            "valAt": {u: k for u, k in plan.val_at.items() if u in keys},
            "adjAt": {u: k for u, k in plan.adj_at.items() if u in keys}}
    # No "<" at all inside the script element: "</script" would close it early, and
    # "<!--<script" (a user's name in a caption) would keep its real end from closing it,
    # so the page would never run. \u003c is the same character to JSON.parse and JS.
    blob = (json.dumps(data, ensure_ascii=False).replace("<", "\\u003c")
            .replace(">", "\\u003e").replace("&", "\\u0026"))
    return PAGE.format(title=html.escape(title), css=CSS, last=len(plan.frames) - 1,
                       svg=base, data=blob)


class NeedsTraceError(FlowgradError, TypeError):
    """``walkthrough`` was given a program, a node or a graph: it plays the numbers of one
    run, so it needs a Trace (``prog.trace(feed)``)."""


def _check_trace(what):
    from flowgrad.tracing import Trace
    if not isinstance(what, Trace):
        raise NeedsTraceError(
            f"walkthrough needs a Trace: prog.trace(feed), e.g. "
            f"fg.compile(loss).trace(x=...), not a {type(what).__name__} (it plays the "
            f"values and adjoints of one run; fg.viz.draw draws a structure without them)")


class Walkthrough:
    """A walkthrough that plays inline in a notebook (``_repr_html_``: the self-contained
    player in an iframe) and is written with ``.save(path)``."""

    def __init__(self, plan, base, title):
        self.plan, self._base, self.title = plan, base, title
        self._html = None

    @property
    def frames(self) -> list:
        """One dict per step: phase, current/used boxes, edges and the caption's lines."""
        return self.plan.frames

    @property
    def html(self) -> str:
        """The player page as one self-contained HTML string."""
        if self._html is None:
            self._html = _page(self._base, self.plan, self.title)
        return self._html

    def captions(self) -> list:
        """Every frame's caption as one string (lines joined by newlines)."""
        return ["\n".join(f["lines"]) for f in self.frames]

    def save(self, path, format=None):
        """``.html`` (or ``format="html"``): the player as one file; otherwise a folder of
        numbered SVG frames ``frame_000.svg`` … for slides. Returns the path(s) written."""
        path = os.fspath(path)
        fmt = format or ("html" if path.lower().endswith((".html", ".htm")) else "svg")
        if fmt == "html":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(self.html)
            return path
        if fmt != "svg":
            raise ValueError(f"walkthrough writes 'html' or 'svg', not {fmt!r}")
        os.makedirs(path, exist_ok=True)
        digits = max(3, len(str(len(self.frames) - 1)))
        paths = []
        for k in range(len(self.frames)):
            p = os.path.join(path, f"frame_{k:0{digits}d}.svg")
            with open(p, "w", encoding="utf-8") as fh:
                fh.write(frame_svg(self._base, self.plan, k))
            paths.append(p)
        return paths

    def _repr_html_(self) -> str:
        # an iframe keeps the player's script and CSS apart from the notebook's page
        height = min(900, int(_size(self._base)[1] * 1.34) + 260)
        return (f'<iframe srcdoc="{html.escape(self.html, quote=True)}" '
                f'style="width: 100%; height: {height}px; border: 1px solid #ddd;" '
                f'sandbox="allow-scripts"></iframe>')

    def __repr__(self):
        return f"<flowgrad.viz.Walkthrough of {len(self.frames)} frames>"


#: a walkthrough draws at most this many boxes unless asked for more (``max_nodes=``):
#: Graphviz lays out ~1500 boxes in seconds but 15 000 in minutes, and a frame a step
#: over thousands of steps teaches nothing
MAX_NODES = 2000


def _check_size(plan, max_nodes):
    """Refuse, before the layout, a walkthrough of more boxes than ``max_nodes``: a cut
    graph would show adjoints whose children are missing, so it is all or nothing."""
    if max_nodes is None:
        return
    if isinstance(max_nodes, (bool, np.bool_)) or not isinstance(max_nodes, (int, np.integer)) \
            or max_nodes < 1:
        raise ArgumentError(f"fg.viz.walkthrough: max_nodes must be an int >= 1 or None, "
                            f"got {max_nodes!r}")
    n = len(plan.keys())
    if n > max_nodes:
        steps = sum(1 for u in plan.members if plan.is_group(u) or plan.h[u].op is not None)
        raise ArgumentError(
            f"fg.viz.walkthrough: the trace has {n} boxes to draw, more than max_nodes="
            f"{max_nodes}; laying it out would take minutes and its {steps} steps "
            f"teach little. Walk through a smaller graph, pass max_nodes={n} (or None) to "
            f"lay it out anyway, or draw the part nearest the loss: "
            f"fg.viz.draw(trace, max_nodes=40)")


def walkthrough(trace, path=None, *, format=None, level="ops", expand=False, constants=True,
                rankdir="LR", precision=4, max_elems=L.MAX_ELEMS,
                title="Backpropagation, step by step", unroll=True, max_nodes=MAX_NODES):
    """The trace's forward and backward pass, one step per frame.

    Without ``path``: a ``Walkthrough`` that plays inline in a notebook and has
    ``.save(path)``. With ``path`` ending in ``.html`` (or ``format="html"``): one
    self-contained HTML file (inline SVG, no network) with previous/next buttons, arrow
    keys and a slider; otherwise ``path`` is a folder that receives numbered SVG files
    ``frame_000.svg`` …; returns the path(s) written.

    ``level="ops"`` (default) steps once per op node and once per ``fg.composite`` group
    (your own functions; ``expand=`` opens groups as in ``draw``);
    ``level="primitives"`` steps through every primitive node. ``constants=False`` draws
    no constant boxes (their values show in the ops' labels). A local derivative is shown
    as its formula and its number, ``∂y/∂z = σ(z)(1 − σ(z)) = 0.2055``.
    Arrays of up to ``max_elems`` entries (12, as in ``draw``) are written in full.
    The HTML shows the drawing at its own size (labels legible) with zoom and pan.
    The trace must have adjoints (its first output a scalar loss); anything but a Trace
    is a ``NeedsTraceError``. Laying the graph out needs Graphviz's ``dot``.
    Loops (``fg.scan`` …) of up to 12 iterations are written out as in
    ``draw(tr, unroll=True)``: each iteration steps on its own ("· scan, iteration 2 of
    5"), forward 1 … T and backward T … 1; ``unroll=False``, or a longer loop, steps over
    a loop in one frame.
    A trace of more than ``max_nodes`` boxes (2000) is refused with an
    ``fg.ArgumentError`` before the layout; ``max_nodes=None`` lays out any size.
    """
    _check_trace(trace)
    if unroll:                 # issue 20: a loop steps through each of its iterations
        trace = walk_view(trace)
    plan = _Plan(trace, precision, max_elems, level, expand, constants)
    _check_size(plan, max_nodes)
    plan.build()
    wt = Walkthrough(plan, _layout(trace, plan, rankdir, precision, max_elems), title)
    return wt if path is None else wt.save(path, format)
