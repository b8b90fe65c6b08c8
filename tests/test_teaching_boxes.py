"""The teaching drawing of issue 11: the model ops as one box each, with values and v̄.

``loss = mse(sigmoid(linear(x, w, b)), t) + λ l2(w)`` drawn with ``constants=False``
shows exactly the boxes x, w, b, t, linear, sigmoid, mse, l2, the scaling and the sum.
This holds whether linear/mse/l2 are composites (one ``fg.composite`` box each) or
primitive op nodes (one op node each). Then an op-level walkthrough step in headless
Chromium: its caption shows the local derivative as formula and number.
"""
import pathlib
import re
import shutil

import numpy as np
import pytest

import flowgrad as fg
from flowgrad.viz import labels as L
from test_viz_draw import _parse_dot, _text
from test_walkthrough_browser import ARTIFACTS, CHROMIUM, DRIVER, browser  # noqa: F401

LAM = 0.1
X = np.array([[1.5, 0.5], [0.2, -1.0], [1.0, 1.0], [-0.7, 0.3]])
T = np.array([1.0, 0.0, 1.0, 0.0])
W0, B0 = np.array([0.8, -0.4]), -0.3


def _by_hand():
    """Every box's value and v̄, written out with numpy."""
    n = len(T)
    z = X @ W0 + B0
    y = 1 / (1 + np.exp(-z))
    mse = np.mean((y - T) ** 2)
    l2 = 0.5 * np.sum(W0 ** 2)
    ybar = 2 * (y - T) / n
    zbar = ybar * y * (1 - y)
    return {
        "x": (X, np.outer(zbar, W0)), "w": (W0, X.T @ zbar + LAM * W0),
        "b": (B0, zbar.sum()), "t": (T, -ybar),
        "linear": (z, zbar), "sigmoid": (y, ybar), "mse": (mse, 1.0), "l2": (l2, LAM),
        "scale": (LAM * l2, 1.0), "sum": (mse + LAM * l2, 1.0)}


def _build():
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 2))
        t = fg.placeholder("t", shape=(None,))
        w, b = fg.variable(W0, name="w"), fg.variable(B0, name="b")
        loss = fg.mse(fg.sigmoid(fg.linear(x, w, b)), t) + LAM * fg.l2(w)
        tr = fg.compile(loss).trace(x=X, t=T)
    return tr, dict(x=x, t=t, w=w, b=b, loss=loss)


def _kind(title):
    """What a box is, from its first line: a leaf's name, or the op/group label without
    its subscript id ("sigmoid₆" → "sigmoid"), "0.1 ·" → the scaling, the loss's add → sum."""
    words = title.split()
    head = re.sub(r"[₀-₉]+$", "", words[0])
    if head == "mul" and "0.1 ·" in title:
        return "scale"
    if head == "add" and "loss" in words:
        return "sum"
    return head


def test_the_model_ops_are_exactly_ten_boxes_with_values_and_adjoints():
    tr, n = _build()
    nodes, edges = _parse_dot(fg.viz.draw(tr, constants=False).source)
    boxes = {k: _text(a["label"]) for k, a in nodes.items()}
    kinds = {_kind(text.split("\n")[0]): text for text in boxes.values()}
    assert len(boxes) == 10 and sorted(kinds) == sorted(
        ["x", "w", "b", "t", "linear", "sigmoid", "mse", "l2", "scale", "sum"]), boxes
    assert not any(a.get("fillcolor") == "springgreen" for a in nodes.values())  # no constants
    for kind, (value, adjoint) in _by_hand().items():
        text = kinds[kind]
        for line in L.fmt_value(value):
            assert line in text, (kind, line, text)
        for line in L.fmt_value(adjoint):
            assert "v̄ " + line in text, (kind, line, text)
    # the leaves are the user's nodes, and every box is wired: 10 boxes, 10 edges
    for leaf in ("x", "t", "w", "b"):
        assert f"n{n[leaf].id}" in nodes
    assert len({(a, b) for a, b, _ in edges}) == 10


def test_expanded_the_composites_open_up():
    tr, _ = _build()
    nodes, _ = _parse_dot(fg.viz.draw(tr, constants=False, expand=True).source)
    if any(n.group for n in tr.nodes):                  # composites: their primitives show
        assert len(nodes) > 10
    else:                                               # op nodes: nothing to open
        assert len(nodes) == 10


# -- an op-level walkthrough step in headless Chromium ------------------------------------------

def _scalar_model():
    with fg.Graph():
        x, t = fg.placeholder("x"), fg.placeholder("t")
        w, b = fg.variable(0.8, name="w"), fg.variable(-0.3, name="b")
        y = fg.sigmoid(w * x + b).named("y")
        loss = (fg.mse(y, t) + LAM * fg.l2(w)).named("loss")
        tr = fg.compile(loss).trace(x=1.5, t=1.0)
    return tr, dict(x=x, t=t, w=w, b=b, y=y, loss=loss)


def test_op_level_steps_once_per_model_op(tmp_path):
    tr, n = _scalar_model()
    ops = fg.viz.walkthrough(tr, constants=False)
    prims = fg.viz.walkthrough(tr, level="primitives", constants=False)
    fw = [f for f in ops.frames if f["phase"] == "fw"][1:]
    # w x, + b, σ, mse, l2, λ ·, + : seven steps, whether mse and l2 are groups or op nodes
    assert len(fw) == 7
    assert len([f for f in prims.frames if f["phase"] == "fw"][1:]) >= 7
    y0 = 1 / (1 + np.exp(-0.9))
    y_step = next(f for f in ops.frames if f["phase"] == "bw" and f["cur"] == [f"n{n['y'].id}"])
    assert f"∂mse/∂y = 2(y − t) = {2 * (y0 - 1):.4g}" in [
        re.sub(r"^∂mse[₀-₉]*/", "∂mse/", line) for line in y_step["lines"]]
    w_step = next(f for f in ops.frames if f["phase"] == "bw" and f["cur"] == [f"n{n['w'].id}"])
    assert any(re.fullmatch(r"∂l2[₀-₉]*/∂w = w = 0\.8", line) for line in w_step["lines"])


@pytest.mark.browser
@pytest.mark.skipif(not (pathlib.Path(CHROMIUM).exists() and pathlib.Path(DRIVER).exists()),
                    reason="Debian's chromium and chromium-driver are not installed "
                           "(`make system-deps` installs them)")
@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` is not installed")
def test_op_level_step_in_chromium(browser, tmp_path):  # noqa: F811
    tr, n = _scalar_model()
    page = fg.viz.walkthrough(tr, constants=False).save(tmp_path / "ops.html")
    browser.get(pathlib.Path(page).as_uri())
    y_frame = int(browser.execute_script(
        f"return D.frames.findIndex(f => f.phase === 'bw' && f.cur[0] === 'n{n['y'].id}')"))
    browser.execute_script(f"show({y_frame})")
    caption = browser.find_element("id", "caption").text
    y0 = 1 / (1 + np.exp(-0.9))
    assert re.search(rf"∂mse[₀-₉]*/∂y = 2\(y − t\) = {2 * (y0 - 1):.4g}", caption), caption
    assert f"y\u0304 = {2 * (y0 - 1):.4g}" in caption               # ȳ, as the box shows it
    # the mse box is the one step that reads y: highlighted as used, its v̄ shown
    used = browser.find_elements("css selector", "g.node.use")
    assert len(used) == 1
    assert "v̄ 1" in used[0].text
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "walkthrough_ops_step.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
