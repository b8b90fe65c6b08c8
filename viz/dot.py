"""``draw``: a graph, or a trace of it, as a ``graphviz.Digraph`` with values and adjoints.

The drawing is built in passes, each a small function over sorted node ids (no
recursion, so graphs of any depth draw): pick the nodes (``_Scene``), cut to a
depth/size limit, map nodes to what is drawn for them (themselves or a collapsed
scope box), then emit nodes into their scope clusters and the edges with labels.
"""
from __future__ import annotations

import re
from collections import Counter, deque

import graphviz
import numpy as np

from flowgrad.autodiff import ancestors
from flowgrad.composite import groups
from flowgrad.custom_op import caption as custom_caption, forward_ids
from flowgrad.loops.loop_op import is_loop, is_loop_result
from .loops import emit_bodies
from flowgrad.graph import Graph, Node, same_graph
from flowgrad.errors import UsageError

from . import labels as L
from .local import edge_terms

#: fill colour of the node a NumericsError blames (``draw(err)`` / ``draw(err.trace)``)
CULPRIT = "#FF4D4D"
#: fill colour of the other non-finite nodes of such a drawing: their NaN/Inf came from an
#: input (or a constant holds it), so they are not where it was made
INHERITED = "#FFD8A8"

INSTALL_HINT = ("Graphviz's `dot` program was not found on PATH, so the drawing cannot be "
                "rendered. Install Graphviz: `apt-get install graphviz` (Debian/Ubuntu), "
                "`brew install graphviz` (macOS) or `conda install graphviz`. The DOT source "
                "is still available as `.source`.")


def dot_available() -> bool:
    """Whether Graphviz's `dot` program is on PATH (needed to render, not to draw)."""
    import shutil
    return shutil.which("dot") is not None


class GraphvizNotFoundError(graphviz.ExecutableNotFound):
    """Rendering needs Graphviz's `dot`; the message says how to install it."""

    def __init__(self):
        RuntimeError.__init__(self, INSTALL_HINT)


class Drawing(graphviz.Digraph):
    """A ``graphviz.Digraph`` whose rendering failures say how to install Graphviz."""

    def render(self, *args, **kwargs):
        try:
            return super().render(*args, **kwargs)
        except graphviz.ExecutableNotFound as e:
            raise GraphvizNotFoundError() from e

    def pipe(self, *args, **kwargs):
        try:
            return super().pipe(*args, **kwargs)
        except graphviz.ExecutableNotFound as e:
            raise GraphvizNotFoundError() from e

    def _repr_mimebundle_(self, include=None, exclude=None, **kwargs):
        # In a notebook without `dot`, show the source and the hint instead of a traceback.
        try:
            return super()._repr_mimebundle_(include, exclude, **kwargs)
        except GraphvizNotFoundError:
            return {"text/plain": INSTALL_HINT + "\n\n" + self.source}


# -- what to draw ------------------------------------------------------------------------

