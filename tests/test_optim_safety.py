"""Optimizers off the happy path: a program that is not [loss, *gradients], settings out of
range, a schedule gone NaN, steps from two threads, a step interrupted half-way, dask."""
import math
import sys
import threading

import numpy as np
import pytest

import flowgrad as fg


def two_vars():
    """Two variables of one shape, so gradients in the wrong order still fit by shape."""
    w = fg.variable([1.0, 2.0], name="w")
    b = fg.variable([-1.0, 3.0], name="b")
    loss = fg.l2(w) + 3.0 * fg.sum(b)          # ∂/∂w = w, ∂/∂b = 3
    return w, b, loss


# -- binding a program: it must be [loss, *grad(loss, variables)] -------------------------
def test_gradients_in_another_order_are_refused_before_anything_runs():
    w, b, loss = two_vars()
    swapped = fg.compile([loss, *fg.grad(loss, [b, w])])    # same shapes: main applied them
    opt = fg.optim.SGD([w, b], lr=0.1)
    with pytest.raises(fg.OptimizerError, match=r"output 1 .* not the gradient of the loss "
                                                r".* w\.r\.t\. variable 'w'"):
        opt.step(swapped)
    assert w.value.tolist() == [1.0, 2.0] and b.value.tolist() == [-1.0, 3.0]
    assert opt.iterations == 0
    opt.step(fg.compile([loss, *fg.grad(loss, [w, b])]))
    np.testing.assert_allclose(w.value, [0.9, 1.8], rtol=0, atol=1e-15)
    np.testing.assert_allclose(b.value, [-1.3, 2.7], rtol=0, atol=1e-15)


def test_a_program_of_another_graph_is_a_graph_error():
    with fg.Graph():
        w, b, loss = two_vars()
        opt = fg.optim.SGD([w, b], lr=0.1)
    with fg.Graph():                              # the same model built again elsewhere
        w2, b2, loss2 = two_vars()
        other = fg.compile([loss2, *fg.grad(loss2, [w2, b2])])
    with pytest.raises(fg.GraphError, match="belongs to"):
        opt.step(other)
    assert w.value.tolist() == [1.0, 2.0] and w2.value.tolist() == [1.0, 2.0]


def test_gradients_of_another_loss_or_by_hand_are_refused():
    w, b, loss = two_vars()
    other = fg.sum(w * b)
    opt = fg.optim.SGD([w, b], lr=0.1)
    with pytest.raises(fg.OptimizerError, match="not the gradient of the loss"):
        opt.step(fg.compile([loss, *fg.grad(other, [w, b])]))
    # the right values written out by hand are still not the gradient nodes
    with pytest.raises(fg.OptimizerError, match="output 2"):
        opt.step(fg.compile([loss, fg.grad(loss, w), 3.0 * fg.ones_like(b)]))
    with pytest.raises(fg.OptimizerError, match="scalar float loss"):
        opt.step(fg.compile([w, *fg.grad(loss, [w, b])]))
    with pytest.raises(fg.OptimizerError, match="3 outputs"):
        opt.step(fg.compile(loss))
    with pytest.raises(TypeError, match="fg.Program"):
        opt.step(lambda: None)
    assert w.value.tolist() == [1.0, 2.0] and opt.iterations == 0


def test_gradients_from_adjoints_and_separate_grad_calls_and_extras_are_accepted():
    w, b, loss = two_vars()
    adj = fg.adjoints(loss)
    opt = fg.optim.SGD([w, b], lr=0.5)
    opt.step(fg.compile([loss, adj[w], fg.grad(loss, b)]))
    loss_v, ten = opt.step(fg.compile([loss, *fg.grad(loss, [w, b]), 10.0 * loss]))
    assert float(ten) == pytest.approx(10 * float(loss_v))
    np.testing.assert_allclose(w.value, [0.25, 0.5], rtol=0, atol=1e-15)
    # a variable the loss does not reach gets a zero gradient, and that counts too
    c = fg.variable(4.0, name="c")
    fg.optim.SGD([w, c], lr=0.5).step(fg.compile([loss, *fg.grad(loss, [w, c])]))
    assert float(c.value) == 4.0


