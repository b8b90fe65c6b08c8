"""The public contract of shared/design/API.md, section by section, as a user writes it."""
import numpy as np
import pytest

import flowgrad as fg


def test_sections_1_to_4_define_differentiate_run_train(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 3))
    T = (X @ np.array([1.0, -2.0, 0.5]) > 0).astype(float)
    with fg.Graph() as g:
        x = fg.placeholder("x", shape=(None, 3))
        t = fg.placeholder("t", shape=(None,), dtype="float64")
        w = fg.variable(np.zeros(3), name="w")
        b = fg.variable(0.0, name="b")
        A = fg.constant(np.eye(3))
        z = fg.linear(x, w, b)
        y = fg.sigmoid(z)
        loss = fg.mse(y, t) + 0.1 * fg.l2(w)
        assert all(n.id in g.nx for n in (x, t, w, b, A, z, y, loss))
        assert (x @ A).shape == (None, 3) and x[:, 1:].shape == (None, 2) and x.T.shape == (3, None)

        gw, gb = fg.grad(loss, [w, b])
        gx = fg.grad(loss, x)
        adj = fg.adjoints(loss)
        u = fg.vjp(y, x, fg.ones_like(y))
        v = fg.jvp(y, x, fg.ones_like(x))
        hv = fg.hvp(loss, w, np.ones(3))
        J = fg.jacobian(y, x)                    # y.shape + x.shape = (None, None, 3)
        Jw = fg.jacobian(y, w)
        H = fg.hessian(loss, w)
        assert J.shape == (None, None, 3) and Jw.shape == (None, 3) and H.shape == (3, 3)
        d = fg.tanh(x)
        for _ in range(4):
            d = fg.grad(fg.sum(d), x)

        prog = fg.compile([loss, gw, gb], backend="numpy")
        loss_v, gw_v, gb_v = prog(x=X, t=T)
        loss_2, gw_2, gb_2 = prog({x: X, t: T})
        assert loss_v == loss_2 == fg.run(loss, {x: X, t: T})
        tr = prog.trace(x=X, t=T)
        np.testing.assert_allclose(tr.adjoint(w), gw_v)
        assert tr[z].shape == (40,)
        np.testing.assert_allclose(fg.to_numpy(tr.adjoint(x)), fg.run(gx, {x: X, t: T}))
        np.testing.assert_allclose(fg.run(adj[w], {x: X, t: T}), gw_v)
        np.testing.assert_allclose(fg.run(hv, {x: X, t: T}),
                                   fg.run(H, {x: X, t: T}) @ np.ones(3), rtol=1e-10)
        th = np.tanh(X)
        d4 = 16 * th - 40 * th ** 3 + 24 * th ** 5  # tanh⁽⁴⁾ = (16t − 24t³)(1 − t²)
        np.testing.assert_allclose(fg.run(d, {x: X}), d4, rtol=1e-9, atol=1e-12)
        assert fg.run(u, {x: X}).shape == (40, 3) and fg.run(v, {x: X}).shape == (40,)
        s = 1 / (1 + np.exp(-(X @ w.value + b.value)))
        np.testing.assert_allclose(fg.run(Jw, {x: X}), (s * (1 - s))[:, None] * X, rtol=1e-12)
        W1 = np.array([0.3, -0.7, 1.1])                      # w fed: J must not be trivial
        s1 = 1 / (1 + np.exp(-(X @ W1 + b.value)))
        Jv = fg.run(J, {x: X, w: W1})
        np.testing.assert_allclose(np.einsum("iik->ik", Jv), (s1 * (1 - s1))[:, None] * W1,
                                   rtol=1e-12)
        assert Jv.shape == (40, 40, 3) and np.count_nonzero(Jv) == np.count_nonzero(
            np.einsum("iik->ik", Jv))                                 # row i depends on x[i] only
        with pytest.raises(fg.FeedError, match="'x'"):
            prog(t=T)

        opt = fg.optim.SGD([w, b], lr=0.5)
        prog = fg.compile([loss, *fg.grad(loss, [w, b])])
        first = None
        for _ in fg.progress(range(50)):
            loss_v = opt.step(prog, x=X, t=T)
            first = loss_v if first is None else first
        assert loss_v < first
        train = fg.optim.Adam([w, b], lr=0.05).minimize(loss)
        assert train(x=X, t=T) <= loss_v + 1e-12
        assert np.array_equal(fg.run(w, {}), w.value)


def test_section_5_and_6_see_and_check(tmp_path):
    x = fg.placeholder("x", shape=(None, 2))
    w = fg.variable(np.array([0.3, -0.2]), name="w")
    loss = fg.mean(fg.tanh(x @ w) ** 2)
    X = np.array([[1.0, 2.0], [0.5, -1.0]])
    tr = fg.compile(loss).trace(x=X)
    dot = fg.viz.draw(tr)
    assert "digraph" in dot.source and "w" in dot.source
    fg.viz.walkthrough(tr, str(tmp_path / "backprop.html"))
    assert (tmp_path / "backprop.html").stat().st_size > 1000
    fg.check_grads(loss, [w], feed={x: X}, modes=("rev", "fwd"), order=2)
    with pytest.raises(fg.GradientCheckError):
        fg.check_grads(_wrong(loss), [w], feed={x: X})


def _wrong(node):
    """A node whose reverse rule is off by 1 %: check_grads must catch it."""
    from flowgrad.ops import Op
    bad = Op("scaled_identity_for_contract_test", lambda xp, v: v,
             lambda v: (v.shape, v.dtype), vjp=(lambda g, ans, v: 1.01 * g,),
             jvp=(lambda t, ans, v: t,))
    return bad(node)


@pytest.mark.parametrize("name", ["optim", "metrics", "random", "io", "backends",
                                  "worked_example", "nn", "viz", "engine"])
def test_public_modules_declare_all_and_dir_shows_no_imports(name):
    # issue 19: dir(fg.optim) listed np, math and threading
    import types
    mod = getattr(fg, name)
    assert hasattr(mod, "__all__"), name
    shown = [n for n in dir(mod) if not n.startswith("_")]
    assert not [n for n in shown if isinstance(getattr(mod, n), types.ModuleType)
                and getattr(mod, n).__name__.split(".")[0] != "flowgrad"], shown
    for n in mod.__all__:
        getattr(mod, n)
