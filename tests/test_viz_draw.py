"""fg.viz.draw: the DOT source is parsed (not snapshotted) and must show every node's
value and adjoint as the trace computed them; rendering works where `dot` exists."""
import html
import re
import shutil

import numpy as np
import pytest

import flowgrad as fg
from flowgrad.viz import labels as L

HAS_DOT = shutil.which("dot") is not None

_ATTR = re.compile(r'(\w+)=(<(?:[^<>]|<[^<>]*>)*>|"(?:[^"\\]|\\.)*"|[^\s\]]+)')


def _parse_dot(source):
    """{node id: attrs} and [(tail, head, attrs)] from the DOT text graphviz writes."""
    nodes, edges = {}, []
    for line in source.splitlines():
        m = re.match(r"\s*(\w+) -> (\w+) \[(.*)\]$", line)
        if m:
            edges.append((m.group(1), m.group(2), _attrs(m.group(3))))
            continue
        m = re.match(r"\s*(\w+) \[(.*)\]$", line)
        if m and m.group(1) not in ("graph", "node", "edge"):
            nodes[m.group(1)] = _attrs(m.group(2))
    return nodes, edges


def _attrs(text):
    out = {}
    for key, val in _ATTR.findall(text):
        if val.startswith('"'):
            val = val[1:-1].replace('\\"', '"')
        out[key] = val
    return out


def _text(label):
    """The visible text of an HTML-like label, rows separated by newlines."""
    label = label[1:-1] if label.startswith("<<") else label
    label = re.sub(r"<BR/>|</TR>", "\n", label)
    return html.unescape(re.sub(r"<[^>]+>", "", label))


def _seed(lam=0.1):
    nodes = fg.worked_example.univariate_logistic(lam=lam)
    return fg.compile(nodes["loss"]).trace(x=1.5, t=1.0), nodes


def test_every_node_shows_its_value_and_adjoint():
    tr, n = _seed()
    nodes, _ = _parse_dot(fg.viz.draw(tr).source)
    checked = 0
    for node in tr.nodes:
        text = _text(nodes[f"n{node.id}"]["label"])
        value = float(fg.to_numpy(tr[node]))
        assert f"{value:.4g}" in text, (node.name, text)
        if node.kind != "constant":
            assert f"v̄ {float(fg.to_numpy(tr.adjoint(node))):.4g}" in text, (node.name, text)
            checked += 1
    assert checked == 14
    # the lecture notes' numbers, by hand: σ(0.9), z̄ = (y − t) σ'(z), w̄ = z̄ x + λ w
    s = 1 / (1 + np.exp(-0.9))
    zbar = (s - 1) * s * (1 - s)
    assert "v̄ -0.0594" in _text(nodes[f"n{n['z'].id}"]["label"]) and round(zbar, 4) == -0.0594
    assert f"v̄ {zbar * 1.5 + 0.08:.4g}" in _text(nodes[f"n{n['w'].id}"]["label"])
    assert "0.7109" in _text(nodes[f"n{n['y'].id}"]["label"])


def test_precision_names_kinds_and_marks():
    tr, n = _seed()
    nodes, _ = _parse_dot(fg.viz.draw(tr, precision=7).source)
    y = _text(nodes[f"n{n['y'].id}"]["label"])
    assert y.startswith("y sigmoid\n") and f"{1 / (1 + np.exp(-0.9)):.7g}" in y  # no "()"
    assert "loss" in _text(nodes[f"n{n['loss'].id}"]["label"]).split("\n")[0]
    assert nodes[f"n{n['loss'].id}"]["penwidth"] == "3"          # the op's rounded outline
    assert "wrt" in _text(nodes[f"n{n['w'].id}"]["label"])            # variables: asked for
    assert "wrt" not in _text(nodes[f"n{n['x'].id}"]["label"])
    colours = {k: re.search(r'BGCOLOR="([^"]+)"', nodes[f"n{n[k].id}"]["label"]).group(1)
               for k in ("x", "w", "z")}
    assert colours == {"x": "limegreen", "w": "yellowgreen", "z": "#FFAABB"}
    const = [a for a in nodes.values() if a.get("fillcolor") == "springgreen"]
    assert sorted(a["label"] for a in const) == ["0.1", "0.5", "0.5", "2", "2"]
    # only wrt=[b] marked when asked
    nodes, _ = _parse_dot(fg.viz.draw(tr, wrt=[n["b"]]).source)
    assert "wrt" in _text(nodes[f"n{n['b'].id}"]["label"])
    assert "wrt" not in _text(nodes[f"n{n['w'].id}"]["label"])


