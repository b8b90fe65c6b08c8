"""The core API as a new user and a power user meet it (the qa-api probe): feeds and
variable values that must never be silently another value, ``prog.values()`` on any
program, and errors that name the user's line."""
import numpy as np
import pytest

import flowgrad as fg

EXECUTORS = [True, False]   # generated code, the reference interpreter


# -- masked arrays: numpy's conversion drops the mask, so they are refused -----------

@pytest.mark.parametrize("codegen", EXECUTORS)
def test_a_masked_feed_is_refused_not_read_without_its_mask(codegen):
    m = np.ma.masked_array([[1.0, 2.0], [3.0, 4.0]], mask=[[0, 1], [0, 0]])
    with fg.Graph():
        x = fg.placeholder("x", (None, 2))
        prog = fg.compile(fg.sum(x, axis=1), codegen=codegen)
        with pytest.raises(fg.FeedError, match=r"'x' was given a numpy masked array.*filled"):
            prog(x=m)
        with pytest.raises(fg.FeedError, match="masked array"):   # by node, no mask set
            prog({x: np.ma.masked_array([[1.0, 2.0]])})
        # what the message says to do gives numpy's masked sum (the masked 2 as 0)
        assert np.array_equal(prog(x=m.filled(0.0)), m.sum(axis=1).filled(np.nan))
        assert np.array_equal(prog(x=m.filled(0.0)), [1.0, 7.0])


def test_a_masked_variable_value_is_refused_and_the_old_value_kept():
    with fg.Graph():
        w = fg.variable(np.array([1.0, 2.0, 3.0]), name="w")
        with pytest.raises(fg.FeedError, match="variable 'w' was given a numpy masked"):
            w.value = np.ma.masked_array([5.0, 6.0, 7.0], mask=[0, 1, 0])
        assert np.array_equal(w.value, [1.0, 2.0, 3.0])
        with pytest.raises(fg.UsageError, match="masked array"):
            fg.variable(np.ma.masked_array([1.0, 2.0], mask=[1, 0]))
        with pytest.raises(fg.UsageError, match="masked array"):
            fg.constant(np.ma.masked_array([1.0, 2.0], mask=[1, 0]))


# -- a variable's value is its own storage -------------------------------------------

def test_assigning_a_variable_copies_the_callers_array():
    with fg.Graph():
        w = fg.variable(np.zeros(3), name="w")
        a = np.array([5.0, 6.0, 7.0])
        w.value = a
        a[0] = 99.0                                  # the caller's array, changed after
        assert np.array_equal(w.value, [5.0, 6.0, 7.0])
        assert fg.run(fg.sum(w)) == 18.0
        big = np.arange(10.0)
        w.value = big[2:5]                           # a view of a larger array
        big[:] = -1.0
        assert np.array_equal(w.value, [2.0, 3.0, 4.0])
        w.value = [1, 2, 3]                          # a list is converted, as before
        assert w.value.dtype == np.float64 and np.array_equal(w.value, [1.0, 2.0, 3.0])


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")   # np.matrix, on purpose
def test_a_variable_holds_plain_arrays_whatever_numpy_type_is_assigned():
    with fg.Graph():
        v = fg.variable(1.0, name="v")
        v.value = np.float64(2.5)                    # a numpy scalar: a 0-d array, as made
        assert type(v.value) is np.ndarray and v.value.shape == () and v.value == 2.5
        v.value = np.float32(0.5)
        assert type(v.value) is np.ndarray and v.value.dtype == np.float64
        W = fg.variable(np.eye(2), name="W")
        W.value = np.matrix([[1.0, 2.0], [3.0, 4.0]])   # matrix: `*` is a matrix product
        assert type(W.value) is np.ndarray
        assert np.array_equal(W.value * W.value, [[1.0, 4.0], [9.0, 16.0]])


def test_assigning_a_non_number_says_so_not_a_shape():
    with fg.Graph():
        w = fg.variable(np.zeros(3), name="w")
        for bad in (None, "abc"):
            with pytest.raises(fg.FeedError, match="holds numbers of dtype float64"):
                w.value = bad
        assert np.array_equal(w.value, np.zeros(3))