class _Scene:
    """The nodes to draw and the numbers known about them."""

    def __init__(self, what, loss, wrt, backward, highlight=None):
        from flowgrad.engine.program import Program
        from flowgrad.tracing import Trace
        if isinstance(what, Program):      # its structure: the outputs and what they need
            what = list(what.outputs)
        self.trace = what if isinstance(what, Trace) else None
        #: the node a NumericsError's trace blames, drawn red
        self.culprit = getattr(self.trace, "culprit", None)
        #: the other non-finite nodes of that trace (their NaN/Inf is inherited)
        self.inherited = _inherited(self.trace) if self.culprit is not None else set()
        if self.trace is not None:
            self.graph = self.trace.graph
            self.roots = self.trace.outputs
            self.forward = [n.id for n in self.trace.nodes]
        elif isinstance(what, Graph):
            self.graph = what
            users = {i for n in what.nodes for i in n.input_ids}
            self.roots = [n for n in what.nodes if n.id not in users]
            self.forward = list(range(len(what)))
        else:
            try:
                nodes = [what] if isinstance(what, Node) else list(what)
            except TypeError:   # not iterable (an exception, a number)
                nodes = []
            if not nodes or not all(isinstance(n, Node) for n in nodes):
                # a UsageError (a TypeError) at the user's line: draw(err) of an error
                # other than a NumericsError raised "'FeedError' object is not iterable"
                from flowgrad.errors import UsageError, located
                raise located(UsageError, "draw takes a Trace, a Program, a Graph, a Node, a "
                              "list of Nodes, a NumericsError, a precision audit or a "
                              f"profile, got {type(what).__name__}")
            self.graph = same_graph(nodes)
            self.roots = nodes
            self.forward = ancestors(nodes)
        self.handles = self.graph.handles
        #: {node id: colour} painted over a node's own colours (a culprit in red, say)
        self.highlight = {(n.id if isinstance(n, Node) else n): c
                          for n, c in (highlight or {}).items()}
        #: {node id: a line added to its box} (draw(audit): the digits it lost)
        self.captions = {}
        adj = self.trace.adjoint_nodes if self.trace is not None else {}
        self.adjoint_of = {n.id: a for n, a in adj.items()}
        self.loss = loss if loss is not None else (
            self.trace.outputs[0] if self.trace is not None and adj else None)
        if wrt is None:
            wrt = [self.handles[i] for i in self.forward if self.handles[i].kind == "variable"] \
                if self.trace is not None else []
        self.wrt = {n.id for n in ([wrt] if isinstance(wrt, Node) else wrt)}
        self.backward = self._backward_ids() if backward and adj else []
        #: derivative node id -> the names of the forward nodes whose v̄ it is
        self.adjoint_for = {}
        for i, a in self.adjoint_of.items():
            if self.handles[i].kind != "constant":
                self.adjoint_for.setdefault(a.id, []).append(L.display_name(self.handles[i]))

    def _backward_ids(self):
        """The derivative nodes: everything the adjoints need that the forward pass does not."""
        fwd = set(self.forward)
        # A constant's adjoint (∂𝓛/∂0.5) is computed but teaches nothing: leave out its nodes.
        wanted = [a for i, a in self.adjoint_of.items() if self.handles[i].kind != "constant"]
        return [i for i in ancestors(wanted) if i not in fwd] if wanted else []

    def value(self, node):
        if self.trace is not None and node in self.trace and not is_loop(node):
            return self.trace[node]   # (a loop's value is its results' tuple: not drawn)
        return None

    def adjoint(self, node):
        if self.trace is not None and node.id in self.adjoint_of:
            return self.trace.adjoint(node)
        return None


def _host(a):
    from flowgrad.backends import to_numpy
    return None if a is None else np.asarray(to_numpy(a))


def _nonfinite(value) -> bool:
    a = _host(value)
    return a.dtype.kind in "fc" and not np.isfinite(a).all()


def _inherited(trace) -> set:
    """Ids of the traced nodes holding a NaN/Inf other than the culprit: an op that
    passed one on from an input, or a constant that holds one (a mask of −inf)."""
    culprit = trace.culprit.id
    bad = {n.id for n in trace.nodes if n in trace and _nonfinite(trace[n])}
    return {i for i in bad if i != culprit and (
        trace.graph.node(i).kind == "constant" or
        any(x.id in bad for x in trace.graph.node(i).inputs))}


def _check_limits(depth, max_nodes) -> None:
    """Refuse a ``depth`` that is not an int >= 0 or a ``max_nodes`` that is not an int
    >= 1 (either may be None): a cut to less than one node would draw nothing."""
    for name, value, least in (("depth", depth, 0), ("max_nodes", max_nodes, 1)):
        if value is None:
            continue
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
                or value < least:
            kind = "a non-negative int" if least == 0 else "an int >= 1"
            raise UsageError(f"fg.viz.draw: {name} must be {kind} or None, got {value!r}")


def _limit(scene, ids, depth, max_nodes, path=None):
    """The nodes within ``depth`` edges of the roots, at most ``max_nodes`` of them,
    nearest first (a breadth-first walk up the inputs). For a NumericsError's ``path``
    the walk starts at the culprit instead and goes along the path both ways."""
    if depth is None and max_nodes is None:
        return ids
    if path is not None:
        return path.nearest(ids, depth, max_nodes)
    allowed = set(ids)
    starts = [r.id for r in scene.roots] + [a.id for a in scene.adjoint_of.values()
                                            if a.id in allowed]
    seen, order = set(), []
    queue = deque((i, 0) for i in starts if i in allowed)
    while queue and (max_nodes is None or len(order) < max_nodes):
        nid, d = queue.popleft()
        if nid in seen:
            continue
        seen.add(nid)
        order.append(nid)
        if depth is None or d < depth:
            queue.extend((i, d + 1) for i in scene.handles[nid].input_ids
                         if i in allowed and i not in seen)
    return sorted(order)


