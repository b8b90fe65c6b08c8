"""Issue 10 §1: silent wrong results at the feed and build boundary (each failed on main)."""
import numpy as np
import pytest

import flowgrad as fg


# -- run-time lengths as symbols ----------------------------------------------------------

def test_none_lengths_that_must_agree_are_checked_before_computing():
    with fg.Graph():
        a = fg.placeholder("a", shape=(None,))
        b = fg.placeholder("b", shape=(None,))
        s = fg.sum(a * b)
        prog = fg.compile([s, *fg.grad(s, [a, b])])
        with pytest.raises(fg.FeedError, match=r"'b' has length 5 .* 'a' has length 1"):
            prog({a: np.array([2.0]), b: np.arange(5.0)})
        # equal lengths still run, with the right numbers
        got = prog({a: np.array([2.0, 3.0]), b: np.array([4.0, 5.0])})
        assert got[0] == 23.0
        np.testing.assert_array_equal(got[1], [4.0, 5.0])
        np.testing.assert_array_equal(got[2], [2.0, 3.0])


def test_a_none_length_meeting_a_known_length_is_pinned_to_it():
    with fg.Graph():
        a = fg.placeholder("a", shape=(None,))
        c = fg.constant(np.arange(3.0), name="c")
        prog = fg.compile(a + c)
        with pytest.raises(fg.FeedError, match=r"'a' has length 1 .* 'c' has length 3"):
            prog(a=np.ones(1))   # numpy would broadcast this 1 silently
        np.testing.assert_array_equal(prog(a=np.ones(3)), [1.0, 2.0, 3.0])


@pytest.mark.parametrize("build", [
    lambda a, b: fg.matmul(a, b),                                  # (n, k) @ (k, m)
    lambda a, b: fg.concatenate([a, fg.transpose(b)], axis=0),      # columns agree
    lambda a, b: fg.stack([a, fg.transpose(b)]),                    # shapes agree
    lambda a, b: fg.sum(a, axis=0, keepdims=True) * fg.transpose(b),  # keepdims keeps the axis
    lambda a, b: fg.where(fg.transpose(b) > 0, a, 0.0),             # elementwise
])
def test_lengths_are_unified_through_matmul_concat_stack_reductions_where(build):
    with fg.Graph():
        a = fg.placeholder("a", shape=(None, None))
        b = fg.placeholder("b", shape=(None, None))
        prog = fg.compile(fg.sum(build(a, b)))
        prog(a=np.ones((2, 3)), b=np.ones((3, 2)))   # consistent: runs
        with pytest.raises(fg.FeedError, match="run-time lengths disagree"):
            prog(a=np.ones((2, 3)), b=np.ones((4, 2)))


@pytest.mark.parametrize("build, good, bad", [
    (lambda a, b: fg.mse(a, b), ((3,), (3,)), ((3,), (4,))),
    (lambda a, b: fg.bce_with_logits(a, b), ((3,), (3,)), ((3,), (4,))),
    (lambda a, b: fg.sum(fg.linear(a, b)), ((3, 2), (2,)), ((3, 2), (4,))),
    (lambda a, b: fg.softmax_cross_entropy(a, b), ((3, 2), (3, 2)), ((3, 2), (4, 2))),
    (lambda a, b: fg.mse(a, b, reduction="none") * fg.sum(a), ((3,), (3,)), ((3,), (2,))),
])
def test_model_ops_tie_their_run_time_lengths(build, good, bad):
    # the model ops are single nodes: each says which None axes of its operands agree
    with fg.Graph():
        a = fg.placeholder("a", shape=(None,) * len(good[0]))
        b = fg.placeholder("b", shape=(None,) * len(good[1]))
        prog = fg.compile(build(a, b))
        prog(a=np.ones(good[0]), b=np.ones(good[1]))
        with pytest.raises(fg.FeedError, match="run-time lengths disagree"):
            prog(a=np.ones(bad[0]), b=np.ones(bad[1]))


def test_class_indices_one_hot_and_random_draws_tie_their_lengths():
    with fg.Graph():
        z = fg.placeholder("z", shape=(None, 3))
        t = fg.placeholder("t", shape=(None,), dtype="int64")
        for out in (fg.softmax_cross_entropy(z, t), fg.sum(z * fg.one_hot(t, 3)),
                    fg.sum(fg.argmax(z, axis=1) * t)):
            prog = fg.compile(out)
            prog(z=np.zeros((4, 3)), t=np.zeros(4, dtype=np.int64))
            with pytest.raises(fg.FeedError, match="run-time lengths disagree"):
                prog(z=np.zeros((3, 3)), t=np.zeros(4, dtype=np.int64))
        r = fg.random.normal(None, like=z, seed=0)
        assert fg.run(r, {z: np.zeros((5, 3))}).shape == (5, 3)


def test_unrelated_none_lengths_stay_free():
    with fg.Graph():
        a = fg.placeholder("a", shape=(None,))
        b = fg.placeholder("b", shape=(None,))
        prog = fg.compile(fg.sum(a) + fg.sum(b))
        assert prog(a=np.ones(2), b=np.ones(7)) == 9.0
        assert prog.check_lengths is None   # nothing to compare per call


