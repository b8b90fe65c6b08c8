"""What the docs say is what the code does: the derivative rules stated in op docstrings
(and so in docs/ops.md) evaluated in numpy against PyTorch in float64 and flowgrad's own
rules; docs/ops.md as the generator writes it; the outputs README's and the how-to pages'
code claims to print; the example scripts' checks failing when their claim fails."""
import contextlib
import io
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

import flowgrad as fg
from flowgrad.ops import REGISTRY

torch = pytest.importorskip("torch")

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
sys.path.insert(0, str(ROOT / "docs"))
import ops_table  # noqa: E402  (docs/ops_table.py, the op table's generator)


def _blocks(text):
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def _printed(code, tmp_path, monkeypatch):
    """What a doc's code block prints, run as tests/test_docs.py runs it."""
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "doc block", "exec"), {"__name__": "docs"})
    return out.getvalue()


def _grads(fn, values):
    """flowgrad's gradient of sum(fn(*inputs)) w.r.t. each input, and the jvp along
    ones from each input alone, in float64."""
    with fg.Graph():
        ps = [fg.placeholder(f"p{i}", shape=np.shape(v)) for i, v in enumerate(values)]
        y = fn(*ps)
        outs = list(fg.grad(fg.sum(y), ps)) + [fg.jvp(y, p, np.ones(np.shape(v)))
                                               for p, v in zip(ps, values)]
        return fg.run(outs, {p: v for p, v in zip(ps, values)})


def _torch_grads(fn, values):
    ts = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in values]
    fn(*ts).sum().backward()
    return [t.grad.numpy() for t in ts]


# clip's bounds at every case its rule separates: inside, at a bound, outside, lo = hi,
# and lo > hi with x between them (hi < x < lo: the value is hi, once, not twice).
# Not x < lo = hi, where torch gives neither bound a derivative and flowgrad gives hi 1
# (its doc: "a tie lo = hi goes to hi"; moving both bounds together moves the value)
CLIP_X = np.array([-2.0, -1.0, 0.0, 1.0, 2.0, 0.5, 2.0, 0.5, 3.0, -3.0, 0.5])
CLIP_LO = np.array([-1.0, -1.0, -1.0, -1.0, -1.0, 0.5, 1.0, 2.0, 1.0, 1.0, 1.0])
CLIP_HI = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 1.0, 1.0, 0.0, 0.0, 0.0])
# each stated rule: (op, the text its docstring states, the rule in numpy, argument)
CLIP_RULES = [
    ("∂/∂x = [lo ≤ x ≤ hi]", lambda x, lo, hi: (lo <= x) & (x <= hi), 0),
    ("∂/∂lo = [x < lo < hi]", lambda x, lo, hi: (x < lo) & (lo < hi), 1),
    ("∂/∂hi = [x > hi or (x < lo and hi ≤ lo)]",
     lambda x, lo, hi: (x > hi) | ((x < lo) & (hi <= lo)), 2),
]


@pytest.mark.parametrize("text, rule, k", CLIP_RULES, ids=[r[0][:6] for r in CLIP_RULES])
def test_clip_rules_as_stated_are_torch_clamps(text, rule, k):
    assert text in " ".join(REGISTRY["clip"].__doc__.split())
    stated = rule(CLIP_X, CLIP_LO, CLIP_HI).astype(float)
    want = _torch_grads(lambda x, lo, hi: torch.clamp(x, min=lo, max=hi),
                        [CLIP_X, CLIP_LO, CLIP_HI])[k]
    assert np.array_equal(stated, want)
    got = _grads(fg.clip, [CLIP_X, CLIP_LO, CLIP_HI])
    assert np.array_equal(got[k], want) and np.array_equal(got[3 + k], want)


X_PTS = np.array([-1.3, -0.4, 0.0, 0.7, 2.1])
UNARY = [   # (op, text in its doc, the stated rule in numpy, torch's function)
    ("leaky_relu", "∂/∂x = [x > 0] + slope·[x ≤ 0]",
     lambda x: (x > 0) + 0.01 * (x <= 0), torch.nn.functional.leaky_relu),
    ("elu", "∂/∂x = [x > 0] + α eˣ [x ≤ 0]",
     lambda x: (x > 0) + np.exp(x) * (x <= 0), torch.nn.functional.elu),
    ("relu", "∂/∂x = [x > 0]", lambda x: (x > 0) * 1.0, torch.relu),
    ("abs", "∂/∂x = sign x", np.sign, torch.abs),
    ("gelu", "∂/∂x = Φ(x) + x φ(x)",
     lambda x: (0.5 * (1 + np.vectorize(__import__("math").erf)(x / np.sqrt(2)))
                + x * np.exp(-x * x / 2) / np.sqrt(2 * np.pi)), torch.nn.functional.gelu),
    ("tan", "∂/∂x = 1 + tan² x", lambda x: 1 + np.tan(x) ** 2, torch.tan),
    ("sigmoid", "∂/∂x = σ(1−σ)",
     lambda x: 1 / (1 + np.exp(-x)) * (1 - 1 / (1 + np.exp(-x))), torch.sigmoid),
]


