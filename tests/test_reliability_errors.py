"""Issue 10 §2 and §3: run-time errors name the node; the NaN/Inf locator."""
import sys
import warnings

import numpy as np
import pytest

import flowgrad as fg
from flowgrad.autodiff import adjoint_mark

HERE = __file__


def _line(offset=0):
    """This test file's current line (+ offset): where the node under test is built."""
    return f"{HERE}:{sys._getframe(1).f_lineno + offset}"


# -- §2 errors at run time --------------------------------------------------------------

def test_a_failing_kernel_is_a_run_error_naming_node_op_inputs_and_line():
    with fg.Graph():
        x = fg.placeholder("x", shape=(3,))
        i = fg.placeholder("i", shape=(), dtype="int64")
        where = _line(1)
        y = x[i]
        prog = fg.compile(fg.exp(y))
        with pytest.raises(fg.RunError) as info:
            prog(x=np.ones(3), i=7)
    err = info.value
    msg = str(err)
    assert err.node is y and y.op.name in msg and repr(y.name) in msg
    assert where in msg
    assert "float64 (3,)" in msg and "int64 ()" in msg        # inputs: dtypes and shapes
    assert isinstance(err.__cause__, IndexError)
    assert isinstance(err, IndexError) and isinstance(err, fg.FlowgradError)  # both still work


@pytest.mark.parametrize("fails, kind", [
    (lambda: np.add(np.array(["a"]), 1.5), TypeError),   # numpy's _UFuncNoLoopError
    (lambda: {}["k"], KeyError)])
def test_a_run_error_prints_its_own_message_whatever_the_class_it_mixes_in(fails, kind):
    """The RunError of a failure is also an instance of the failure's class; that class's
    __str__ must not replace RunError's (numpy's no-loop error read .ufunc, which a
    RunError lacks, and str() failed; KeyError's quoted the whole report)."""
    from flowgrad.diagnose import report_error
    try:
        fails()
    except Exception as exc:
        err = report_error("'n' (op)", exc, "    inputs: none")
    assert isinstance(err, kind) and isinstance(err, fg.RunError)
    text = str(err)
    assert text.startswith("'n' (op) failed while the program ran: ")
    assert text.endswith("\n    inputs: none") and not text.startswith('"')


def test_run_errors_from_values_and_trace_too():
    with fg.Graph():
        x = fg.placeholder("x", shape=(3,))
        i = fg.placeholder("i", shape=(), dtype="int64")
        loss = fg.sum(x[i] * x)
        prog = fg.compile(loss)
        with pytest.raises(fg.RunError, match="getitem"):
            prog.trace(x=np.ones(3), i=-9)
        assert prog.trace(x=np.arange(3.0), i=2)[loss] == 6.0  # the program still works


def test_step_error_is_the_hook_generated_code_calls():
    with fg.Graph():
        x = fg.placeholder("x", shape=(2,))
        y = fg.log(x)
        z = fg.exp(y)
        prog = fg.compile(z)
    k = [st.node for st in prog.plan.steps].index(z.id)
    with pytest.raises(fg.RunError, match=repr(z.name)) as info:
        prog.step_error(k, ZeroDivisionError("boom"))
    assert isinstance(info.value.__cause__, ZeroDivisionError) and info.value.node is z


def test_every_node_records_the_users_line():
    with fg.Graph():
        where = _line(1)
        x = fg.placeholder("x")
        assert x.where == where
        y = fg.sin(x) * 2
        assert y.where == _line(-1)
        g = fg.grad(y, x)
        assert g.where == _line(-1)   # derivative nodes: the line that asked for them


# -- §3 NaN/Inf locator ----------------------------------------------------------------

def test_log_of_zero_is_located():
    with fg.Graph():
        x = fg.placeholder("x", shape=(3,))
        where = _line(1)
        y = fg.log(x)
        loss = fg.sum(y * y)
        prog = fg.compile(loss, check_numerics=True)
        with pytest.warns(RuntimeWarning), pytest.raises(fg.NumericsError) as info:
            prog(x=np.array([1.0, 0.0, 2.0]))
    err = info.value
    msg = str(err)
    assert err.node is y and "(log)" in msg and where in msg and "forward value" in msg
    assert "'x' = float64 (3,), min 0, max 2, 0 non-finite" in msg
    tr = err.trace
    assert isinstance(tr, fg.Trace) and tr.culprit is y
    np.testing.assert_array_equal(tr[x], [1.0, 0.0, 2.0])
    assert tr[y][1] == -np.inf
    assert loss not in tr   # not computed: the run stopped at y
    # without checking, the same program runs and returns inf quietly (the old behaviour)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert fg.compile(loss)(x=np.array([1.0, 0.0, 2.0])) == np.inf