def _collapsed_paths(scopes, collapse) -> set:
    """The scope paths (tuples) to draw as one box each."""
    if collapse is None or collapse is False:
        return set()
    if collapse is True:
        return {s[:1] for s in scopes if s}
    if isinstance(collapse, int):
        return {s[:collapse] for s in scopes if len(s) >= collapse}
    paths = [collapse] if isinstance(collapse, str) else list(collapse)
    return {tuple(p.strip("/").split("/")) for p in paths}


def _unit_of(scope, collapsed):
    """The shortest collapsed prefix of ``scope``, or None when it is drawn open."""
    for k in range(1, len(scope) + 1):
        if scope[:k] in collapsed:
            return scope[:k]
    return None


class GroupUnit(str):
    """A collapsed ``fg.composite`` group, drawn as one box (the str is its name)."""


def unit_key(unit) -> str:
    """The DOT id of a node (n12), a collapsed scope box (s_layer1_dense) or a collapsed
    composite group (g_mse_1)."""
    if isinstance(unit, int):
        return f"n{unit}"
    if isinstance(unit, GroupUnit):
        return "g_" + re.sub(r"\W", "_", unit)
    return "s_" + "_".join(unit).replace(" ", "_")


def _split_groups(node, expand):
    """(the groups of ``node`` drawn open, outermost first; the one it is boxed in or None).
    A group is open when ``expand`` is True or names it (or its function); placeholders
    and variables are never boxed, only placed inside the open groups they belong to."""
    path = node.group
    if not path:
        return (), None
    if expand is True:
        return tuple(GroupUnit(g) for g in path), None
    opened = () if not expand else {expand} if isinstance(expand, str) else set(expand)
    records = groups(node.graph)
    for k, name in enumerate(path):
        if name not in opened and records.get(name, {}).get("label") not in opened:
            box = None if node.kind in ("placeholder", "variable") else GroupUnit(name)
            return tuple(GroupUnit(g) for g in path[:k]), box
    return tuple(GroupUnit(g) for g in path), None


def group_of(node, expand):
    """The collapsed group ``node`` is drawn inside, or None (see ``_split_groups``)."""
    return _split_groups(node, expand)[1]


def _home_path(node, expand) -> tuple:
    """The cluster a drawn box sits in: its name scope, then the open groups around it."""
    return tuple(node.scope) + _split_groups(node, expand)[0]


# -- node styles ----------------------------------------------------------------------------

def _marks(scene, node, derivative):
    """(marks, colour, border width, border colour) of a drawn node: loss, output, wrt;
    ``scene.highlight`` (a per-node colour) wins over the kind's colour."""
    marks, colour, border, border_colour = [], L.COLOURS[node.kind], 1, "black"
    if derivative:
        colour = L.COLOURS["derivative"]
        of = scene.adjoint_for.get(node.id)
        marks.append("v̄ of " + ", ".join(of) if of else "derivative")
    if node.kind == "op" and not derivative:
        colour = L.COLOURS["op"]
    if scene.loss is not None and node.id == scene.loss.id:
        colour, border = L.COLOURS["loss"], 3
        marks.append("loss")
    elif any(node is r for r in scene.roots) and not derivative:
        colour = L.COLOURS["loss"]
        marks.append("output")
    if node.id in scene.wrt:
        border, border_colour = 3, "darkorange"
        marks.append("wrt")
    if scene.culprit is not None and node.id == scene.culprit.id:
        colour, border, border_colour = CULPRIT, 3, "red"
        marks.append("NaN/Inf here")
    elif node.id in scene.inherited:
        colour = INHERITED
        marks.append("NaN/Inf inherited")
    if node.id in scene.highlight:
        colour = border_colour = scene.highlight[node.id]
        border = max(border, 3)
    if node.id in scene.captions:
        marks.append(scene.captions[node.id])
    return marks, colour, border, border_colour


