"""Smoke tests: each training example runs as a script (small sizes, ``--quick``),
exits 0, and prints the numbers it promises."""
import re

import pytest

from examples_runner import PNG, number, run_example


pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")


def test_logistic_regression_matches_sklearn(tmp_path):
    out = run_example("logistic_regression.py", "--quick", "--plot", "loss.png", cwd=tmp_path)
    assert number(r"largest difference: (\S+)", out) < 1e-12          # part (a)
    rel = number(r"\|f − f_sk\|/f_sk = (\S+)", out)
    assert rel < 1e-6
    f_sk = number(r"L-BFGS .*: f = (\S+)", out)
    assert f_sk == pytest.approx(0.0598279, rel=1e-5)   # λ = 1e-3 on the standardized data
    assert (tmp_path / "loss.png").read_bytes()[:8] == PNG
    # part (c): a Dense(1) layer trained by opt.fit follows the hand-built graph
    assert number(r"largest relative difference over the run (\S+)", out) < 1e-9
    assert out.rstrip().endswith("OK")


def test_linear_regression_timing_table_and_plot(tmp_path):
    out = run_example("linear_regression_timing.py", "--quick", "--runs", "3",
                      "--plot", "timing.png", cwd=tmp_path)
    assert number(r"largest difference (\S+);", out) < 1e-12
    assert "SUM of squares" in out
    rows = re.findall(r"^\s+(\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", out, re.M)
    assert [int(r[0]) for r in rows] == [10, 100, 1000, 10000]
    for n, iters, t_an, t_fg, ratio in rows:
        assert 50 < int(iters) < 200                     # the same for both loops (checked)
        assert float(ratio) == pytest.approx(float(t_fg) / float(t_an), rel=0.02, abs=0.02)
        assert float(t_an) > 0 and float(t_fg) > 0
    assert (tmp_path / "timing.png").read_bytes()[:8] == PNG


def test_taylor_cosine_gradient_is_minus_sine(tmp_path):
    out = run_example("taylor_cosine.py", "--quick", cwd=tmp_path)
    assert number(r"max \|c'\(x\) \+ sin x\|\s+(\S+)", out) < 1e-12
    assert number(r"max \|c''\(x\) \+ cos x\|\s+(\S+)", out) < 1e-11
    row4 = re.search(r"^\s+4\s+(\S+)\s+(\S+)\s+(\S+)$", out, re.M)
    assert 1e-3 < float(row4.group(1)) < 1e-2            # 4 terms: x⁷/7! at π/2 ≈ 4.7e-3


def test_mlp_digits_trains_and_restores(tmp_path):
    out = run_example("mlp_digits.py", "--quick", "--save", "mlp.npz", "--plot", "hist.png",
                      cwd=tmp_path)
    acc = number(r"validation accuracy (\S+)\n", out)
    assert acc >= 0.97
    assert number(r"restored validation accuracy (\S+)", out) == acc
    assert "total: 9,610 parameters in 4 variables, 2 scopes" in out     # fg.summary
    assert re.search(r"History 1?\d epochs: loss .* val_acc", out)
    assert (tmp_path / "mlp.npz").exists()
    assert (tmp_path / "hist.png").read_bytes()[:8] == PNG
    assert out.rstrip().endswith("OK")


def test_cnn_digits_trains_and_draws_its_layers(tmp_path):
    out = run_example("cnn_digits.py", "--quick", "--quiet", "--graph", "cnn", cwd=tmp_path)
    assert number(r"validation accuracy (\S+)\n", out) >= 0.95
    assert "total: 6,090 parameters in 6 variables, 3 scopes" in out    # fg.summary
    assert out.rstrip().endswith("OK")
    if "graph drawn to" in out:     # (Graphviz's `dot` present)
        svg = (tmp_path / "cnn.svg").read_text()
        assert "conv2d_1" in svg and "max_pool2d" in svg


def test_rnn_sequence_trains_by_bptt_through_one_scan_node(tmp_path):   # issue 20
    out = run_example("rnn_sequence.py", "--quick", "--draw", "rnn.gv", "--plot", "loss.png",
                      cwd=tmp_path)
    before = number(r"test loss before training: (\S+)", out)
    after = number(r"test loss after \d+ steps: (\S+)", out)
    assert after < 0.1 * before and after < 0.01
    assert number(r"scan vs unrolled gradient: (\S+)", out) < 1e-12
    assert "scan × T" in (tmp_path / "rnn.gv").read_text()
    # the 3-step unroll: one copy of the cell per step, its numbers those of a numpy loop
    unrolled = (tmp_path / "rnn_unrolled.gv").read_text()
    assert all(f"scan · iteration {t} of 3" in unrolled for t in (1, 2, 3))
    assert "scan × T" not in unrolled and "v̄" in unrolled
    assert number(r"drawn h_t vs a numpy loop: (\S+)", out) < 1e-12
    page = (tmp_path / "rnn_walkthrough.html").read_text()
    assert "scan, iteration 2 of 3" in page and "Backpropagation through time" in page
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.rstrip().endswith("OK")


def test_newton_sqrt_gradient_is_one_over_two_sqrt(tmp_path):   # issue 20
    out = run_example("newton_sqrt.py", "--quick", cwd=tmp_path)
    assert number(r"relative error of the gradient: (\S+)", out) < 1e-12
    assert number(r"relative error of the second derivative: (\S+)", out) < 1e-10
    assert out.rstrip().endswith("OK")


def test_lstm_sequence_learns_and_runs_a_longer_sequence(tmp_path):   # issue 22
    out = run_example("lstm_sequence.py", "--quick", cwd=tmp_path)
    assert number(r"validation loss after \d+ epochs: (\S+)", out) < 0.3
    assert number(r"accuracy on sequences of 40 steps, same program: (\S+)", out) >= 0.9
    assert out.rstrip().endswith("OK")
