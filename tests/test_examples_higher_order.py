"""Smoke tests: the higher-order examples run as scripts at small sizes, exit 0 and
print the numbers they promise."""
import pytest

from examples_runner import number, run_example



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