def _node_attrs(scene, node, opts, derivative=False):
    """Graphviz attributes for one drawn node: its label, shape and colours."""
    value = _host(scene.value(node)) if opts["values"] else None
    if node.kind == "constant":
        text = L.constant_label(node, value if value is not None else node.value,
                                opts["precision"], opts["max_elems"])
        of = scene.adjoint_for.get(node.id) if derivative else None
        if of:  # the seed, 1, is v̄ of the loss (and of whatever adds pass it on to)
            text = "v̄ of " + ", ".join(of) + " = " + text
        fill = L.COLOURS["derivative" if derivative else "constant"]
        if node.id in scene.inherited:   # a constant NaN/Inf (a mask): not the culprit
            text, fill = text + "  (holds NaN/Inf)", INHERITED
        return {"label": L.plain(text),
                "shape": "box", "style": "filled", "fillcolor": fill,
                "fontsize": "10", "margin": "0.05,0.02", "height": "0.2"}
    adjoint = _host(scene.adjoint(node)) if opts["adjoints"] and not derivative else None
    marks, colour, border, border_colour = _marks(scene, node, derivative)
    rounded = node.kind == "op"
    op = L.folded_op_text(node, opts["hidden"], opts["precision"]) if rounded else None
    label = L.node_label(node, colour, value=value, adjoint=adjoint, marks=marks,
                         precision=opts["precision"], max_elems=opts["max_elems"],
                         rounded=rounded, border=border,
                         border_colour=border_colour, cell_ids=opts["cell_ids"], op=op)
    tooltip = L.plain(f"{node.name}: {L.op_text(node)} {L.fmt_shape(node.shape)}")
    attrs = {"label": label, "shape": "plain", "tooltip": tooltip}
    if rounded:
        attrs.update(L.frame_attrs(border, border_colour))
    return attrs


def group_outputs(scene, members, users):
    """The members a collapsed group hands out: used outside it, or an output (or the loss)
    of the drawing; else its last member."""
    inside = set(members)
    roots = {r.id for r in scene.roots}
    outs = [i for i in members if i in roots or any(u not in inside for u in users[i])]
    return outs or [max(members)]


def _group_box_attrs(scene, unit, members, users, opts):
    """A collapsed composite: the function's name, and its output's value and v̄."""
    record = groups(scene.graph).get(str(unit), {})
    outs = group_outputs(scene, members, users)
    first = scene.handles[outs[0]]
    marks, colour, border, border_colour = _marks(scene, first, False)
    marks = [m for m in marks if m != "wrt"]
    p, m = opts["precision"], opts["max_elems"]
    label = record.get("label", str(unit))
    detail = [str(unit)] if label != str(unit) else []
    values = [_host(scene.value(scene.handles[i])) if opts["values"] else None for i in outs]
    adjoints = [_host(scene.adjoint(scene.handles[i])) if opts["adjoints"] else None
                for i in outs]
    if len(outs) == 1:
        shape = first.shape if values[0] is None else np.shape(values[0])
        if L.shape_text(shape):
            detail.append(L.shape_text(shape))
        rows = L.value_rows(unit_key(unit), values[0], adjoints[0], p, m, opts["cell_ids"])
    else:  # one line per output, in one cell each for the values and the adjoints
        names = [L.display_name(scene.handles[i], p) for i in outs]
        val = [f"{n} = {L.one_line(v, p, m)}" for n, v in zip(names, values) if v is not None]
        adj = [f"{n}: {L.one_line(a, p, m)}" for n, a in zip(names, adjoints) if a is not None]
        rows = []
        if val:
            rows.append(L.text_row(val, cell_id=f"{unit_key(unit)}_val" if opts["cell_ids"] else None))
        if adj:
            rows.append(L.text_row(["v̄ " + a for a in adj], bgcolor=L.COLOURS["adjoint_row"],
                               cell_id=f"{unit_key(unit)}_adj" if opts["cell_ids"] else None))
    small = " · ".join([" ".join(detail)] + marks if detail else marks)
    head = L.header_row(label, small, colour)
    text = ('<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="3">'
            + head + "".join(rows) + "</TABLE>>")
    attrs = {"label": text,
             "tooltip": L.plain(f"{label}: {len(members)} nodes (expand=[{str(unit)!r}])")}
    attrs.update(L.frame_attrs(max(border, 2), border_colour))  # thicker: it holds more
    return attrs