def test_length_checks_are_compiled_once_not_per_call():
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 3))
        t = fg.placeholder("t", shape=(None,))
        w = fg.variable(np.ones(3), name="w")
        loss = fg.mean((x @ w - t) ** 2)
        prog = fg.compile([loss, fg.grad(loss, w)])
    check = prog.check_lengths
    assert check is not None and len(check._flat) == 2
    prog(x=np.ones((4, 3)), t=np.ones(4))
    assert prog.check_lengths is check
    with pytest.raises(fg.FeedError, match=r"'t' has length 5 on axis 0, but placeholder 'x'"):
        prog(x=np.ones((4, 3)), t=np.ones(5))


# -- values that do not fit the dtype -----------------------------------------------------

def test_integer_feed_overflowing_the_placeholder_dtype():
    with fg.Graph():
        i = fg.placeholder("i", shape=(None,), dtype="int32")
        prog = fg.compile(i * 2)
        with pytest.raises(fg.FeedError, match=r"'i' has dtype int32.*1099511627776"):
            prog(i=np.array([1, 2**40]))
        with pytest.raises(fg.FeedError, match="'i'"):
            prog(i=[-2**31 - 1])
        top = fg.compile(i)(i=np.array([2**31 - 1], dtype=np.int64))  # fits: accepted
        assert top.dtype == np.int32 and top[0] == 2**31 - 1


def test_float64_out_of_float32_range():
    with fg.Graph():
        x = fg.placeholder("x", shape=(2,), dtype="float32")
        prog = fg.compile(x + 1)
        with pytest.raises(fg.FeedError, match=r"'x' has dtype float32.*1e\+300"):
            prog(x=np.array([1.0, 1e300]))
        # an inf fed on purpose stays an inf
        out = prog(x=np.array([1.0, np.inf]))
        assert out.dtype == np.float32 and out[1] == np.inf


def test_ragged_and_non_numeric_feeds():
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, None))
        prog = fg.compile(fg.sum(x))
        with pytest.raises(fg.FeedError, match="'x'"):
            prog(x=[[1.0, 2.0], [3.0]])
        with pytest.raises(fg.FeedError, match="'x'"):
            prog(x=np.array([["a", "b"]]))


def test_a_python_int_beyond_64_bits_is_named():
    """numpy keeps such an int only as an object: the refusal names the integer. The
    bounds are numpy's: −2⁶³ and 2⁶⁴ − 1 are numbers, one beyond is not."""
    with fg.Graph():
        x = fg.placeholder("x", shape=(None,))
        prog = fg.compile(x * 1.0)
        for codegen in (True, False):
            run = fg.compile(x * 1.0, codegen=codegen)
            with pytest.raises(fg.FeedError, match=r"'x'.*integer 18446744073709551616, "
                                                   r"beyond the 64 bits"):
                run(x=[1, 2**64])
            with pytest.raises(fg.FeedError, match=r"integer -9223372036854775809,"):
                run(x=[-2**63 - 1])
        np.testing.assert_array_equal(prog(x=[2**64 - 1, -2**63]),
                                      [float(2**64 - 1), float(-2**63)])
        with pytest.raises(fg.FeedError, match=r"ragged list, strings or objects"):
            prog(x=[1, "a"])


# -- outputs never alias storage ----------------------------------------------------------

def test_outputs_are_fresh_arrays():
    with fg.Graph():
        w = fg.variable(np.ones(3), name="w")
        x = fg.placeholder("x", shape=(3,))
        y = fg.exp(x)
        out = fg.compile(w)()
        out[0] = 99.0
        np.testing.assert_array_equal(w.value, np.ones(3))
        X = np.zeros(3)
        got = fg.compile(x)(x=X)
        got[1] = 5.0
        np.testing.assert_array_equal(X, np.zeros(3))
        a, b = fg.compile([y, y])(x=X)
        a[0] = -1.0
        assert b[0] == 1.0
        p, q = fg.compile([w, w])()
        p[0] = 7.0
        assert q[0] == 1.0 and w.value[0] == 1.0
        # views of a variable or a feed: w[1:], a reshape, a transpose
        m = fg.variable(np.ones((2, 3)), name="m")
        for view in (w[1:], fg.reshape(m, (3, 2)), m.T, fg.expand_dims(x, 0)):
            got = fg.compile(view)(x=X)
            got[...] = -3.0
        assert (w.value == 1.0).all() and (m.value == 1.0).all() and (X == 0.0).all()


def test_the_common_case_copies_nothing():
    with fg.Graph():
        x = fg.placeholder("x", shape=(3,))
        w = fg.variable(np.ones(3), name="w")
        loss = fg.sum(x * w)
        prog = fg.compile([loss, fg.grad(loss, w)])
    assert prog.copy_outputs == ()


def _no_two_share(outs):
    arrays = [o for o in outs if isinstance(o, np.ndarray)]
    for i in range(len(arrays)):
        for j in range(i + 1, len(arrays)):
            assert not np.shares_memory(arrays[i], arrays[j]), (i, j)


