"""fg.viz.walkthrough: one self-contained HTML file, one frame per step, the lecture notes' numbers."""
import html
import json
import re
import shutil

import numpy as np
import pytest

import flowgrad as fg

SUB = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")

pytestmark = pytest.mark.skipif(shutil.which("dot") is None,
                                reason="Graphviz `dot` is not installed (the layout needs it)")


def _seed():
    nodes = fg.worked_example.univariate_logistic()
    return fg.compile(nodes["loss"]).trace(x=1.5, t=1.0), nodes


def _data(page):
    blob = re.search(r"const D = (\{.*?\});\n", page, flags=re.S).group(1)
    return json.loads(blob.replace("<\\/", "</"))


def test_html_is_self_contained_with_one_frame_per_step(tmp_path):
    tr, n = _seed()
    path = fg.viz.walkthrough(tr, tmp_path / "backprop.html")
    page = open(path, encoding="utf-8").read()
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") == 1
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)   # no network
    for control in ('id="prev"', 'id="next"', 'id="slider"', "ArrowLeft", "ArrowRight"):
        assert control in page
    d = _data(page)
    phases = [f["phase"] for f in d["frames"]]
    # leaves, 10 ops forward, the seed, 13 adjoints (x t w b and 9 ops), done
    assert phases == ["fw"] * 11 + ["seed"] + ["bw"] * 13 + ["done"]
    assert f'max="{len(phases) - 1}"' in page
    # every value cell and adjoint cell the frames switch on exists in the SVG
    consts = {f"n{c.id}" for c in tr.nodes if c.kind == "constant"}   # drawn as value boxes
    assert len(consts) == 5 and consts < set(d["valAt"])
    for nid in set(d["valAt"]) - consts:
        assert f'<g id="{nid}_val" class="val">' in page
    for nid in d["adjAt"]:
        assert f'<g id="{nid}_adj" class="adj">' in page
    assert "<a " not in page.split("<svg", 1)[1]              # the cell links are gone


def test_frames_show_the_seed_numbers(tmp_path):
    tr, n = _seed()
    d = _data(open(fg.viz.walkthrough(tr, tmp_path / "b.html"), encoding="utf-8").read())
    frames = d["frames"]
    by_cur = {tuple(f["cur"]): f for f in frames if f["phase"] == "bw"}
    s = 1 / (1 + np.exp(-0.9))
    zbar = (s - 1) * s * (1 - s)
    z = by_cur[(f"n{n['z'].id}",)]
    assert z["lines"][2:] == ["= y\u0304 · ∂y/∂z",
                              f"∂y/∂z = σ(z)(1 − σ(z)) = {s * (1 - s):.4g}",  # formula, number
                              f"= {s - 1:.4g} × {s * (1 - s):.4g}", f"z̄ = {zbar:.4g}"]
    assert z["use"] == [f"n{n['y'].id}"] and z["edges"] == [f"en{n['z'].id}_n{n['y'].id}"]
    w = by_cur[(f"n{n['w'].id}",)]
    assert f"= {zbar:.4g} × 1.5 + 0.05 × 1.6" in w["lines"]        # v̄_j · ∂v_j/∂w, each child
    assert f"= {zbar * 1.5:.4g} + 0.08" in w["lines"]
    assert "∂mul₄/∂w = x = 1.5" in w["lines"]                      # box labels: mul₄
    assert "∂pow₁₃/∂w = 2 w^(2−1) = 1.6" in w["lines"]
    assert w["lines"][-1] == f"w̄ = {zbar * 1.5 + 0.08:.4g}"
    fwd_z = next(f for f in frames if f["phase"] == "fw" and f["cur"] == [f"n{n['z'].id}"])
    assert fwd_z["lines"][1:] == ["v_2: z = add(mul₄, b)", "= add(1.2, -0.3)", "= 0.9"]
    seed = next(f for f in frames if f["phase"] == "seed")
    assert seed["cur"] == [f"n{n['loss'].id}"]
    assert seed["lines"][1] == "v̄[loss] = ∂loss/∂loss = 1"
    done = frames[-1]["lines"]
    assert f"∂loss/∂b = b̄ = {zbar:.4g}" in done
    # values appear in forward order, adjoints in reverse
    k_z, k_y = d["valAt"][f"n{n['z'].id}"], d["valAt"][f"n{n['y'].id}"]
    assert k_z < k_y and d["adjAt"][f"n{n['y'].id}"] < d["adjAt"][f"n{n['z'].id}"]
    assert d["adjAt"][f"n{n['loss'].id}"] == 11


