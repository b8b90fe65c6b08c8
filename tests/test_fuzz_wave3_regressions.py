"""Regressions found by the wave-3 differential fuzz (tests/test_fuzz_wave3.py): each
pins one discrepancy between executors, against numpy's own answer."""
import numpy as np
import pytest

import flowgrad as fg


@pytest.mark.parametrize("codegen", [False, True])
@pytest.mark.parametrize("fed", [0.0, 2.5, np.float64(0.0), np.array(1.0)])
def test_a_float_fed_to_a_0d_bool_placeholder_is_refused_on_the_scalar_path(codegen, fed):
    """The scalar path's fast binder took any float for any 0-d placeholder, so a bool
    placeholder fed 0.0 or 2.5 ran as False/True where the interpreter raised FeedError
    (numpy's same_kind rule refuses float -> bool)."""
    assert not np.can_cast(np.asarray(fed).dtype, np.bool_, "same_kind")
    with fg.Graph():
        flag = fg.placeholder("flag", shape=(), dtype="bool")
        prog = fg.compile(fg.where(flag, 1.0, 2.0), codegen=codegen)
        for _ in range(3):           # the scalar tier's warm-up call and the compiled code
            with pytest.raises(fg.FeedError, match="bool"):
                prog(flag=fed)
            with pytest.raises(fg.FeedError, match="bool"):
                prog({flag: fed})
        for ok in (True, np.False_, np.array(True)):
            assert prog(flag=ok) == np.where(ok, 1.0, 2.0)