_OUTPUT_PATHS = [dict(codegen=True), dict(codegen=False), dict(verify=True),
                 dict(backend="dask")]


@pytest.mark.parametrize("kw", _OUTPUT_PATHS, ids=lambda kw: next(iter(kw.items()))[0]
                         + "=" + str(next(iter(kw.values()))))
def test_outputs_that_view_one_computed_value_own_their_storage(kw):
    """h, hᵀ, reshape(h), h[1:], squeeze(h[None]) and a chain of two views all view h's
    storage as the plan computes them: every output but one is copied, so writing to
    one output never changes another. Also for views of a gradient node."""
    if kw.get("backend") == "dask":
        pytest.importorskip("dask")
    X = np.arange(6.0).reshape(2, 3)
    with fg.Graph():
        x = fg.placeholder("x", shape=(2, 3))
        h = x * 2.0
        views = [h, fg.transpose(h), fg.reshape(h, (6,)), h[1:], h[:, 0],
                 fg.squeeze(fg.expand_dims(h, 0), 0), fg.reshape(fg.transpose(h), (6,)),
                 fg.stop_gradient(h), fg.astype(h, "float64")]
        loss = fg.sum(fg.sin(x) * x)
        gx = fg.grad(loss, x)
        grads = [gx, gx.T, gx[0], fg.reshape(fg.transpose(gx), (3, 2))]
        outs = fg.compile(views + grads, **kw)(x=X)
    _no_two_share(outs)
    want_g = np.sin(X) + X * np.cos(X)             # d/dx Σ x sin x
    np.testing.assert_allclose(outs[9], want_g, rtol=1e-15)
    np.testing.assert_array_equal(outs[2], (2 * X).ravel())
    outs[0][...] = -1.0                             # a write to h reaches no other output
    np.testing.assert_array_equal(outs[1], 2 * X.T)
    np.testing.assert_array_equal(outs[6], (2 * X).T.ravel())


def test_outputs_that_view_one_computed_value_on_the_scalar_path():
    with fg.Graph():
        x = fg.placeholder("x")
        h = fg.exp(x)
        prog = fg.compile([h, fg.reshape(h, (1,)), fg.expand_dims(h, 0), fg.grad(h, x)])
        outs = prog(x=0.5)
    _no_two_share(outs)
    np.testing.assert_allclose(outs[1], [np.exp(0.5)], rtol=1e-15)


def test_independent_outputs_of_views_copy_nothing():
    """Views of different computed values need no copy: only a shared root costs one."""
    with fg.Graph():
        x = fg.placeholder("x", shape=(2, 3))
        a, b = x * 2.0, x + 1.0
        assert fg.compile([a.T, b[1:], fg.reshape(a * b, (6,))]).copy_outputs == ()
        assert fg.compile([a, b, a.T]).copy_outputs == (2,)


# -- smaller cases ------------------------------------------------------------------------

def test_grad_with_respect_to_an_integer_node():
    with fg.Graph():
        i = fg.placeholder("i", dtype="int64")
        x = fg.placeholder("x")
        y = x * i
        with pytest.raises(fg.DifferentiationError, match="'i' of dtype int64"):
            fg.grad(y, i)
        with pytest.raises(fg.DifferentiationError, match="'i'"):
            fg.grad(y, [x, i])


def test_string_constants_and_variables_are_rejected():
    with fg.Graph():
        with pytest.raises(TypeError, match="constant"):
            fg.constant("hello")
        with pytest.raises(TypeError, match="variable"):
            fg.variable("hello")
        with pytest.raises(TypeError, match="constant"):
            fg.constant([[1.0, 2.0], [3.0]])


def test_a_second_placeholder_with_a_taken_name_is_an_error():
    with fg.Graph() as g:
        x = fg.placeholder("x", shape=(2,))
        with pytest.raises(fg.GraphError, match="'x'"):
            fg.placeholder("x", shape=(3,))
        assert g.by_name("x") is x and len(g) == 1
        # variables and op nodes keep taking the first free suffix
        v1, v2 = fg.variable(1.0, name="v"), fg.variable(2.0, name="v")
        assert (v1.name, v2.name) == ("v", "v_1")
        with fg.name_scope("layer"):
            fg.placeholder("x")      # another scope: another name
        assert g.by_name("layer/x").kind == "placeholder"


@pytest.mark.parametrize("reduce", [fg.sum, fg.mean, fg.max, fg.min, fg.logsumexp, fg.norm])
def test_axis_and_keepdims_must_have_the_right_type(reduce):
    with fg.Graph():
        x = fg.placeholder("x", shape=(2, 3))
        with pytest.raises(TypeError, match="keepdims"):
            reduce(x, axis=0, keepdims="no")
        with pytest.raises(TypeError, match="axis"):
            reduce(x, axis=0.5)
        with pytest.raises(TypeError, match="axis"):
            reduce(x, axis=True)
        assert reduce(x, axis=(0,), keepdims=np.bool_(True)).shape == (1, 3)