@pytest.mark.parametrize("name, text, rule, tfn", UNARY, ids=[u[0] for u in UNARY])
def test_unary_rules_as_stated_match_torch(name, text, rule, tfn):
    assert text in " ".join(REGISTRY[name].__doc__.split())
    want = _torch_grads(tfn, [X_PTS])[0]
    np.testing.assert_allclose(rule(X_PTS), want, rtol=1e-14, atol=1e-15)
    got = _grads(getattr(fg, name), [X_PTS])
    np.testing.assert_allclose(got[0], want, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(got[1], want, rtol=1e-14, atol=1e-15)


def test_ops_md_is_what_the_generator_writes():
    assert (ROOT / "docs" / "ops.md").read_text(encoding="utf-8") == ops_table.render(), \
        "docs/ops.md is stale: run `python docs/ops_table.py`"


def test_op_table_cells_split_prose_from_rule():
    """The generator cut a rule in two where its docstring's adjoint was a precomposed
    letter (ā in dot, outer), looked for a two-space sentence break after collapsing the
    spaces (zeros_like: 'No derivative flows ('), and lost a function's stated rule where
    its op's docstring had none."""
    rows = {name: (what, rule) for _, name, _, what, rule in ops_table.public_rows()}
    assert rows["dot"][1].startswith("ā = ḡ bᵀ, b̄ = aᵀ ḡ")
    assert rows["outer"] == ("numpy.outer: the inputs flattened, out[i, j] = a[i] b[j]",
                             "ā = Ḡ b, b̄ = Ḡᵀ a.")
    assert rows["zeros_like"][1] == "No derivative flows (∂/∂x = 0)."
    assert rows["concatenate"][1].startswith("x̄ₖ = Ḡ's k-th block")
    for name, (what, rule) in rows.items():
        assert not what.endswith(("(", ":", ",", "↦")), (name, what)
        assert rule, name


def test_readme_trainer_repr_is_the_trainers(tmp_path, monkeypatch):
    block = next(b for b in _blocks(README) if "opt.minimize(loss)" in b and "bar" in b)
    setup = block[:block.index("    bar = fg.progress")]
    said = re.search(r"`(<flowgrad Trainer: .*?>)`", README, flags=re.S).group(1)
    code = setup + "    print(repr(train))\n"
    assert _printed(code, tmp_path, monkeypatch).strip() == " ".join(said.split())
    howto = (ROOT / "docs" / "howto-train.md").read_text(encoding="utf-8")
    short = re.search(r"`(<flowgrad Trainer: .*?); …>`", howto, flags=re.S).group(1)
    assert said.replace("\n", " ").startswith(" ".join(short.split()))


def test_readme_printed_lines_are_what_the_code_prints(tmp_path, monkeypatch):
    blocks = _blocks(README)
    loop = next(b for b in blocks if "fg.scan(lambda h, x" in b)
    assert _printed(loop, tmp_path, monkeypatch).strip() == "1"       # one box
    anomaly = next(b for b in blocks if "fg.detect_anomaly()" in b)
    said = re.search(r"print\(err\)\s+# ('\w+' \(div\) produced .*?inputs)", anomaly).group(1)
    assert _printed(anomaly, tmp_path, monkeypatch).startswith(said)


def test_early_stopping_waits_more_than_patience_epochs_as_documented():
    """README and the how-to say: stop after more than `patience` epochs without
    improvement. A loss that never improves after the first epoch runs 1 + 3 epochs."""
    assert "has not improved for more than\n`patience` epochs" in README
    with fg.Graph():
        w = fg.variable(np.zeros(1), name="w")
        x = fg.placeholder("x", shape=(None, 1))
        loss = fg.sum(w * 0.0) + fg.mean(x)                 # w never changes the loss
        opt = fg.optim.SGD([w], lr=0.1)
        hist = opt.fit(loss, data={x: np.ones((4, 1))}, epochs=20, batch_size=4,
                       callbacks=[fg.EarlyStopping("loss", patience=2)], verbose=False)
    assert hist.epochs == 4 and hist.best_epoch == 0


def _example(name, *args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "examples" / name), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_rnn_sequence_exits_non_zero_when_training_falls_short(tmp_path):
    """README: each example exits non-zero when its check fails. rnn_sequence printed
    OK whatever its numbers were; one Adam step cannot reach its 0.01 target."""
    proc = _example("rnn_sequence.py", "--steps", "1", cwd=tmp_path)
    after = float(re.search(r"test loss after 1 steps: (\S+)", proc.stdout).group(1))
    assert after > 0.01
    assert proc.returncode == 1 and "FAILED" in proc.stdout


def test_newton_sqrt_exits_non_zero_when_its_check_fails(tmp_path):
    """newton_sqrt printed OK unconditionally. Run with its tolerance at 0 (so the check
    must fail on any rounding), it exits 1; as shipped it passes."""
    runner = ("import runpy, sys; sys.argv = ['newton_sqrt.py', '--quick'];"
              f"ns = runpy.run_path({str(ROOT / 'examples' / 'newton_sqrt.py')!r});"
              "ns['main'].__globals__['GRAD_TOL'] = -1.0; sys.exit(ns['main'](['--quick']))")
    failing = subprocess.run([sys.executable, "-c", runner], cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)
    assert failing.returncode == 1 and "FAILED" in failing.stdout
    ok = _example("newton_sqrt.py", "--quick", cwd=tmp_path)
    assert ok.returncode == 0 and ok.stdout.rstrip().endswith("OK")
    assert float(re.search(r"error of the gradient: (\S+)", ok.stdout).group(1)) < 1e-12


def test_howto_train_history_line_is_what_fit_returns(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    page = (ROOT / "docs" / "howto-train.md").read_text(encoding="utf-8")
    block = next(b for b in _blocks(page) if "print(hist)" in b)
    said = re.search(r"print\(hist\)\s+# (<flowgrad\.History .*?), …;\s+#\s+(restored epoch \d+>)",
                     block)
    printed = _printed(block, tmp_path, monkeypatch).strip()
    assert printed.startswith(said.group(1)) and printed.endswith(said.group(2)), printed
