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