# -- prog.values() -----------------------------------------------------------------

@pytest.mark.parametrize("codegen", EXECUTORS)
def test_values_of_a_program_without_keep_all_are_every_value(codegen):
    X = np.array([0.3, -1.2, 2.0])
    with fg.Graph():
        x = fg.placeholder("x", (3,))
        h = fg.sin(x) * 2.0
        e = fg.exp(h)
        y = fg.sum(e)
        prog = fg.compile(y, codegen=codegen)
        for _ in range(2):                            # the twin is made once, reused
            vals = prog.values(x=X)
            assert np.array_equal(vals[x.id], X)
            assert np.allclose(vals[h.id], 2.0 * np.sin(X), rtol=1e-15, atol=0)
            assert np.allclose(vals[e.id], np.exp(2.0 * np.sin(X)), rtol=1e-15, atol=0)
            assert np.isclose(vals[y.id], np.exp(2.0 * np.sin(X)).sum(), rtol=1e-15)
            assert all(v is not None for v in vals.values())


# -- every mistake at the API names the user's line ----------------------------------

def _ends_at_this_file(err):
    last = str(err).splitlines()[-1]
    assert last.startswith("  at ") and last.rsplit(":", 1)[0].endswith("test_qa_api.py"), \
        str(err)


@pytest.mark.parametrize("codegen", EXECUTORS)
def test_feed_mistakes_end_with_the_callers_line(codegen):
    with fg.Graph():
        x = fg.placeholder("x", (None, 3))
        y = fg.placeholder("y", (None,))
        i = fg.placeholder("i", (), dtype="int32")
        prog = fg.compile([fg.sum(x, axis=1) * y, i + 1], codegen=codegen)
        ok = dict(x=np.ones((2, 3)), y=np.ones(2), i=1)
        for bad, kind in [(dict(ok, y=np.ones(5)), "run-time lengths disagree"),
                          ({k: v for k, v in ok.items() if k != "y"}, "missing feed"),
                          (dict(ok, q=1.0), "unknown feed 'q'"),
                          (dict(ok, x=np.ones((2, 4))), "expects shape"),
                          (dict(ok, x=np.ones((2, 3), complex)), "expects dtype"),
                          (dict(ok, i=2**31), "would wrap around"),   # the first bad int
                          (dict(ok, x=[[1.0, 2.0, 3.0], [1.0]]), "not an array")]:
            with pytest.raises(fg.FeedError, match=kind) as e:
                prog(**bad)
            _ends_at_this_file(e.value)
        assert prog(**dict(ok, i=2**31 - 2))[1] == 2**31 - 1   # the last good one


def test_building_and_assigning_mistakes_are_typed_and_end_with_the_callers_line():
    with fg.Graph():
        x = fg.placeholder("x", (3,))
        w = fg.variable(np.zeros(3), name="w")
        mistakes = [
            (lambda: fg.placeholder("x", (2,)), fg.GraphError, ValueError),
            (lambda: fg.placeholder("", (2,)), fg.ArgumentError, ValueError),
            (lambda: fg.placeholder("q", (-1,)), fg.ShapeError, ValueError),
            (lambda: fg.placeholder("q", (), dtype="f33"), fg.UsageError, TypeError),
            (lambda: fg.variable("abc"), fg.UsageError, TypeError),
            (lambda: setattr(w, "name", "x"), fg.GraphError, ValueError),
            (lambda: setattr(w, "name", ""), fg.ArgumentError, ValueError),
            (lambda: setattr(w, "value", np.zeros(4)), fg.FeedError, ValueError),
            (lambda: fg.name_scope(3), fg.UsageError, TypeError),
            (lambda: fg.name_scope("a/b"), fg.ArgumentError, ValueError),
            (lambda: bool(x), fg.UsageError, TypeError),
            (lambda: float(x), fg.UsageError, TypeError),
            (lambda: fg.compile([]), fg.UsageError, TypeError),
        ]
        for make, cls, builtin in mistakes:
            with pytest.raises(cls) as e:
                make()
            assert isinstance(e.value, builtin)
            _ends_at_this_file(e.value)
        assert w.name == "w" and np.array_equal(w.value, np.zeros(3))
