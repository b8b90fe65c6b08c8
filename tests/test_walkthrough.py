"""fg.viz.walkthrough: one self-contained HTML file, one frame per step, the seed's numbers."""
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
    nodes = fg.seed.univariate_logistic()
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