def _scope_box_attrs(scene, path, members, drawn_users, opts):
    """A collapsed scope: what it contains and the numbers of what leaves it."""
    member_set = set(members)
    ops = Counter(L.op_text(scene.handles[i]) for i in members)
    roots = {r.id for r in scene.roots}
    outs = [i for i in members if i in roots or any(u not in member_set for u in drawn_users[i])]
    texts = []
    for i in outs[:3]:
        node = scene.handles[i]
        value = _host(scene.value(node)) if opts["values"] else None
        adjoint = _host(scene.adjoint(node)) if opts["adjoints"] else None
        texts.append(L.scope_output_text(node, value, adjoint, opts["precision"]))
    if len(outs) > 3:
        texts.append(f"… {len(outs) - 3} more outputs")
    label = L.scope_label("/".join(path), len(members), ops.most_common(), texts,
                          opts["precision"])
    return {"label": label, "shape": "plain", "tooltip": L.plain("/".join(path))}


# -- edges --------------------------------------------------------------------------------

def _edge_pairs(scene, ids):
    """Every drawn edge i → j once (an op using x twice still has one edge)."""
    drawn = set(ids)
    pairs = []
    for j in ids:
        ins = scene.handles[j].input_ids
        if is_loop_result(scene.handles[j]):   # issue 20: a loop's result hangs off its
            ins = ins[:1]                      # loop box alone (its other inputs are the loop's)
        for i in dict.fromkeys(ins):
            if i in drawn:
                pairs.append((i, j))
    return pairs


def _labelled(scene, i, j):
    """Whether edge i → j carries v̄ back: differentiable source, child with an adjoint."""
    src, dst = scene.handles[i], scene.handles[j]
    return (src.kind != "constant" and src.dtype.kind in "fc" and dst.op is not None
            and (scene.trace is None or j in scene.adjoint_of))


def _edge_labels(scene, pairs, mode, precision, units=None):
    """{(i, j): text}: the local derivative ∂v_j/∂v_i for scalar edges of a trace,
    else the rule that carries v̄ back (inputs named as drawn: a composite's name)."""
    if not mode:
        return {}
    h = scene.handles
    inner = _custom_forwards(h, pairs)
    pairs = [p for p in pairs if _labelled(scene, *p) and p[1] not in inner]
    scalar = [(i, j) for i, j in pairs if scene.trace is not None and mode != "rule"
              and h[i].shape == () and h[j].shape == ()
              and custom_caption(h[j], i) is None]   # a custom call: its rule's caption
    numbers = edge_terms(scene.trace, scalar, "one") if scalar else {}
    name = _namer(scene, units, precision)
    out = {}
    for i, j in pairs:
        if (i, j) in numbers:
            out[(i, j)] = "∂ " + L.fmt_number(numbers[(i, j)].item(), precision)
        elif custom_caption(h[j], i) is not None:   # issue 21: the user's own rule
            out[(i, j)] = custom_caption(h[j], i)
        elif (i, j) not in scalar or mode == "derivative":
            argnums = [k for k, n in enumerate(h[j].input_ids) if n == i]
            names = [name(n) for n in h[j].input_ids]
            shapes, out_shape = _traced_shapes(scene, h[j])
            # x * x: both arguments are x; one line per distinct rule, with its count
            rules = Counter(L.rule_text(h[j], k, precision, names, shapes, out_shape)
                            for k in argnums)
            out[(i, j)] = "\n".join(r if n == 1 else f"{r}  (×{n})" for r, n in rules.items())
    return out


def _traced_shapes(scene, node):
    """(the inputs' shapes, the output's shape) as traced, or (None, None) to use the
    static ones (lengths a graph leaves open are known in a trace)."""
    values = [scene.value(n) for n in node.inputs] + [scene.value(node)]
    if any(v is None for v in values):
        return None, None
    shapes = [tuple(getattr(v, "shape", np.shape(v))) for v in values]
    return shapes[:-1], shapes[-1]


def _custom_forwards(h, pairs) -> set:
    """The nodes of the forwards of the custom calls among the pairs' targets: their
    own rules never run (the function's rule replaces them), so their edges are bare."""
    inner = set()
    for j in {j for _, j in pairs}:
        if h[j].op is not None and h[j].op.name == "custom_call":
            inner |= forward_ids(h[j])
    return inner


def _namer(scene, units, precision):
    """A node's label as drawn: its own, or the name of the composite box it is in."""
    def name(i):
        unit = units.get(i) if units else None
        if isinstance(unit, GroupUnit):
            return str(unit)
        return L.display_name(scene.handles[i], precision)
    return name