def test_array_walkthrough_shows_rules_and_summaries(tmp_path, rng):
    X = fg.placeholder("X", shape=(None, 2))
    W = fg.variable(rng.normal(size=(2, 3)), name="W")
    loss = fg.sum(fg.tanh(X @ W)).named("loss")
    Xv = rng.normal(size=(4, 2))
    tr = fg.compile(loss).trace(X=Xv)
    d = _data(open(fg.viz.walkthrough(tr, tmp_path / "m.html"), encoding="utf-8").read())
    w = next(f for f in d["frames"] if f["phase"] == "bw" and f["cur"] == [f"n{W.id}"])
    assert any(line.startswith(f"from matmul{str(W.id + 1).translate(SUB)}:") and "W̄ += Xᵀ v̄" in line for line in w["lines"])
    gW = Xv.T @ (1 - np.tanh(Xv @ W.value) ** 2)
    rows = ["[" * (2 - k) + " ".join(f"{v:.4g}" for v in row) + "]" * (k + 1)
            for k, row in enumerate(gW)]                      # 6 entries: shown in full
    assert w["lines"][-1] == "W̄ = " + "; ".join(rows)


def test_numbered_svg_frames(tmp_path):
    tr, n = _seed()
    paths = fg.viz.walkthrough(tr, tmp_path / "frames")
    assert len(paths) == 26 and paths[0].endswith("frame_000.svg")
    z_step = [p for p in paths if 'class="node v a cur"' in open(p, encoding="utf-8").read()
              and f'<g id="n{n["z"].id}" class="node v a cur">' in open(p, encoding="utf-8").read()]
    assert len(z_step) == 1
    svg = html.unescape(open(z_step[0], encoding="utf-8").read())
    s = 1 / (1 + np.exp(-0.9))
    assert f"z̄ = {(s - 1) * s * (1 - s):.4g}" in svg and "<style>" in svg
    assert f'<g id="en{n["z"].id}_n{n["y"].id}" class="edge on">' in svg
    first = open(paths[0], encoding="utf-8").read()
    assert f'<g id="n{n["z"].id}" class="node">' in first           # not yet computed
    assert 'class="wt phase-fw"' in first


def test_needs_a_scalar_loss(tmp_path):
    x = fg.placeholder("x", shape=(2,))
    tr = fg.compile(fg.exp(x)).trace(x=np.ones(2))
    with pytest.raises(ValueError, match="scalar loss"):
        fg.viz.walkthrough(tr, tmp_path / "w.html")


def test_constants_false_and_the_two_levels():
    tr, n = _seed()
    wt = fg.viz.walkthrough(tr, constants=False)
    d = _data(wt.html)
    consts = {f"n{c.id}" for c in tr.nodes if c.kind == "constant"}
    assert not consts & set(d["valAt"]) and not any(f'<g id="{c}"' in wt.html for c in consts)
    assert "constants:" not in "\n".join(wt.frames[0]["lines"])
    # the seed has no composites: both levels step through the same ten ops
    prims = fg.viz.walkthrough(tr, level="primitives")
    assert [f["cur"] for f in prims.frames][1:] == [f["cur"] for f in wt.frames][1:]
    assert len(prims.frames) == len(wt.frames) == 26
    with pytest.raises(ValueError, match="level"):
        fg.viz.walkthrough(tr, level="ops-and-more")


def test_a_composite_is_one_step_at_the_ops_level():
    with fg.Graph():
        x, t = fg.placeholder("x"), fg.placeholder("t")
        w = fg.variable(0.8, name="w")

        @fg.composite
        def half_sq(d):
            return 0.5 * d ** 2

        y = fg.sigmoid(w * x).named("y")
        loss = half_sq(y - t).named("loss")
        tr = fg.compile(loss).trace(x=1.5, t=1.0)
    ops = fg.viz.walkthrough(tr)
    prims = fg.viz.walkthrough(tr, level="primitives")
    fw_ops = [f["cur"] for f in ops.frames if f["phase"] == "fw"][1:]
    fw_prims = [f["cur"] for f in prims.frames if f["phase"] == "fw"][1:]
    assert fw_ops[-1] == ["g_half_sq"] and len(fw_prims) == len(fw_ops) + 1  # pow, mul
    seed = next(f for f in ops.frames if f["phase"] == "seed")
    assert seed["cur"] == ["g_half_sq"] and seed["lines"][1] == "v̄[half_sq] = ∂half_sq/∂half_sq = 1"
    y0 = 1 / (1 + np.exp(-1.2))
    sub = next(f for f in ops.frames if f["phase"] == "bw" and f["use"] == ["g_half_sq"])
    # a scalar group's local derivative: Σ of its members' terms / v̄ of its output
    assert f"∂half_sq/∂sub{str(y.id + 1).translate(SUB)} = {y0 - 1:.4g}" in sub["lines"]
    assert '<g id="g_half_sq_adj" class="adj">' in ops.html


