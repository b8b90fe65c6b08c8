"""Regressions found by the wave-3 differential fuzz (tests/test_fuzz_wave3.py): each
pins one discrepancy between executors, against numpy's own answer."""
import numpy as np
import pytest

import flowgrad as fg
from flowgrad.engine import executors


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


_VIEWING = {     # numpy returns a view of the operand for each of these
    "einsum ij->ji": (lambda x: fg.einsum("ij->ji", x), lambda a: a.T, "float64"),
    "einsum ij->ij": (lambda x: fg.einsum("ij->ij", x), lambda a: a, "float64"),
    "real": (fg.real, np.real, "complex128"),
    "imag": (fg.imag, np.imag, "complex128"),
}


@pytest.mark.parametrize("codegen", [False, True])
@pytest.mark.parametrize("name", sorted(_VIEWING))
def test_outputs_that_numpy_makes_views_never_alias_a_feed_or_a_variable(name, codegen):
    """einsum of one operand that only permutes, and real/imag of a complex array, are
    views in numpy: the program handed the caller's own array (or a variable's storage)
    back as the output, so writing to the output changed the feed or the variable."""
    make, ref, dtype = _VIEWING[name]
    value = (np.arange(6.0) - 2.5 + 1j * np.arange(6.0)[::-1]).reshape(2, 3) \
        if dtype == "complex128" else np.arange(6.0).reshape(2, 3) - 2.5
    assert np.shares_memory(ref(value), value)       # numpy's kernel does view it
    with fg.Graph():
        x = fg.placeholder("x", shape=(2, 3), dtype=dtype)
        w = fg.variable(value.copy(), name="w")
        prog = fg.compile([make(x), make(w)], codegen=codegen)
        for _ in range(3):
            fed = value.copy()
            got_x, got_w = prog(x=fed)
            np.testing.assert_array_equal(got_x, ref(value))
            np.testing.assert_array_equal(got_w, ref(value))
            assert not np.shares_memory(got_x, fed)
            got_x[...] = 99
            got_w[...] = 99
            np.testing.assert_array_equal(fed, value)            # the caller's array
            np.testing.assert_array_equal(w.value, value)        # the variable's value


_RESHAPED = {   # a 0-d graph on the scalar path whose output is a reshape of a computed value
    "reshape(x*2)": (lambda x: fg.reshape(x * 2.0, ()), lambda a: np.reshape(a * 2.0, ())),
    "reshape(sg(x*x))": (lambda x: fg.reshape(fg.stop_gradient(x * x), ()),
                         lambda a: np.reshape(a * a, ())),
    "reshape(x+sg-sg)": (lambda x: fg.reshape(x + fg.stop_gradient(x) - fg.stop_gradient(x),
                                              ()), lambda a: np.reshape(a + a - a, ())),
    "reshape(where)": (lambda x: fg.reshape(fg.where(x > 0, x, 0.5), ()),
                       lambda a: np.reshape(np.where(a > 0, a, 0.5), ())),
    "reshape(x)": (lambda x: fg.reshape(x, ()), lambda a: np.reshape(a, ())),
}


@pytest.mark.parametrize("name", sorted(_RESHAPED))
def test_a_reshaped_0d_output_has_numpys_type_on_the_scalar_path(name):
    """numpy's reshape keeps its input's type: a product's numpy scalar stays a numpy
    scalar, a 0-d array (a feed, a where) an array. The scalar path made every reshape's
    output a 0-d array, where the interpreter handed back np.float64."""
    make, ref = _RESHAPED[name]
    with fg.Graph():
        x = fg.placeholder("x", shape=())
        y = make(x)
        progs = [fg.compile(y, codegen=False), fg.compile(y)]
        assert progs[1].executor is executors.SCALAR     # the path this pins
        for fed in (np.array(0.75), 0.75, -0.5, np.float64(0.25)):
            want = ref(np.asarray(fed, dtype=np.float64))
            for prog in progs:
                for _ in range(3):   # the scalar tier's loop, then the compiled function
                    got = prog(x=fed)
                    assert type(got) is type(want), (type(got), type(want))
                    np.testing.assert_array_equal(got, want)