def test_sqrt_of_negative_at_gradient_of_hand_written_norm_at_zero():
    with fg.Graph():
        v = fg.variable(np.zeros(3), name="v")
        norm = fg.sqrt(fg.sum(v * v))   # ∂/∂v = v / norm: 0/0 at v = 0
        gv = fg.grad(norm, v)
        prog = fg.compile([norm, gv], check_numerics=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            with pytest.raises(fg.NumericsError) as info:
                prog()
    err = info.value
    msg = str(err)
    assert "adjoint" in msg and "v̄ of" in msg and "∂" in msg
    assert adjoint_mark(err.node)[1] == norm.id   # a derivative of norm ...
    assert err.trace[norm] == 0.0                     # the forward value was fine


def test_overflowing_exp_is_located():
    with fg.Graph():
        x = fg.placeholder("x", shape=(2,))
        h = x * 2.0
        e = fg.exp(h)
        out = fg.sum(e)
        with fg.detect_anomaly():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                with pytest.raises(fg.NumericsError, match=r"\(exp\)") as info:
                    fg.run(out, {x: np.array([1.0, 400.0])})
        assert info.value.node is e
        assert "max 800" in str(info.value)
        # outside the block, nothing is checked
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            assert fg.run(out, {x: np.array([1.0, 400.0])}) == np.inf


def test_a_nan_first_appearing_in_the_backward_pass():
    with fg.Graph():
        x = fg.placeholder("x")
        w = fg.variable(0.0, name="w")
        # |w|^0.5: finite forward at w = 0, but its derivative 0.5 w^-0.5 is inf there
        a = fg.abs(w)
        y = fg.sqrt(a) + x
        gw = fg.grad(y, w)
        prog = fg.compile([y, gw], check_numerics=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            with pytest.raises(fg.NumericsError) as info:
                prog(x=1.0)
    err = info.value
    assert adjoint_mark(err.node) == (a.id, y.id)   # computing v̄ of |w|
    assert f"an adjoint value, part of the adjoint v̄ of {a.name!r}" in str(err)
    assert err.trace[y] == 1.0   # the forward pass was finite


def test_a_nan_fed_in_is_named():
    with fg.Graph():
        x = fg.placeholder("x", shape=(2,))
        prog = fg.compile(fg.sum(x), check_numerics=True)
        with pytest.raises(fg.NumericsError, match="placeholder 'x' was fed a value holding NaN"):
            prog(x=np.array([1.0, np.nan]))


def test_a_propagated_or_intentional_inf_is_not_flagged():
    with fg.Graph():
        z = fg.placeholder("z", shape=(3,))
        masked = fg.where(fg.constant(np.array([True, True, False])), z,
                          fg.constant(-np.inf))
        lse = fg.logsumexp(masked)
        prog = fg.compile(lse, check_numerics=True)
        got = prog(z=np.zeros(3))
        assert got == pytest.approx(np.log(2.0), rel=1e-15)


def test_detect_anomaly_is_thread_local_and_restores():
    import threading
    seen = {}
    with fg.detect_anomaly():
        assert fg.numerics.anomaly_enabled()
        t = threading.Thread(target=lambda: seen.setdefault("other", fg.numerics.anomaly_enabled()))
        t.start()
        t.join()
        with fg.detect_anomaly(False):
            assert not fg.numerics.anomaly_enabled()
        assert fg.numerics.anomaly_enabled()
    assert not fg.numerics.anomaly_enabled() and seen["other"] is False


def test_draw_marks_the_culprit_red():
    with fg.Graph():
        x = fg.placeholder("x", shape=(2,))
        y = fg.log(x)
        out = fg.sum(y)
        prog = fg.compile(out, check_numerics=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            with pytest.raises(fg.NumericsError) as info:
                prog(x=np.array([0.0, 1.0]))
    src = fg.viz.draw(info.value.trace).source      # the whole trace; draw(err) draws
    assert src != fg.viz.draw(info.value).source    # only the path (test_anomaly_drawing)
    culprit = [ln for ln in src.splitlines() if ln.strip().startswith(f"n{y.id} ")]
    assert culprit and "NaN/Inf here" in culprit[0] and fg.viz.dot.CULPRIT in culprit[0]
    others = [ln for ln in src.splitlines() if ln.strip().startswith(f"n{x.id} ")]
    assert fg.viz.dot.CULPRIT not in others[0]


def test_anomaly_example_locates_and_draws(tmp_path):
    from examples_runner import PNG, run_example
    from flowgrad.viz.dot import dot_available
    out = run_example("anomaly_locator.py", "--out", str(tmp_path), cwd=tmp_path)
    assert "(div) produced +Inf from finite inputs; it is an adjoint value" in out
    if dot_available():
        assert (tmp_path / "anomaly.png").read_bytes().startswith(PNG)
