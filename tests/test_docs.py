"""docs/ stands on its own: its code blocks run, its op table covers the registry, and no
tracked file outside tests points at the project's private notes folder."""
import pathlib
import re
import subprocess

import pytest

import flowgrad as fg
from flowgrad import ops
from flowgrad.ops import REGISTRY

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = ["theory.md", "ops.md", "howto-draw.md", "howto-walkthrough.md", "howto-train.md",
         "howto-debug.md", "howto-custom.md"]
PAGES += ["howto-loops.md"]   # issue 20: loops and branches
PAGES += ["threads.md"]       # the thread-safety contract
BLOCKS = [(page, k, code) for page in PAGES
          for k, code in enumerate(re.findall(r"^```python\n(.*?)^```",
                                              (DOCS / page).read_text(encoding="utf-8"),
                                              flags=re.S | re.M))]


def test_every_page_exists_and_the_howtos_have_code():
    for page in PAGES:
        assert (DOCS / page).stat().st_size > 500, page
    with_code = {page for page, _, _ in BLOCKS}
    assert with_code >= {"theory.md", "howto-draw.md", "howto-walkthrough.md", "howto-train.md",
                         "howto-debug.md"}


@pytest.mark.parametrize("page, k, code", BLOCKS, ids=[f"{p}:{k}" for p, k, _ in BLOCKS])
def test_doc_block_runs(page, k, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"docs/{page} block {k}", "exec"), {"__name__": "docs"})


def _table_ops():
    text = (DOCS / "ops.md").read_text(encoding="utf-8")
    return set(re.findall(r"^\| `([a-z_0-9]+)` \|", text, flags=re.M))


def test_every_registered_op_is_in_the_op_table():
    assert fg  # importing flowgrad registers every op
    library = {n for n, op in REGISTRY.items()      # not the ops other tests register
               if getattr(op.forward, "__module__", "").startswith("flowgrad.")}
    assert {"add", "matmul", "sigmoid", "sum_to"} <= library
    missing = (library | set(ops.__all__)) - _table_ops()
    assert not missing, (f"docs/ops.md lacks {sorted(missing)}: "
                         "run `python docs/ops_table.py` to regenerate it")


def test_op_table_rows_state_the_registry_rules():
    text = (DOCS / "ops.md").read_text(encoding="utf-8")
    for name in ("sigmoid", "matmul", "logdet"):
        first = re.sub(r"\s*\n\s*", " ", REGISTRY[name].__doc__.strip())
        rule = first.partition(".  ")[2]
        row = next(line for line in text.splitlines() if line.startswith(f"| `{name}` |"))
        assert rule and rule.replace("|", "\\|") in row, (name, rule, row)


def test_theory_numbers_match_flowgrad():
    """The table in theory.md shows the numbers flowgrad computes, to the digits printed."""
    text = (DOCS / "theory.md").read_text(encoding="utf-8")
    text = text[text.index("| vertex | value v | adjoint v̄ |"):]
    with fg.Graph():
        s = fg.worked_example.univariate_logistic(w0=0.8, b0=-0.3, lam=0.1)
        tr = fg.compile(s["loss"]).trace(x=1.5, t=1.0)
        for sym, key in [("𝓛", "loss"), ("L", "L"), ("R", "R"), ("y", "y"), ("z", "z"),
                         ("b", "b"), ("x", "x"), ("w", "w")]:
            row = next(line for line in text.splitlines() if line.startswith(f"| {sym} |"))
            value, adjoint = (float(c.strip().replace("−", "-"))
                              for c in row.split("|")[2:4])
            assert value == pytest.approx(float(tr[s[key]]), rel=1e-4), row
            assert adjoint == pytest.approx(float(tr.adjoint(s[key])), rel=1e-3), row


def test_no_tracked_file_outside_tests_points_at_shared():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    offenders = []
    for f in files:
        if f.startswith("tests/"):
            continue
        try:
            text = (ROOT / f).read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError):
            continue
        if "shared/" in text:
            offenders.append(f)
    assert offenders == []