def test_scalar_edges_carry_the_local_derivative():
    tr, n = _seed()
    _, edges = _parse_dot(fg.viz.draw(tr).source)
    lab = {(a, b): e.get("label") for a, b, e in edges}
    s = 1 / (1 + np.exp(-0.9))
    z, y, w, x = (f"n{n[k].id}" for k in ("z", "y", "w", "x"))
    assert lab[(z, y)] == f"∂ {s * (1 - s):.4g}"                  # ∂y/∂z = σ(1 − σ)
    mul = next(b for a, b in lab if a == w and b != f"n{n['R'].id}" and
               (x, b) in lab)
    assert lab[(w, mul)] == "∂ 1.5" and lab[(x, mul)] == "∂ 0.8"  # ∂(wx)/∂w = x
    assert not any(e.get("label") for a, b, e in edges
                   if _parse_dot(fg.viz.draw(tr).source)[0][a].get("fillcolor") == "springgreen")
    _, off = _parse_dot(fg.viz.draw(tr, edge_labels=None).source)
    assert all("label" not in e for _, _, e in off)


def test_array_graph_rules_and_summaries(rng):
    X = fg.placeholder("X", shape=(None, 3))
    with fg.name_scope("layer1"):
        W = fg.variable(rng.normal(size=(3, 20)), name="W")
        h = fg.tanh(X @ W).named("h")
    loss = fg.mean(h * h).named("loss")
    Xv = rng.normal(size=(5, 3))
    tr = fg.compile(loss).trace(X=Xv)
    src = fg.viz.draw(tr).source
    nodes, edges = _parse_dot(src)
    mm = next(b for a, b, _ in edges if a == f"n{W.id}")
    lab = {(a, b): e.get("label") for a, b, e in edges}
    assert lab[(f"n{W.id}", mm)] == "W̄ += Xᵀ v̄"
    assert lab[(f"n{X.id}", mm)] == "X̄ += v̄ Wᵀ"
    htext = _text(nodes[f"n{h.id}"]["label"])
    hv = np.tanh(Xv @ W.value)
    assert "(5, 20)" in htext and f"mean {hv.mean():.4g}" in htext
    assert f"‖·‖ {np.linalg.norm(hv):.4g}" in htext
    assert f"max {hv.max():.4g}" in htext
    gbar = tr.adjoint(W)
    assert f"v̄ ‖·‖ {np.linalg.norm(gbar):.4g}" in _text(nodes[f"n{W.id}"]["label"])
    assert 'subgraph "cluster_layer1"' in src or "subgraph cluster_layer1" in src


def test_small_arrays_in_full():
    v = fg.variable(np.array([1.0, -2.0, 0.5]), name="v")
    loss = fg.sum(v * v)
    tr = fg.compile(loss).trace()
    nodes, _ = _parse_dot(fg.viz.draw(tr).source)
    text = _text(nodes[f"n{v.id}"]["label"])
    assert "[1 -2 0.5]" in text and "v̄ [2 -4 1]" in text


def _mlp(blocks=3):
    X = fg.placeholder("X", shape=(None, 2))
    h = X
    for k in range(blocks):
        with fg.name_scope(f"block{k}"):
            W = fg.variable(np.full((2, 2), 0.1 * (k + 1)), name="W")
            h = fg.tanh(h @ W)
    loss = fg.sum(h).named("loss")
    return fg.compile(loss).trace(X=np.ones((4, 2))), loss


def test_collapsed_scopes_become_boxes():
    tr, loss = _mlp()
    nodes, edges = _parse_dot(fg.viz.draw(tr, collapse=True).source)
    boxes = {k: _text(a["label"]) for k, a in nodes.items() if k.startswith("s_")}
    assert sorted(boxes) == ["s_block0", "s_block1", "s_block2"]
    assert "(3 nodes)" in boxes["s_block1"] and "matmul×1" in boxes["s_block1"]
    h1 = next(n for n in tr.nodes if n.scope == ("block1",) and n.op is not None
              and n.op.name == "tanh")
    assert f"‖·‖ {np.linalg.norm(tr[h1]):.4g}" in boxes["s_block1"]
    pairs = {(a, b) for a, b, _ in edges}
    assert ("s_block0", "s_block1") in pairs and ("s_block1", "s_block2") in pairs
    assert not any(k.startswith("n") and nodes[k].get("tooltip", "").startswith("block")
                   for k in nodes)
    # collapsing one path only: block1 boxed, the others drawn as clusters
    nodes, _ = _parse_dot(fg.viz.draw(tr, collapse="block1").source)
    assert [k for k in nodes if k.startswith("s_")] == ["s_block1"]