def _group_edge_labels(scene, pairs, units, boxes, users, mode, precision):
    """{(i, box): text} for edges from a node into a collapsed composite: on scalar edges
    of a trace the composite's local derivative ∂out/∂v_i = Σ_j v̄_j ∂v_j/∂v_i / v̄_out
    (its members' summands over its one output's v̄)."""
    if not mode:
        return {}
    into = {}
    for i, j in pairs:
        if units[i] == i and isinstance(units[j], GroupUnit) and _labelled(scene, i, j):
            into.setdefault((i, units[j]), []).append(j)
    if not into:
        return {}
    h = scene.handles
    outs = {box: group_outputs(scene, boxes[box], users) for _, box in into}
    scalar = {(i, box) for i, box in into if scene.trace is not None and mode != "rule"
              and h[i].shape == () and len(outs[box]) == 1 and h[outs[box][0]].shape == ()
              and custom_caption(h[outs[box][0]], i) is None}
    terms = edge_terms(scene.trace, [(src, j) for src, box in scalar
                                     for j in into[(src, box)]], "adjoint") if scalar else {}
    out = {}
    for (i, box), js in into.items():
        if len(outs[box]) == 1 and custom_caption(h[outs[box][0]], i):   # issue 21
            out[(i, box)] = custom_caption(h[outs[box][0]], i)
            continue
        if (i, box) in scalar:
            gbar = float(_host(scene.adjoint(h[outs[box][0]])))
            if gbar != 0 and all((i, j) in terms for j in js):
                local = sum(float(terms[(i, j)]) for j in js) / gbar
                out[(i, box)] = "∂ " + L.fmt_number(local, precision)
            continue
        # a composite's array edges carry no rule text: its rule is its members' (drawn
        # with expand=), and a user's function of the same name as an op may differ
    return out


def _box_to_custom_captions(scene, pairs, units, boxes, users, mode):
    """{(box, custom box): the rule's caption} for edges from one collapsed composite into
    a collapsed custom function (issue 21; edges from a node are _group_edge_labels')."""
    if not mode:
        return {}
    out = {}
    for i, j in pairs:
        a, b = units[i], units[j]
        if isinstance(a, GroupUnit) and isinstance(b, GroupUnit) and a != b \
                and (a, b) not in out:
            outs = group_outputs(scene, boxes[b], users)
            text = custom_caption(scene.handles[outs[0]], i) if len(outs) == 1 else None
            if text:
                out[(a, b)] = text
    return out


# -- putting it together --------------------------------------------------------------------

