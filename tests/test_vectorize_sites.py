"""fg.vectorize rebuilds a function's nodes batched; the rebuilt nodes keep the line the
user wrote each op on, so a NaN found in a vectorized function (check_numerics, the
precision audit) names that line, not the vectorize call's (which it used to)."""
import inspect

import numpy as np
import pytest

import flowgrad as fg

HERE = __file__


def _per_example(x):
    shifted = x * 2.0 - 1.0
    logged = fg.log(shifted)                                 # NaN for x < 0.5
    return fg.sum(logged * x), logged


LOG_LINE = inspect.getsourcelines(_per_example)[1] + 2


@pytest.mark.parametrize("codegen", [True, False])
def test_a_nan_in_a_vectorized_function_names_the_ops_line(codegen):
    with fg.Graph():
        x = fg.placeholder("x", shape=(3,))
        y, _ = _per_example(x)
        xs = fg.placeholder("xs", shape=(None, 3))
        vec_line = inspect.currentframe().f_lineno + 1
        ys = fg.vectorize(y, {x: xs})
        prog = fg.compile(ys, check_numerics=True, codegen=codegen)
        good = np.array([[1.0, 2.0, 3.0], [0.75, 1.0, 4.0]])
        np.testing.assert_allclose(prog(xs=good),
                                   np.sum(np.log(2 * good - 1) * good, axis=1), rtol=1e-14)
        bad = np.array([[1.0, 2.0, 3.0], [1.0, 0.25, 2.0]])     # 2·0.25 − 1 < 0
        for _ in range(2):                                     # first call and a later one
            with pytest.raises(fg.NumericsError) as info:
                prog(xs=bad)
            err = info.value
            assert err.node.op.name == "log"
            assert err.node.where == f"{HERE}:{LOG_LINE}"
            assert f"built at {HERE}:{LOG_LINE}" in str(err)
            assert f":{vec_line}" not in str(err)
            assert "log of a negative number" in err.explain()


def test_every_rebuilt_node_keeps_its_originals_line():
    with fg.Graph() as g:
        x = fg.placeholder("x", shape=(3,))
        _, logged = _per_example(x)
        start = len(g)
        xs = fg.placeholder("xs", shape=(4, 3))
        fg.vectorize(logged, {x: xs})
        ops = {g.node(i).op.name: g.node(i).where for i in range(start, len(g))
               if g.node(i).op is not None}
    assert ops["log"] == f"{HERE}:{LOG_LINE}"
    assert ops["mul"] == ops["sub"] == f"{HERE}:{LOG_LINE - 1}"


def test_the_audit_of_a_vectorized_function_names_the_ops_line():
    with fg.Graph():
        x = fg.placeholder("x", shape=())
        small = fg.exp(x) - 1.0                      # cancels near 0: loses digits
        xs = fg.placeholder("xs", shape=(2,))
        aud = fg.precision_audit(fg.vectorize(small, {x: xs}), {xs: np.array([1e-6, 2e-6])})
    line = inspect.currentframe().f_lineno - 3
    assert aud.worst.op.name == "sub"
    assert aud.worst.where == f"{HERE}:{line}"
    assert f"at {HERE}:{line}" in aud.table()