# -- settings ----------------------------------------------------------------------------
@pytest.mark.parametrize("make, error, match", [
    (lambda w: fg.optim.SGD(w, lr=math.inf), fg.OptimizerError, "lr must be a finite"),
    (lambda w: fg.optim.SGD(w, lr=math.nan), fg.OptimizerError, "lr must be a finite"),
    (lambda w: fg.optim.SGD(w, lr=0.0), fg.OptimizerError, r"lr .* \(0.0, inf\)"),
    (lambda w: fg.optim.SGD(w, lr=-0.1), fg.OptimizerError, "lr"),
    (lambda w: fg.optim.SGD(w, lr=True), TypeError, "lr must be a real number"),
    (lambda w: fg.optim.SGD(w, lr="0.1"), TypeError, "lr must be a real number"),
    (lambda w: fg.optim.Momentum(w, lr=0.1, momentum=1.0), fg.OptimizerError, "momentum"),
    (lambda w: fg.optim.Momentum(w, lr=0.1, momentum=-0.5), fg.OptimizerError, "momentum"),
    (lambda w: fg.optim.Momentum(w, lr=0.1, momentum=math.nan), fg.OptimizerError, "momentum"),
    (lambda w: fg.optim.Momentum(w, lr=0.1, momentum=False), TypeError, "momentum"),
    (lambda w: fg.optim.Adam(w, betas=(1.0, 0.999)), fg.OptimizerError, "beta1"),
    (lambda w: fg.optim.Adam(w, betas=(0.9, -0.1)), fg.OptimizerError, "beta2"),
    (lambda w: fg.optim.Adam(w, betas=0.9), TypeError, "pair"),
    (lambda w: fg.optim.Adam(w, betas=(0.9, 0.99, 0.9)), TypeError, "pair"),
    (lambda w: fg.optim.Adam(w, eps=-1e-8), fg.OptimizerError, "eps"),
    (lambda w: fg.optim.Adam(w, eps=math.inf), fg.OptimizerError, "eps"),
    (lambda w: fg.optim.Adam(w, lr=math.inf), fg.OptimizerError, "lr"),
])
def test_settings_out_of_range(make, error, match):
    w = fg.variable([1.0], name="w")
    with pytest.raises(error, match=match):
        make([w])


def test_setting_errors_are_flowgrad_errors_and_value_errors():
    w = fg.variable([1.0], name="w")
    with pytest.raises(fg.FlowgradError):
        fg.optim.SGD([w], lr=math.inf)
    with pytest.raises(ValueError):               # what the 1.0 API raised: still caught
        fg.optim.Adam([w], eps=-1.0)
    assert fg.optim.Adam([w], eps=0.0).eps == 0.0  # PyTorch allows eps = 0, so do we


def test_integer_variables_and_variables_of_two_graphs_are_refused():
    n = fg.variable(np.arange(3), name="n")            # int64
    with pytest.raises(TypeError, match=r"'n' has dtype int64.*float"):
        fg.optim.Adam([n])
    m = fg.variable(np.array([True, False]), name="mask")
    with pytest.raises(TypeError, match="'mask' has dtype bool"):
        fg.optim.SGD([m], lr=0.1)
    w = fg.variable(1.0, name="w")
    with fg.Graph():
        v = fg.variable(1.0, name="v")
    with pytest.raises(fg.GraphError, match="two graphs"):
        fg.optim.SGD([w, v], lr=0.1)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, -0.1, None])
def test_a_schedule_gone_bad_stops_before_touching_a_variable(bad):
    w, b, loss = two_vars()
    opt = fg.optim.Adam([w, b], lr=lambda k: 0.1 if k < 2 else bad)
    train = opt.minimize(loss)
    train()
    train()
    w_before, state_before = w.value, opt.state
    with pytest.raises(fg.OptimizerError, match=r"schedule .* returned .* at iteration 2"):
        train()
    assert w.value is w_before and opt.state is state_before and opt.iterations == 2
    # a schedule that decays to exactly 0 is fine (cosine_decay ends there)
    fg.optim.SGD([w], lr=fg.optim.cosine_decay(0.1, steps=1)).minimize(fg.l2(w))()