def draw(what, *, loss=None, wrt=None, edge_labels="auto", backward=False, collapse=None,
         expand=False, constants=True, depth=None, max_nodes=None, rankdir="TB",
         precision=4, max_elems=L.MAX_ELEMS, values=True, adjoints=True, highlight=None,
         unroll=False, _cell_ids=False, _only=None) -> Drawing:
    """Draw a trace (values and adjoints v̄), or a program, nodes or a graph (structure);
    a NumericsError (its trace, the culprit red), a precision audit (shaded by digits lost)
    or a profile (``prog.profile``: shaded by time, each box's time in it).

    - ``loss`` and ``wrt``: the nodes marked as the loss and as the inputs asked for
      (default: a trace's first output, and its variables).
    - ``edge_labels``: ``"auto"`` (the local derivative ∂v_j/∂v_i at the traced point on
      scalar edges, the rule carrying v̄ back elsewhere), ``"rule"``, or None for none.
    - ``backward=True`` also draws the derivative nodes (they are real graph nodes);
      by default the adjoints are folded into the forward nodes' labels.
    - ``expand``: ``fg.composite`` groups (``fg.linear``, ``fg.mse``, your own) are drawn
      as one box each, with their output's value and v̄; True draws every group's nodes,
      a list of group names (``"my_fn_1"``) or function names (``"my_fn"``) opens those;
      it also draws the bodies of loops (``"scan"``, ``"while_loop"``, ``"cond"``) as clusters.
    - ``constants=False`` draws no constant boxes: each op shows the constants it uses
      in its label instead ("0.5 ·", "pow(·, 2)").
    - ``collapse``: scopes drawn as one box — True (every top-level scope), an int (every
      scope at that depth), or scope paths like ``"mlp/layer1"``.
    - ``depth`` (an int >= 0) / ``max_nodes`` (>= 1): only the nodes within ``depth``
      edges of the outputs — of the culprit, along the drawn path, for a NumericsError
      (``depth=0``: the culprit alone) — at most ``max_nodes``, nearest first; hidden
      inputs show as "⋯".
    - ``rankdir``: layout direction, "TB", "LR", "BT" or "RL".
    - ``precision`` significant digits; arrays over ``max_elems`` entries are summarised.
    - ``highlight``: {node: colour} to paint particular nodes (a culprit red, say).
    - ``unroll=True`` (a trace): each loop drawn as one copy of its body per iteration,
      with that iteration's values and adjoints: backpropagation through time as in the
      textbook (at most 12 iterations a loop, else an ``UnrollError``; viz/unroll.py).
    """
    _check_limits(depth, max_nodes)
    path, what, highlight, captions, _only = _subject(what, highlight, _only)
    if unroll:   # issue 20: the trace with every loop written out (viz/unroll.py)
        from .unroll import unrolled_view
        what, loss, wrt = unrolled_view(what, loss, wrt)
    scene = _Scene(what, loss, wrt, backward, highlight)
    scene.captions = {n.id: text for n, text in captions.items()}
    hidden = set() if constants else {i for i in scene.forward
                                      if scene.handles[i].kind == "constant"}
    opts = {"precision": precision, "max_elems": max_elems, "values": values,
            "adjoints": adjoints, "cell_ids": _cell_ids, "hidden": hidden, "expand": expand}
    forward = [i for i in scene.forward
               if i not in hidden and (_only is None or i in _only)]
    candidates = sorted(set(forward) | set(scene.backward))
    ids = _limit(scene, candidates, depth, max_nodes, path)
    derivative = set(scene.backward)
    dot = Drawing(name="flowgrad", graph_attr={
        "rankdir": rankdir, "fontname": L.FONT, "nodesep": "0.25", "ranksep": "0.35"},
        node_attr={"fontname": L.FONT}, edge_attr={"fontname": L.FONT, "fontsize": "10"})
    units, boxes, users = _emit_nodes(dot, scene, ids, derivative, _collapsed_paths(
        {scene.handles[i].scope for i in ids}, collapse), opts)
    _emit_edges(dot, scene, ids, (units, boxes, users), derivative, edge_labels, precision)
    _emit_elided(dot, scene, ids, set(candidates), units)
    emit_bodies(dot, scene, ids, expand)   # issue 20: a loop's body as a cluster
    if path is not None:                   # issue 23: the explanation as the caption
        path.add_caption(dot)
    return dot


def _subject(what, highlight, only):
    """What ``draw`` was given, as (the anomaly path or None, the trace or nodes to draw,
    highlight, {node: caption}, the ids to draw only): a NumericsError draws the path
    from its cause to its culprit; a precision audit or a profile shades its nodes."""
    from flowgrad.audit import PrecisionAudit
    from flowgrad.errors import NumericsError
    from flowgrad.profile import Profile
    path = None
    if isinstance(what, NumericsError):
        from .anomaly import anomaly_path
        path = anomaly_path(what)
        what, only = path.trace, path.ids
    captions = dict(path.captions) if path else {}
    if isinstance(what, (PrecisionAudit, Profile)):
        shades, captions = what.shading()
        highlight, what = {**shades, **(highlight or {})}, list(what.outputs)
    return path, what, highlight, captions, only


def drawn_units(scene_or_graph, ids, collapsed=(), expand=False):
    """{node id: what it is drawn as}: itself (its id), a collapsed scope (a path tuple)
    or a collapsed composite group (a ``GroupUnit``)."""
    handles = scene_or_graph.handles if isinstance(scene_or_graph, Graph) \
        else scene_or_graph.handles
    units, ops_in = {}, {}
    for i in ids:
        node = handles[i]
        box = _unit_of(node.scope, collapsed) if collapsed else None
        if box is None:
            box = group_of(node, expand)
            if box is not None and node.kind != "constant":
                ops_in.setdefault(box, []).append(node)
        units[i] = box if box is not None else i
    # a composite that is one op node of its own name (a decorated primitive, fg.mse
    # once it is an op) is just that node
    labels = {box: groups(ops[0].graph).get(box, {}).get("label") for box, ops in ops_in.items()}
    single = {box for box, ops in ops_in.items()
              if len(ops) == 1 and L.op_text(ops[0]) == labels[box]}
    if single:
        units = {i: i if u in single else u for i, u in units.items()}
    return units


