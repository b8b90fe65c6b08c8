"""The example notebooks run top to bottom in a fresh kernel of this interpreter (nbclient),
and the committed files are exactly what examples/make_notebooks.py writes (no outputs)."""
import importlib.util
import json
import pathlib
import sys
import time

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = ["worked_example.ipynb", "logistic_regression.ipynb"]


def _generator():
    spec = importlib.util.spec_from_file_location("make_notebooks",
                                                  ROOT / "examples" / "make_notebooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def kernel_name(tmp_path, monkeypatch):
    """A kernelspec that starts *this* interpreter (the venv's), whatever else is installed."""
    spec_dir = tmp_path / "jupyter" / "kernels" / "flowgrad-test"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "flowgrad test", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return "flowgrad-test"


def _execute(nb, kernel_name, cwd):
    client = NotebookClient(nb, timeout=120, kernel_name=kernel_name,
                            resources={"metadata": {"path": str(cwd)}})
    client.execute()     # raises CellExecutionError on the first failing cell
    return nb


def _stdout(nb):
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []) if o.get("output_type") == "stream"
                   and o.get("name") == "stdout")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, kernel_name, tmp_path):
    nb = nbformat.read(ROOT / "examples" / name, as_version=4)
    # a last cell (not in the file) shows which interpreter ran: the venv's, not another
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print('kernel:', sys.executable)"))
    start = time.perf_counter()
    _execute(nb, kernel_name, tmp_path)
    elapsed = time.perf_counter() - start
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert errors == []
    assert elapsed < 60, f"{name} took {elapsed:.1f} s"      # ~5-10 s on a quiet machine
    text = _stdout(nb)
    assert f"kernel: {sys.executable}\n" in text
    if name == "worked_example.ipynb":
        assert "w̄" in text and "-0.009100" in text                # by hand = flowgrad
        assert "∂loss/∂b = (y − t) · y(1 − y)   where y = σ(w x + b)" in text
        assert (tmp_path / "backprop.html").exists() or "dot" not in text
    else:
        assert "training accuracy" in text
        assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebooks_match_the_generator_and_have_no_outputs(name):
    committed = nbformat.read(ROOT / "examples" / name, as_version=4)
    fresh = _generator().build(_generator().NOTEBOOKS[name])
    assert [(c.cell_type, c.source) for c in committed.cells] == \
        [(c.cell_type, c.source) for c in fresh.cells], \
        "run `python examples/make_notebooks.py` after editing the cells"
    for c in committed.cells:
        if c.cell_type == "code":
            assert c.outputs == [] and c.execution_count is None
