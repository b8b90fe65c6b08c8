"""A user's names reach DOT strings, HTML and LaTeX verbatim: whatever characters they
hold, a drawing renders, the walkthrough page runs, a formula stays one formula, and
each shows the name as written (found by helper qa-viz)."""
import json
import re
import shutil
import xml.dom.minidom

import numpy as np
import pytest

import flowgrad as fg

HAS_DOT = shutil.which("dot") is not None


def _trace(name):
    with fg.Graph():
        x = fg.placeholder("x", shape=(2,))
        w = fg.variable(np.array([0.5, -1.0]), name=name)
        c = fg.constant(np.array([1.0, 2.0]), name=name + "c")
        loss = fg.sum(fg.tanh(w * x + c) ** 2).named("loss")
        return fg.compile(loss).trace(x=np.array([1.5, -0.5])), w


def _svg_texts(svg):
    dom = xml.dom.minidom.parseString(svg)
    return ["".join(t.data for t in el.childNodes if t.nodeType == t.TEXT_NODE)
            for el in dom.getElementsByTagName("text")]


@pytest.mark.parametrize("name", ["esc\\", "a\\Nb", "tab\\l"])
def test_a_backslash_in_a_name_is_drawn_as_itself(name):
    tr, w = _trace(name)
    for kw in ({}, {"edge_labels": "rule"}, {"backward": True}):
        dot = fg.viz.draw(tr, **kw)
        # quoted DOT strings: the user's backslash doubled (a trailing one would eat the
        # closing quote; "\N" would print the node's id)
        assert f"{name}c".replace("\\", "\\\\") in dot.source
        if kw.get("edge_labels") == "rule":
            assert f"v̄ · {name}".replace("\\", "\\\\") in dot.source
        if HAS_DOT:
            texts = _svg_texts(dot.pipe(format="svg").decode())
            assert any(t.startswith(name + "c") for t in texts), texts
            if kw.get("edge_labels") == "rule":     # the rule on w's edge into the mul
                assert "x̄ += v̄ · " + name in texts, texts


def test_the_walkthrough_page_has_no_markup_in_its_script():
    name = "<!--<script>"   # once it kept the script element open: the page never ran
    tr, w = _trace(name)
    if not HAS_DOT:
        pytest.skip("the walkthrough lays the graph out with Graphviz's dot")
    page = fg.viz.walkthrough(tr).html
    script = re.search(r"<script>\n(.*)</script>", page, flags=re.S).group(1)
    assert "<" not in script.split("\n", 1)[0] and page.count("</script>") == 1
    data = json.loads(re.match(r"const D = (.*);", script).group(1))
    text = "\n".join(line for f in data["frames"] for line in f["lines"])
    assert f"{name} = [0.5 -1]  (variable)" in text


@pytest.mark.parametrize("name, tex", [
    ("x&y", r"\mathrm{x\&y}"), ("50%off", r"\mathrm{50\%off}"), ("a}", r"\mathrm{a\}}"),
    ("$x$", r"\mathrm{\$x\$}"), ("esc\\", r"\mathrm{esc\backslash{}}"),
    ("#n", r"\mathrm{\#n}"), ("&", r"\&"), ("w_a&b", r"w_{a\&b}")])
def test_a_formula_escapes_latex_specials_in_names(name, tex):
    with fg.Graph():
        x = fg.placeholder("x", shape=())
        w = fg.variable(0.5, name=name)
        f = fg.viz.formula(fg.grad(fg.tanh(w * x).named("L"), w), lhs=f"∂L/∂{name}")
    assert f.text == f"∂L/∂{name} = (1 − tanh({name} x)²) x"
    assert f.latex == (rf"\frac{{\partial L}}{{\partial {tex}}} = \left(1 - \tanh\left("
                       rf"{tex} x\right)^{{2}}\right) x")
    # what is left once the escapes are taken out has balanced braces and no specials
    bare = re.sub(r"\\[{}$&#%_]|\\[A-Za-z]+", "", f.latex)
    assert not re.search(r"[$&#%]", bare)
    depth = 0
    for ch in bare:
        depth += (ch == "{") - (ch == "}")
        assert depth >= 0
    assert depth == 0
