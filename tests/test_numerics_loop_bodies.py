"""compile(..., check_numerics=True) checks a loop's body too, as fg.detect_anomaly()
does: each body was compiled with the defaults and ran unchecked, so a NaN made and then
masked inside a scan passed silently where the same code outside a loop raises."""
import numpy as np
import pytest

import flowgrad as fg


def _masked_log_scan(x):
    out, _ = fg.scan(lambda c, v: (c + fg.where(v > 0, fg.log(v), 0.0), None),
                     fg.constant(0.0), x)
    return out


@pytest.mark.parametrize("codegen", [True, False])
def test_check_numerics_names_the_bodys_node(codegen):
    with fg.Graph(), np.errstate(invalid="ignore"):
        x = fg.placeholder("x", shape=(3,))
        prog = fg.compile(_masked_log_scan(x), check_numerics=True, codegen=codegen)
        assert prog(x=np.array([1.0, 3.0, 2.0])) == pytest.approx(np.log(6.0), rel=1e-15)
        with pytest.raises(fg.NumericsError, match=r"iteration 1 .*'log_\d+' \(log\) "
                                                   r"produced NaN from finite inputs"):
            prog(x=np.array([1.0, -1.0, 2.0]))
        # unchecked, the same program gives the masked sum: the check is the only change
        plain = fg.compile(_masked_log_scan(x), codegen=codegen)
        assert plain(x=np.array([1.0, -1.0, 2.0])) == pytest.approx(np.log(2.0), rel=1e-15)
        assert not fg.numerics.anomaly_enabled()      # the flag is the caller's again


def _masked(x):
    return fg.where(x > 0, x, -np.inf)           # a mask: -inf where x <= 0


@pytest.mark.parametrize("codegen", [True, False])
def test_a_masks_inf_passed_into_a_body_is_no_bad_feed(codegen):
    # the body's argument placeholders were tested as fed values: a -inf the enclosing
    # run had passed on (fine there) was refused as "fed" at the body's placeholder
    X = np.array([1.0, -1.0, 2.0, 0.5])
    m = np.where(X > 0, X, -np.inf)
    with fg.Graph(), np.errstate(invalid="ignore", divide="ignore"):
        x = fg.placeholder("x", shape=(4,))
        c, ys = fg.scan(lambda c, v: (fg.maximum(c, v), fg.exp(v)), fg.constant(-1.0),
                        _masked(x))
        got_c, got_ys = fg.compile([c, ys], check_numerics=True, codegen=codegen)(x=X)
        assert got_c == np.max(m)
        np.testing.assert_array_equal(got_ys, np.exp(m))      # exp(-inf) = 0
        # a NaN the body makes from that -inf (log(-inf)) is still found, in the body
        _, bad = fg.scan(lambda c, v: (c, fg.log(v)), fg.constant(0.0), _masked(x))
        with pytest.raises(fg.NumericsError, match=r"iteration 1 .*'log_\d+' \(log\) "
                                                   r"produced NaN from inputs holding ±Inf"):
            fg.compile(bad, check_numerics=True, codegen=codegen)(x=X)
        # a NaN fed to the program is still named at its placeholder
        with pytest.raises(fg.NumericsError, match=r"placeholder 'x' was fed"):
            fg.compile(ys, check_numerics=True, codegen=codegen)(x=np.array([1, np.nan, 2, 3]))


@pytest.mark.parametrize("nested", [False, True])
def test_explain_at_the_loop_node_gives_the_bodys_trap(nested):
    # a NaN found in a body is raised again at the loop node, without a trace: its
    # message quoted the body's trap, but err.explanation was None and err.explain()
    # said "no known trap recognised"
    X = np.ones((2, 3))
    X[1, 2] = 0.0                       # log(0) = -inf in the body
    assert np.isneginf(np.log(X)).sum() == 1
    with fg.Graph(), np.errstate(divide="ignore"):
        xs = fg.placeholder("xs", shape=(2, 3))

        def row_sum(c, row):
            if nested:
                inner, _ = fg.scan(lambda h, v: (h + fg.log(v), None), fg.constant(0.0), row)
                return c + inner, None
            return c + fg.sum(fg.log(row)), None

        out, _ = fg.scan(row_sum, fg.constant(0.0), xs)
        with pytest.raises(fg.NumericsError) as info:
            fg.compile(out, check_numerics=True)(xs=X)
        err = info.value
        assert err.node.op.name == "loop"                    # raised at the outer loop
        assert "likely cause (log at 0)" in str(err)
        assert err.explanation is not None and err.explanation.name == "log at 0"
        assert err.explain().startswith("likely cause (log at 0): log of an exact 0")
