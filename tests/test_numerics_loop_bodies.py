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