def test_a_composite_reads_its_arguments_and_what_it_closes_over():
    with fg.Graph():
        x = fg.placeholder("x")
        w = fg.variable(0.8, name="w")

        @fg.composite
        def scaled(d):
            return fg.tanh(w * d)                   # w is not an argument

        loss = scaled(x).named("loss")
        tr = fg.compile(loss).trace(x=1.5)
    wt = fg.viz.walkthrough(tr)
    step = next(f for f in wt.frames if f["cur"] == ["g_scaled"] and f["phase"] == "fw")
    assert step["use"] == [f"n{x.id}", f"n{w.id}"]
    assert step["edges"] == [f"en{x.id}_g_scaled", f"en{w.id}_g_scaled"]
    assert step["lines"][1].startswith("v_1: scaled = scaled(x)")
    assert f'<g id="en{w.id}_g_scaled" class="edge">' in wt.html   # the drawn edge exists
    wbar = next(f for f in wt.frames if f["cur"] == [f"n{w.id}"])["lines"]
    assert wbar[-1] == f"w̄ = {1.5 * (1 - np.tanh(1.2) ** 2):.4g}"


def mlp_trace(rng):
    """A 2-layer MLP whose two weight matrices are both named W (in scopes hidden/out)."""
    with fg.Graph():
        X, t = fg.placeholder("X", shape=(None, 3)), fg.placeholder("t", shape=(None, 3))
        with fg.name_scope("hidden"):
            W = fg.variable(rng.normal(size=(3, 4)), name="W")
            b = fg.variable(np.zeros(4), name="b")
            h = fg.tanh(X @ W + b).named("h")
        with fg.name_scope("out"):
            W2 = fg.variable(rng.normal(size=(4, 3)), name="W")
            b2 = fg.variable(np.zeros(3), name="b")
            y = (h @ W2 + b2).named("y")
        loss = fg.mse(y, t).named("loss")
        tr = fg.compile(loss).trace(X=rng.normal(size=(5, 3)), t=rng.normal(size=(5, 3)))
    return tr, W, W2


def test_layered_model_names_its_variables_by_scope_and_shows_4x3_in_full(rng):
    tr, W, W2 = mlp_trace(rng)
    wt = fg.viz.walkthrough(tr)
    done = wt.frames[-1]["lines"]
    grads = [line for line in done if line.startswith("∂loss/∂")]
    assert len(grads) == len(set(line.split(" = ")[0] for line in grads)) == 6
    assert any(line.startswith("∂loss/∂(hidden/W) = v̄[hidden/W] = ") for line in grads)
    assert any(line.startswith("∂loss/∂(out/W) = v̄[out/W] = ") for line in grads)
    g = np.asarray(tr.adjoint(W2))                       # 4×3: 12 entries, in full
    rows = ["[" * (2 - k if k == 0 else 1) + " ".join(f"{v:.4g}" for v in row) +
            "]" * (2 if k == 3 else 1) for k, row in enumerate(g)]
    step = next(f for f in wt.frames if f["cur"] == [f"n{W2.id}"])
    assert step["lines"][-1] == "v̄[out/W] = " + "; ".join(rows)
    import inspect
    assert inspect.signature(fg.viz.walkthrough).parameters["max_elems"].default == \
        inspect.signature(fg.viz.draw).parameters["max_elems"].default == 12


def test_a_mean_loss_caption_states_n_from_the_traced_batch(rng):
    tr, W, W2 = mlp_trace(rng)
    wt = fg.viz.walkthrough(tr)
    text = "\n".join(wt.captions())
    # mse's mean over a (None, 3) batch traced with 5 rows: n = 15, said with the rule
    assert "from loss: y\u0304 += v̄ · 2(y − t) / n, n = 15  →  " in text
    assert "X\u0304 += v̄ (hidden/W)ᵀ" in text and "v̄[out/W] += hᵀ v̄" in text


def _chain(steps):
    with fg.Graph():
        x = fg.placeholder("x", shape=())
        h = x
        for _ in range(steps):
            h = fg.tanh(h * 0.9 + 0.1)     # 5 boxes a step: mul, add, tanh, 0.9, 0.1
        return fg.compile(h).trace(x=0.3)


