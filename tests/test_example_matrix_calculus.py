"""Smoke test: the matrix-calculus example runs, and every difference is at round-off."""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_matrix_calculus_example_runs_and_agrees_with_the_closed_forms():
    script = os.path.join(ROOT, "examples", "matrix_calculus.py")
    proc = subprocess.run([sys.executable, script], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = re.findall(r"^\s+(\d+)\s+f\(.*?\s([\d.]+e[-+]\d+)\s+(—|[\d.]+e[-+]\d+)$",
                      proc.stdout, re.MULTILINE)
    assert len(rows) >= 12
    diffs = [float(d) for _, g, h in rows for d in (g, h) if d != "—"]
    assert max(diffs) < 1e-12
    assert "Exercise 11: f(X) = log det X" in proc.stdout
    assert re.search(r"largest difference \S+: OK", proc.stdout)


def test_a_nan_difference_fails_the_example(monkeypatch, capsys):
    # max(0.0, nan) is 0.0: a NaN Hessian (‖xxᵀ‖₂ at a tie) used to print "OK"
    import importlib.util

    import numpy as np
    spec = importlib.util.spec_from_file_location(
        "matrix_calculus_example", os.path.join(ROOT, "examples", "matrix_calculus.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    x0 = np.array([1.0, 0.0])
    nan_hessian = ("99", "f(x) = ‖x‖²", lambda x: mod.fg.sum(x * x), x0, 2 * x0,
                   np.full((2, 2), np.nan))
    monkeypatch.setattr(mod, "EXERCISES", [mod.EXERCISES[0], lambda: nan_hessian])
    assert mod.main(["--quiet"]) == 1
    assert "FAILED" in capsys.readouterr().out