def _emit_nodes(dot, scene, ids, derivative, collapsed, opts) -> tuple:
    """Add every node (or scope / composite box) to its cluster; returns {node id: unit},
    {box: its member ids} and {node id: its drawn users}."""
    drawn = set(ids)
    boxes, users = {}, {i: [] for i in ids}
    for j in ids:
        for i in scene.handles[j].input_ids:
            if i in drawn:
                users[i].append(j)
    units = drawn_units(scene, ids, collapsed, opts["expand"])
    for i in ids:
        if units[i] != i:
            boxes.setdefault(units[i], []).append(i)
    clusters = {}

    def home(path):
        """The subgraph for a scope path (the root graph for the empty path)."""
        if not path:
            return dot
        if path not in clusters:
            # an open composite group: a dotted frame labelled with its function's name
            group = isinstance(path[-1], GroupUnit)
            label = groups(scene.graph).get(path[-1], {}).get("label", path[-1]) \
                if group else path[-1]
            clusters[path] = graphviz.Digraph(name="cluster_" + "/".join(path), graph_attr={
                "label": L.plain(label),
                "style": "rounded,dotted" if group else "rounded,dashed",
                "color": "#C0587E" if group else "gray50", "fontcolor": "gray30",
                "id": "c_" + unit_key(path)[2:]})
        return clusters[path]

    expand = opts["expand"]
    for i in ids:
        if units[i] == i:
            node = scene.handles[i]
            attrs = _node_attrs(scene, node, opts, derivative=i in derivative)
            home(_home_path(node, expand)).node(unit_key(i), id=unit_key(i), **attrs)
    for unit, members in boxes.items():
        if isinstance(unit, GroupUnit):  # where its first node was built
            home(_home_path(scene.handles[members[0]], expand)).node(
                unit_key(unit), id=unit_key(unit), **_group_box_attrs(scene, unit, members, users, opts))
        else:
            home(unit[:-1]).node(unit_key(unit), id=unit_key(unit),
                                 **_scope_box_attrs(scene, unit, members, users, opts))
    # Nest clusters deepest first: a subgraph is copied into its parent when attached,
    # so it must be complete by then. Make sure every ancestor cluster exists first.
    for path in list(clusters):
        for k in range(1, len(path)):
            home(path[:k])
    for path in sorted(clusters, key=len, reverse=True):
        home(path[:-1]).subgraph(clusters[path])
    return units, boxes, users


def _emit_edges(dot, scene, ids, drawn, derivative, edge_labels, precision):
    """Forward edges with their labels, and the derivative nodes' edges in backward mode."""
    units, boxes, users = drawn
    pairs = _edge_pairs(scene, ids)
    forward_pairs = [p for p in pairs if p[1] not in derivative]
    texts = _edge_labels(scene, forward_pairs, edge_labels, precision, units)
    texts.update(_box_to_custom_captions(scene, forward_pairs, units, boxes, users,
                                         edge_labels))
    texts.update(_group_edge_labels(scene, forward_pairs, units, boxes, users, edge_labels,
                                    precision))
    done = set()
    for i, j in pairs:
        a, b = units[i], units[j]
        if a == b or (a, b) in done:
            continue  # inside one collapsed scope, or already drawn between two boxes
        done.add((a, b))
        attrs = {"id": f"e{unit_key(a)}_{unit_key(b)}"}
        if isinstance(b, int) and not isinstance(a, tuple) and (i, j) in texts:
            attrs["label"] = L.plain(texts[(i, j)])   # from a node, or a composite's output
        elif not isinstance(a, tuple) and (a, b) in texts:   # (or a composite's box)
            attrs["label"] = L.plain(texts[(a, b)])   # into a composite
        if j in derivative:
            attrs.update(color="#D95F02", fontcolor="#D95F02")
        dot.edge(unit_key(a), unit_key(b), **attrs)


def _emit_elided(dot, scene, ids, candidates, units):
    """A small "⋯ k" node above each drawn node whose inputs were cut by the limit."""
    drawn = set(ids)
    for j in ids:
        if units[j] != j:
            continue
        hidden = {i for i in scene.handles[j].input_ids if i in candidates and i not in drawn}
        if hidden:
            key = f"x{j}"
            dot.node(key, label=f"⋯ {len(hidden)}", shape="plaintext", fontsize="10",
                     tooltip=f"{len(hidden)} input(s) not drawn")
            dot.edge(key, unit_key(j), style="dashed", color="gray60")