def test_depth_and_size_limits():
    tr, loss = _mlp(blocks=4)
    nodes, edges = _parse_dot(fg.viz.draw(tr, depth=2).source)
    real = [k for k in nodes if k.startswith("n")]
    assert f"n{loss.id}" in real and len(real) == 3     # loss, tanh, matmul
    elided = [a["label"] for k, a in nodes.items() if k.startswith("x")]
    assert elided == ["⋯ 2"]
    nodes, _ = _parse_dot(fg.viz.draw(tr, max_nodes=5).source)
    assert len([k for k in nodes if k.startswith("n")]) == 5


def test_backward_graph_drawn_on_request():
    tr, n = _seed()
    folded, _ = _parse_dot(fg.viz.draw(tr).source)
    nodes, _ = _parse_dot(fg.viz.draw(tr, backward=True).source)
    extra = {k: _text(a["label"]) for k, a in nodes.items() if k not in folded}
    assert len(extra) > 10
    w_adj = tr.adjoint_nodes[n["w"]]
    assert "v̄ of w" in extra[f"n{w_adj.id}"]
    assert f"{float(tr.adjoint(n['w'])):.4g}" in extra[f"n{w_adj.id}"]


def test_layout_direction_and_plain_nodes():
    x = fg.placeholder("x")
    y = fg.exp(x).named("y")
    src = fg.viz.draw(y, rankdir="LR").source           # no trace: structure only
    assert "rankdir=LR" in src
    nodes, edges = _parse_dot(src)
    assert _text(nodes[f"n{y.id}"]["label"]).strip() == "y exp · output"
    assert edges[0][2]["label"] == "x̄ += v̄ · y"               # exp's rule: ∂eˣ/∂x = eˣ


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz `dot` is not installed")
def test_render_svg(tmp_path):
    tr, n = _seed()
    path = fg.viz.draw(tr).render(tmp_path / "seed", format="svg")
    svg = html.unescape(open(path, encoding="utf-8").read())   # dot writes "-" as &#45;
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert f'id="n{n["z"].id}"' in svg and "v̄ -0.0594" in svg
    assert "image/svg+xml" in fg.viz.draw(tr)._repr_mimebundle_()


def test_without_dot_source_still_works_and_render_says_how_to_install(tmp_path, monkeypatch):
    tr, _ = _seed()
    monkeypatch.setenv("PATH", str(tmp_path))          # no `dot` anywhere on PATH
    d = fg.viz.draw(tr)
    assert "digraph" in d.source and "v̄ -0.0594" in d.source
    with pytest.raises(fg.viz.GraphvizNotFoundError, match="apt-get install graphviz"):
        d.render(tmp_path / "g", format="svg")
    assert "apt-get install graphviz" in d._repr_mimebundle_()["text/plain"]
    with pytest.raises(fg.viz.GraphvizNotFoundError):
        fg.viz.walkthrough(tr, tmp_path / "w.html")


def test_rule_text_and_formatters():
    assert L.fmt_value(np.arange(20.0))[0] == "mean 9.5"
    assert L.fmt_value(np.array([[1.0, 2.0], [3.0, 4.0]])) == ["[[1 2]", "[3 4]]"]
    assert L.fmt_number(1 / 3, 3) == "0.333" and L.bar("w") == "w̄" and L.bar("W1") == "v̄[W1]"


def test_minus_zero_prints_as_zero_and_scalars_have_no_shape():
    assert L.fmt_number(-0.0) == "0" and L.fmt_number(np.float32(-0.0)) == "0"
    assert L.fmt_full(np.array([-0.0, 1.5])) == ["[0 1.5]"]
    assert L.fmt_number(-1e-9) == "-1e-09"                 # a real negative stays negative
    assert L.shape_text(()) == "" and L.shape_text((3,)) == "(3,)"


def test_op_boxes_keep_their_header_inside_the_rounded_outline():
    tr, n = _seed()
    nodes, _ = _parse_dot(fg.viz.draw(tr).source)
    for node in tr.nodes:
        attrs = nodes[f"n{node.id}"]
        if node.kind == "op":
            # the outline is the node's own rounded box, a margin away from the table:
            # the table itself has no border and no rounded style to spill over
            assert attrs["shape"] == "box" and "rounded" in attrs["style"]
            assert attrs["label"].startswith('<<TABLE BORDER="0"')
            assert "ROUNDED" not in attrs["label"] and float(attrs["margin"].split(",")[0]) > 0