def test_a_walkthrough_too_big_to_lay_out_is_refused_before_the_layout():
    """A 3000-step chain once sat in Graphviz for six minutes; beyond max_nodes boxes
    (2000 by default) it is refused at once, naming the count and the ways out."""
    import time
    tr = _chain(400)                       # 1 + 400 · 5 = 2001 boxes
    start = time.perf_counter()
    with pytest.raises(fg.ArgumentError, match=r"has 2001 boxes to draw, more than "
                       r"max_nodes=2000; .* its 1200 steps .* max_nodes=2001 \(or None\)"):
        fg.viz.walkthrough(tr)
    assert time.perf_counter() - start < 5
    # the boundary: exactly max_nodes boxes is laid out
    small = _chain(3)                      # 16 boxes
    assert len(fg.viz.walkthrough(small, max_nodes=16).frames) == 1 + 9 + 1 + 9 + 1
    with pytest.raises(fg.ArgumentError, match="has 16 boxes to draw, more than max_nodes=15"):
        fg.viz.walkthrough(small, max_nodes=15)
    for bad in (0, -1, 2.5, True, "40"):
        with pytest.raises(fg.ArgumentError, match="max_nodes must be an int >= 1 or None"):
            fg.viz.walkthrough(small, max_nodes=bad)


def _step_for(wt, bar):
    return next(c for c in wt.captions() if c.startswith("Backward pass") and
                f"\n{bar} = Σ over children" in c)


def test_a_child_with_no_formula_still_shows_its_share_of_the_sum():
    """fg.remat's rule replays its forward and a loop stepped over whole (unroll=False, or
    over 12 iterations) runs its own backward pass: no number on their edges. The caption
    once listed no term at all, an empty sum = v̄; it now names them and their share,
    v̄ less the other terms (found by helper qa-viz)."""
    with fg.Graph():
        x = fg.placeholder("x", shape=())
        w = fg.variable(0.8, name="w")
        h = (w * x).named("h")
        loss = (fg.remat(lambda a: fg.tanh(a) * 2.0)(h) + h * h).named("loss")
        tr = fg.compile(loss).trace(x=1.5)
    wt = fg.viz.walkthrough(tr)
    remat_share = 2 * (1 - np.tanh(1.2) ** 2)          # ∂(2 tanh h)/∂h at h = 1.2
    cap = _step_for(wt, "h̄")
    assert (f"carried back by its own backward pass (no formula on this edge)  →  "
            f"{remat_share:.4g}") in cap
    assert f"h̄ += v̄ · h ; h̄ += v̄ · h  →  {2 * 1.2:.4g}" in cap
    assert f"h̄ = {remat_share + 2.4:.4g}" in cap
    # a scan stepped over whole: W's whole v̄ comes from the loop
    Wv = np.array([[0.5, -0.3], [0.2, 0.4]])
    X = np.arange(6.0).reshape(3, 2) / 5
    with fg.Graph():
        W = fg.variable(Wv, name="W")
        xs = fg.placeholder("xs", (None, 2))
        hT, _ = fg.scan(lambda h, x: (fg.tanh(h @ W + x), fg.sum(h)), fg.constant(np.zeros(2)),
                        xs)
        tr = fg.compile(fg.sum(hT).named("loss")).trace(xs=X)
    cap = _step_for(fg.viz.walkthrough(tr, unroll=False), "W̄")
    hs, gW = [np.zeros(2)], np.zeros((2, 2))      # BPTT by hand
    for t in range(3):
        hs.append(np.tanh(hs[-1] @ Wv + X[t]))
    g = np.ones(2)
    for t in range(3, 0, -1):
        d = g * (1 - hs[t] ** 2)
        gW += np.outer(hs[t - 1], d)
        g = Wv @ d
    want = "[[" + " ".join(f"{v:.4g}" for v in gW[0]) + "]; [" + \
        " ".join(f"{v:.4g}" for v in gW[1]) + "]]"
    assert f"from scan × T: carried back by its own backward pass (no formula on this " \
           f"edge)  →  {want}" in cap, cap
    # a child that carries nothing (stop_gradient) is not listed
    with fg.Graph():
        w = fg.variable(0.8, name="w")
        tr = fg.compile((w * fg.stop_gradient(w) + w).named("loss")).trace()
    assert "own backward pass" not in "\n".join(fg.viz.walkthrough(tr).captions())