# -- threads -----------------------------------------------------------------------------
def test_two_threads_stepping_one_optimizer_lose_no_update():
    """On a linear loss every SGD step moves w by exactly −lr·a, so after 2N steps from
    two threads w must have moved 2N steps — the 1.0 optimizer lost about a fifth."""
    n = 1500
    a = np.array([1.0, -2.0])
    w = fg.variable(np.zeros(2), name="w")
    loss = fg.sum(w * a)
    opt = fg.optim.SGD([w], lr=0.5)
    train = opt.minimize(loss)
    start = threading.Barrier(2)

    def work():
        start.wait()
        for _ in range(n):
            train()

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)                  # switch threads as often as possible
    try:
        threads = [threading.Thread(target=work) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert opt.iterations == 2 * n
    assert w.value.tolist() == (-0.5 * 2 * n * a).tolist()    # exact: halves and integers


# -- a step interrupted half-way changes nothing -------------------------------------------------
@pytest.mark.parametrize("cls, kwargs", [(fg.optim.Adam, {"lr": 0.1}),
                                         (fg.optim.Momentum, {"lr": 0.1, "momentum": 0.9})])
@pytest.mark.parametrize("exc", [KeyboardInterrupt, MemoryError])
def test_an_exception_half_way_through_a_step_changes_nothing(monkeypatch, cls, kwargs, exc):
    w, b, loss = two_vars()
    c = fg.variable(0.5, name="c")
    loss = loss + c * c
    opt = cls([w, b, c], **kwargs)
    train = opt.minimize(loss)
    train()
    before = ([v.value.copy() for v in (w, b, c)],
              [{k: np.array(a, copy=True) for k, a in st.items()} for st in opt.state])
    calls = []
    original = cls._update

    def fail_on_second(self, *args):
        calls.append(1)
        if len(calls) == 2:                      # the first variable is already done
            raise exc()
        return original(self, *args)

    monkeypatch.setattr(cls, "_update", fail_on_second)
    with pytest.raises(exc):
        train()
    assert len(calls) == 2 and opt.iterations == 1
    for v, old in zip((w, b, c), before[0]):
        np.testing.assert_array_equal(v.value, old)
    for st, old in zip(opt.state, before[1]):
        assert st.keys() == old.keys()
        for k in st:
            np.testing.assert_array_equal(st[k], old[k])
    # and the optimizer carries on as if the failed step never happened
    monkeypatch.setattr(cls, "_update", original)
    train()
    with fg.Graph():
        w2, b2, loss2 = two_vars()
        c2 = fg.variable(0.5, name="c")
        ref = cls([w2, b2, c2], **kwargs)
        train2 = ref.minimize(loss2 + c2 * c2)
        train2()
        train2()
    np.testing.assert_array_equal(w.value, w2.value)
    np.testing.assert_array_equal(c.value, c2.value)


# -- dask: variables and state are numpy after every step -------------------------------------
DASK_OPTIMIZERS = [
    lambda v: fg.optim.Adam(v, lr=0.1),
    lambda v: fg.optim.AdamW(v, lr=0.1, global_clipnorm=0.2, check_finite=True),
    lambda v: fg.optim.RMSProp(v, lr=0.05, centered=True, clipnorm=0.3, weight_decay=0.1),
]


@pytest.mark.parametrize("make", DASK_OPTIMIZERS)
@pytest.mark.parametrize("lazy", [False, True])
def test_dask_steps_leave_variables_and_state_computed(lazy, make):
    from flowgrad.backends.dask_backend import DaskBackend
    x = fg.placeholder("x", shape=(None, 2))
    w = fg.variable(np.array([0.5, -0.5]), name="w")
    s = fg.variable(0.0, name="s")
    loss = fg.mean((x @ w + s - 1.0) ** 2)
    opt = make([w, s])
    train = opt.minimize(loss, backend=DaskBackend(chunks=3, lazy=lazy))
    X = np.arange(20.0).reshape(10, 2) / 10
    for _ in range(3):
        train(x=X)
        for v in (w.value, s.value, *opt.state[0].values(), *opt.state[1].values()):
            assert type(v) is np.ndarray
        assert w.value.shape == (2,) and s.value.shape == ()
    with fg.Graph():
        x2 = fg.placeholder("x", shape=(None, 2))
        w2 = fg.variable(np.array([0.5, -0.5]), name="w")
        s2 = fg.variable(0.0, name="s")
        train2 = make([w2, s2]).minimize(fg.mean((x2 @ w2 + s2 - 1.0) ** 2))
        for _ in range(3):
            train2(x=X)
    np.testing.assert_allclose(w.value, w2.value, rtol=1e-12)
    np.testing.assert_allclose(s.value, s2.value, rtol=1e-12)
