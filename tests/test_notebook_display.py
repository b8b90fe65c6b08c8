"""Notebooks: Graph, Program and Trace display themselves drawn (text without `dot`,
never an exception), a walkthrough plays inline, and `import flowgrad` warns nothing."""
import html
import re
import shutil
import sys

import numpy as np
import pytest

import flowgrad as fg
from flowgrad.viz import notebook

HAS_DOT = shutil.which("dot") is not None


def _seed():
    n = fg.worked_example.univariate_logistic()
    prog = fg.compile(n["loss"])
    return prog, prog.trace(x=1.5, t=1.0), n


def test_trace_value_beside_adjoint():
    _, tr, n = _seed()
    y0 = 1 / (1 + np.exp(-0.9))
    assert tr.value(n["y"]) == tr[n["y"]] == pytest.approx(y0, rel=1e-14)
    hand = fg.worked_example.hand_adjoints()
    assert tr.adjoint(n["w"]) == pytest.approx(hand["w"], rel=1e-12)
    with pytest.raises(KeyError, match="not computed"):
        tr.value(fg.variable(1.0, name="elsewhere"))


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz `dot` is not installed")
def test_graph_program_and_trace_draw_inline():
    prog, tr, n = _seed()
    b = tr._repr_mimebundle_()
    assert b["text/plain"] == repr(tr) and b["image/svg+xml"].lstrip().startswith("<?xml")
    text = html.unescape(b["image/svg+xml"])
    assert "v̄ -0.0091" in text and "0.07378" in text          # w̄ and the loss
    b = prog._repr_mimebundle_()
    assert "<svg" in b["image/svg+xml"] and "0.07378" not in b["image/svg+xml"]  # structure
    assert b["text/plain"].startswith("<flowgrad.Program [loss]")
    b = n["loss"].graph._repr_mimebundle_()
    assert "<svg" in b["image/svg+xml"] and "sigmoid" in b["image/svg+xml"]


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz `dot` is not installed")
def test_huge_graphs_are_cut_down():
    with fg.Graph() as g:
        x = fg.placeholder("x")
        h = x
        for _ in range(400):
            h = fg.tanh(h)
    b = g._repr_mimebundle_()
    drawn = len(re.findall(r'class="node"', b["image/svg+xml"]))
    assert notebook.MAX_INLINE_NODES <= drawn <= notebook.MAX_INLINE_NODES + 2  # + "⋯ k"
    assert "nearest the outputs" in b["text/plain"]


def test_without_dot_a_text_listing(monkeypatch):
    prog, tr, n = _seed()
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    for obj in (tr, prog, n["loss"].graph):
        b = obj._repr_mimebundle_()
        assert list(b) == ["text/plain"]
        assert b["text/plain"].startswith(repr(obj)) and "apt-get install graphviz" in b["text/plain"]
    assert "  y: sigmoid ()" in tr._repr_mimebundle_()["text/plain"]


def test_a_failing_drawing_is_text_not_an_exception(monkeypatch):
    _, tr, _ = _seed()
    from flowgrad.viz import dot

    def broken(*a, **k):
        raise RuntimeError("boom")
    monkeypatch.setattr(dot, "draw", broken)
    monkeypatch.setattr(dot, "dot_available", lambda: True)
    b = tr._repr_mimebundle_()
    assert list(b) == ["text/plain"] and "RuntimeError: boom" in b["text/plain"]


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz `dot` is not installed")
def test_walkthrough_plays_inline_and_saves(tmp_path):
    _, tr, n = _seed()
    wt = fg.viz.walkthrough(tr)
    assert isinstance(wt, fg.viz.Walkthrough) and len(wt.frames) == 26
    page = wt._repr_html_()
    assert page.startswith("<iframe srcdoc=\"") and "&lt;!DOCTYPE html&gt;" in page
    assert html.unescape(re.search(r'srcdoc="([^"]*)"', page).group(1)) == wt.html
    assert "<script>" in wt.html and "http" not in wt.html.split("<svg", 1)[0]
    path = wt.save(tmp_path / "b.html")
    assert open(path, encoding="utf-8").read() == wt.html
    frames = wt.save(tmp_path / "frames")
    assert len(frames) == 26
    # the path argument still writes at once and returns the path
    assert fg.viz.walkthrough(tr, tmp_path / "c.html") == str(tmp_path / "c.html")


def test_progress_picks_a_bar_that_works_without_widgets():
    import importlib.util
    progress = sys.modules["flowgrad.training.progress"]
    has_widgets = importlib.util.find_spec("ipywidgets") is not None
    if has_widgets:
        from tqdm.auto import tqdm
        assert progress.tqdm is tqdm
    else:
        assert progress.tqdm.__module__ == "tqdm.std"


@pytest.mark.slow
def test_import_in_a_kernel_prints_nothing(tmp_path):
    import nbformat
    from nbclient import NotebookClient
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import flowgrad as fg\n"
        "bar = fg.progress(range(3), desc='t')\n"
        "for _ in bar: bar.update_metrics(loss=0.5)\n"),
        nbformat.v4.new_code_cell(
        "n = fg.worked_example.univariate_logistic()\n"
        "tr = fg.compile(n['loss']).trace(x=1.5, t=1.0)\n"
        "tr")]
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    first = nb.cells[0].outputs
    assert not any("IProgress" in (o.get("text") or "") for o in first)
    assert not any(o.get("name") == "stderr" and "Warning" in o.get("text", "") for o in first)
    assert any("3/3" in (o.get("text") or "") for o in first)     # the bar shows in a kernel
    shown = nb.cells[1].outputs[0]["data"]
    assert "text/plain" in shown and ("image/svg+xml" in shown or not HAS_DOT)
