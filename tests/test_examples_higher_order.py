"""Smoke tests: the higher-order examples run as scripts at small sizes, exit 0 and
print the numbers they promise."""
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_example(name, *args, cwd):
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / name), *args],
                          cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def number(pattern, text):
    m = re.search(pattern, text)
    assert m, f"{pattern!r} not in output:\n{text}"
    return float(m.group(1))


def test_higher_order_example_plots_the_fourth_derivative(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "plots" / "tanh4.png"
    text = run_example("higher_order.py", "--points", "41", "--out", str(out), cwd=tmp_path)
    assert number(r"max \|error\| against the closed form: (\S+)", text) < 1e-10
    assert number(r"(\d+) plan steps", text) < number(r"(\d+) op nodes", text)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_hessian_vector_example_matches_the_analytic_hessian(tmp_path):
    text = run_example("hessian_vector.py", "--small", "--repeats", "3", cwd=tmp_path)
    assert number(r"forward-over-reverse (\S+),", text) < 1e-10
    assert number(r"reverse-over-reverse (\S+)\n", text) < 1e-10
    assert number(r"analytic Hessian: relative error (\S+)", text) < 1e-10
    assert number(r"= (\S+)x gradient", text) > 0
