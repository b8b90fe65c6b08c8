"""A loop body or branch that returns a Python number (``0.5``, ``7``): its result is a
numpy scalar of the declared dtype on every executor, and a number stands in for a carry
(or the other branch's output) of any dtype that numpy's rule for a Python scalar keeps
(as ``c * 0.0 + 0.5`` keeps a float32 carry float32, and as JAX's loops take a weakly
typed result); a number that dtype cannot hold is refused at its first bad value."""
import numpy as np
import pytest

import flowgrad as fg

EXECUTORS = [{}, {"codegen": False}, {"verify": True}, {"check_numerics": True},
             {"backend": "dask"}]


def _run(out, kw, **feed):
    r = fg.compile(out, **kw)(**feed)
    return r.compute() if hasattr(r, "compute") else r


@pytest.mark.parametrize("kw", EXECUTORS)
def test_a_number_returned_by_a_body_is_a_numpy_scalar_of_its_dtype(kw):
    # these handed out a Python float / int (a body's constant, as its program holds it)
    with fg.Graph():
        p = fg.placeholder("p", (), dtype="bool")
        cases = [
            (fg.cond(p, lambda: 1.0, lambda: 2.0), np.float64(1.0)),
            (fg.scan(lambda c, x: (0.5, None), fg.constant(0.0), length=2)[0],
             np.float64(0.5)),
            (fg.while_loop(lambda c: c < 1.0, lambda c: 3.0, fg.constant(0.0)),
             np.float64(3.0)),
            (fg.fori_loop(0, 2, lambda i, c: 7, fg.constant(np.array(0))), np.int64(7)),
        ]
        for out, want in cases:
            got = _run(out, kw, p=np.bool_(True))
            assert type(got) is type(want) and got == want, (out, got)


@pytest.mark.parametrize("kw", EXECUTORS)
def test_a_number_returned_as_a_carry_takes_the_carry_dtype(kw):
    # these were ShapeErrors: "enters ... float32 but leaves it ... float64"
    with fg.Graph():
        f32 = fg.constant(np.zeros((), np.float32))
        c, ys = fg.scan(lambda c, x: (0.1, c * 2.0), f32, length=3)
        w = fg.while_loop(lambda c: c[1] < 3, lambda c: (1.5, c[1] + 1),
                          (f32, fg.constant(np.array(0, np.int32))))
        i16 = fg.fori_loop(0, 3, lambda i, c: 2, fg.constant(np.zeros((), np.int16)))
        got = [_run(n, kw) for n in (c, ys, w[0], w[1], i16)]
    want = [np.float32(0.1), np.array([0, 0.2, 0.2], np.float32), np.float32(1.5),
            np.int32(3), np.int16(2)]
    for g, v in zip(got, want):
        assert np.asarray(g).dtype == np.asarray(v).dtype
        np.testing.assert_array_equal(g, v)


@pytest.mark.parametrize("kw", EXECUTORS)
def test_a_number_in_one_branch_takes_the_other_branch_dtype(kw):
    with fg.Graph():
        p = fg.placeholder("p", (), dtype="bool")
        x = fg.placeholder("x", (), dtype="float32")
        a = fg.variable(np.array(2.0, np.float32))
        y = fg.cond(p, lambda x: x * a, lambda x: 1.0, x)
        g = fg.grad(y, a)
        prog = fg.compile([y, g], **kw)
        for pv, want in ((True, (6.0, 3.0)), (False, (1.0, 0.0))):
            got = prog(p=np.bool_(pv), x=np.float32(3))
            got = [v.compute() if hasattr(v, "compute") else v for v in got]
            assert [np.asarray(v).dtype for v in got] == [np.float32, np.float32]
            assert [float(v) for v in got] == list(want)


@pytest.mark.parametrize("init, number", [
    (np.zeros((), np.int64), 0.5),          # a float into an int carry
    (np.array(False), 1),                   # an int into a bool one
    (np.zeros((), np.int8), 128),           # the first int int8 cannot hold
    (np.zeros((), np.float16), 65520.0),    # the first float float16 rounds to inf
    (np.zeros(3, np.float32), 0.5),         # a 0-d number for a carry of shape (3,)
])
def test_a_number_the_carry_cannot_hold_is_refused(init, number):
    with fg.Graph():
        with pytest.raises(fg.ShapeError, match="carry entry 0 enters the body"):
            fg.scan(lambda c, x: (number, None), fg.constant(init), length=2)


@pytest.mark.parametrize("init, number", [
    (np.zeros((), np.int8), 127), (np.zeros((), np.float16), 65504.0),
    (np.array(False), True), (np.zeros((), np.float32), float("nan")),
])
def test_a_number_at_the_edge_of_the_carry_dtype_is_taken(init, number):
    with fg.Graph():
        c, _ = fg.scan(lambda c, x: (number, None), fg.constant(init), length=2)
        got = fg.run(c)
    want = np.asarray(number, init.dtype)
    assert got.dtype == init.dtype
    np.testing.assert_array_equal(got, want)
