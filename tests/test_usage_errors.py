"""Issue 18 §3/§5: API misuse is a typed fg.UsageError that says what to do, never a raw
TypeError/AttributeError from deep inside; and `import flowgrad` works beside a checkout."""
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

import flowgrad as fg

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def g():
    with fg.Graph() as graph:
        yield graph


def test_grad_of_a_number_wrt_or_output_is_a_usage_error(g):
    w = fg.variable(2.0, name="w")
    loss = w * w
    with pytest.raises(fg.UsageError, match=r"grad: wrt must be a node or a list of nodes, got float 1\.0"):
        fg.grad(loss, 1.0)
    with pytest.raises(fg.UsageError, match="wrt must be nodes, got int 2"):
        fg.grad(loss, [w, 2])
    with pytest.raises(fg.UsageError, match="output to differentiate must be a flowgrad node"):
        fg.grad(1.0, w)
    with pytest.raises(fg.UsageError, match="vjp: x must be"):
        fg.vjp(loss, "w", 1.0)
    with pytest.raises(fg.UsageError, match="jvp: the output"):
        fg.jvp(None, w, 1.0)
    # still a TypeError for code that caught the old one
    with pytest.raises(TypeError):
        fg.grad(loss, 1.0)
    assert fg.run(fg.grad(loss, (w,))[0]) == 4.0  # a tuple of nodes is fine


@pytest.mark.parametrize("bad", [None, 3, "loss", []])
def test_compile_of_not_nodes_is_a_usage_error(g, bad):
    with pytest.raises(fg.UsageError, match="compile takes a node or a non-empty list of nodes"):
        fg.compile(bad)
    with pytest.raises(fg.UsageError):
        fg.run(bad)


def test_compile_takes_any_iterable_of_nodes(g):
    x = fg.placeholder("x")
    outs = {"a": x * 2, "b": x + 1}
    assert [float(v) for v in fg.compile(outs.values())(x=3.0)] == [6.0, 4.0]


@pytest.mark.parametrize("make", [
    lambda d: fg.placeholder(f"x{np.random.randint(1 << 30)}", dtype=d),
    lambda d: fg.variable([1.0], dtype=d),
    lambda d: fg.constant(1.0, dtype=d),
    lambda d: fg.random.normal((2,), dtype=d),
    lambda d: fg.nn.init.normal((2,), dtype=d),
])
def test_unknown_dtype_names_the_accepted_ones(g, make):
    with pytest.raises(fg.UsageError, match=r"dtype 'f32' is not one flowgrad knows; use one of "
                                            r"bool, int8.*float32.*complex128"):
        make("f32")
    assert make("f4").dtype == np.float32          # numpy's own aliases keep working
    assert make(np.float32).dtype == np.float32


def test_non_numeric_dtype_is_refused(g):
    for bad in ("U3", object, "datetime64[s]"):
        with pytest.raises(fg.UsageError, match="is not one flowgrad knows"):
            fg.placeholder("x", dtype=bad)


def test_float_of_a_node_says_to_run_it(g):
    x = fg.placeholder("x")
    y = (x * 2).named("y")
    for convert, what in [(float, "float()"), (int, "int()"), (complex, "complex()"),
                          (np.asarray, "a numpy array")]:
        with pytest.raises(fg.UsageError, match=rf"{what}.*node 'y'.*use fg\.run\(y\)"):
            convert(y)
    assert float(fg.run(y, {x: 1.5})) == 3.0


def test_no_public_op_is_filed_under_other():
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import ops_table
    finally:
        sys.path.pop(0)
    other = [name for fam, name, *_ in ops_table.public_rows() if fam == "Other"]
    assert other == [], f"give these ops' module a family in docs/ops_table.py: {other}"
    assert "## Losses" in (ROOT / "docs" / "ops.md").read_text()


def test_import_beside_a_checkout_named_flowgrad(tmp_path):
    """Python run in the folder that holds a clone named `flowgrad` used to import the
    clone as an empty namespace package (fg.Graph missing)."""
    clone = tmp_path / "flowgrad"
    clone.mkdir()
    for part in ("flowgrad", "ops", "backends", "viz"):
        shutil.copytree(ROOT / part, clone / part,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "__init__.py", clone / "__init__.py")
    code = ("import flowgrad as fg; x = fg.placeholder('x'); "
            "print(fg.Graph.__name__, fg.run(fg.sin(x) * 2, {x: 0.5}), fg.ops.__file__)")
    env = dict(os.environ, PYTHONPATH="")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    name, value, ops_file = out.stdout.split()
    assert name == "Graph" and float(value) == 2 * np.sin(0.5)
    assert ops_file.startswith(str(clone))


def test_the_worked_example_has_a_name_that_says_so():
    """"seed" means random seeds and v̄ = 1 only; the lecture notes' example is
    fg.worked_example, and the old name still works with a DeprecationWarning."""
    with fg.Graph():
        nodes = fg.worked_example.univariate_logistic()
        assert set(nodes) >= {"x", "t", "w", "b", "z", "y", "L", "R", "loss"}
    with pytest.warns(DeprecationWarning, match="fg.seed is now fg.worked_example"):
        assert fg.seed is fg.worked_example
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        fg.nope


def test_eq_and_ne_against_a_value_are_refused_not_a_python_bool():
    # x != 0.0 was True (identity), so fg.where(x != 0.0, 1.0, 0.0) silently picked 1.0
    with fg.Graph():
        x = fg.placeholder("x", (3,))
        with pytest.raises(fg.UsageError, match=r"fg.not_equal\(x, value\)"):
            x != 0.0
        with pytest.raises(fg.UsageError, match=r"fg.equal\(x, value\)"):
            x == np.zeros(3)
        y = fg.placeholder("y", (3,))
        assert (x == x) is True and (x != y) is True and (x == None) is False  # noqa: E711
        assert {x: 1}[x] == 1 and x in [y, x]
        np.testing.assert_array_equal(fg.run(fg.where(fg.not_equal(x, 0.0), 1.0, 0.0),
                                             x=np.array([0.0, 2.0, -0.0])), [0.0, 1.0, 0.0])