def test_unnamed_nodes_get_one_short_label_everywhere():
    tr, n = _seed()
    nodes, edges = _parse_dot(fg.viz.draw(tr, edge_labels="rule").source)
    mul = n["z"].inputs[0]                                  # w * x, never named
    label = f"mul{str(mul.id).translate(str.maketrans('0123456789', '₀₁₂₃₄₅₆₇₈₉'))}"
    assert L.display_name(mul) == label
    assert _text(nodes[f"n{mul.id}"]["label"]).split("\n")[0] == label
    rules = {(a, b): e.get("label") for a, b, e in edges}
    assert rules[(f"n{mul.id}", f"n{n['z'].id}")] == f"v̄[{label}] += v̄"


def test_constants_false_folds_them_into_the_ops():
    tr, n = _seed()
    nodes, edges = _parse_dot(fg.viz.draw(tr, constants=False).source)
    assert not any(a.get("fillcolor") == "springgreen" for a in nodes.values())
    assert len(nodes) == sum(1 for k in tr.nodes if k.kind != "constant") == 14
    folded = [k for k in tr.nodes if k.kind == "op" and any(i.kind == "constant"
                                                             for i in k.inputs)]
    details = sorted(_text(nodes[f"n{k.id}"]["label"]).split("\n")[0].split(" ", 1)[1]
                     for k in folded)
    assert details == ["0.1 ·", "0.5 ·", "0.5 ·", "pow(·, 2)", "pow(·, 2)"]
    assert _text(nodes[f"n{n['L'].id}"]["label"]).startswith("L 0.5 ·")


def test_draw_a_program_draws_its_structure():
    with fg.Graph():
        x = fg.placeholder("x")
        y = fg.exp(x).named("y")
        prog = fg.compile(y)
        nodes, edges = _parse_dot(fg.viz.draw(prog).source)
    assert set(nodes) == {f"n{x.id}", f"n{y.id}"}
    assert _text(nodes[f"n{y.id}"]["label"]).strip() == "y exp · output"
    assert edges[0][2]["label"] == "x̄ += v̄ · y"


def test_walkthrough_of_anything_but_a_trace_says_it_needs_one():
    with fg.Graph() as g:
        x = fg.placeholder("x")
        loss = fg.exp(x)
        prog = fg.compile(loss)
        for what in (prog, loss, g, [loss]):
            with pytest.raises(fg.viz.NeedsTraceError,
                               match=r"needs a Trace: prog\.trace\(feed\)") as info:
                fg.viz.walkthrough(what)
            assert isinstance(info.value, fg.FlowgradError)
            assert isinstance(info.value, TypeError)


def test_anomaly_drawing_marks_inherited_nan_apart_from_the_culprit():
    import warnings
    with fg.Graph():
        x = fg.placeholder("x", shape=(3,))
        mask = fg.constant(np.array([0.0, -np.inf, 0.0]))
        masked = (x + mask).named("masked")          # −inf from the mask: inherited
        shifted = (masked * 2.0).named("shifted")    # passed on again: inherited
        bad = fg.log(x - 1.0).named("bad")           # log 0 from finite inputs: the culprit
        out = fg.sum(shifted) + fg.sum(bad)
        prog = fg.compile(out, check_numerics=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            with pytest.raises(fg.NumericsError) as info:
                prog(x=np.array([1.0, 2.0, 3.0]))
    assert info.value.node is bad
    nodes, _ = _parse_dot(fg.viz.draw(info.value.trace).source)   # the whole trace
    red = [k for k, a in nodes.items() if fg.viz.dot.CULPRIT in a.get("label", "")
           + a.get("fillcolor", "")]
    assert red == [f"n{bad.id}"]
    for n in (masked, shifted):
        label = nodes[f"n{n.id}"]["label"]
        assert fg.viz.dot.INHERITED in label and "NaN/Inf inherited" in _text(label)
        assert "NaN/Inf here" not in _text(label)
    assert nodes[f"n{mask.id}"]["fillcolor"] == fg.viz.dot.INHERITED
    assert "holds NaN/Inf" in nodes[f"n{mask.id}"]["label"]
    assert fg.viz.dot.INHERITED not in nodes[f"n{x.id}"]["label"]
