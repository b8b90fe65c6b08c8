"""fg.optim.LBFGS: one iteration per step, a strong-Wolfe line search, scipy's optimum."""
import math
import warnings

import numpy as np
import pytest

import flowgrad as fg
from flowgrad.training import lbfgs

scipy_optimize = pytest.importorskip("scipy.optimize")


def _logistic(n=200, dim=6, lam=1e-2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, dim))
    T = (X @ rng.normal(size=dim) + 0.5 * rng.normal(size=n) > 0).astype(float)

    def f(p):                                    # the same loss in numpy, for scipy
        w, b = p[:dim], p[dim]
        z = X @ w + b
        s = 1 / (1 + np.exp(-z))
        r = (s - T) / n
        return (np.mean(np.logaddexp(0, z) - T * z) + lam * 0.5 * w @ w,
                np.concatenate([X.T @ r + lam * w, [r.sum()]]))
    return X, T, f


def test_reaches_scipys_l_bfgs_b_optimum_of_a_logistic_loss():
    X, T, f = _logistic()
    ref = scipy_optimize.minimize(f, np.zeros(7), jac=True, method="L-BFGS-B",
                                  options=dict(ftol=1e-15, gtol=1e-12, maxiter=1000))
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 6))
        t = fg.placeholder("t", shape=(None,))
        w = fg.variable(np.zeros(6), name="w")
        b = fg.variable(0.0, name="b")
        loss = fg.bce_with_logits(fg.linear(x, w, b), t) + 1e-2 * fg.l2(w)
        opt = fg.optim.LBFGS([w, b], tolerance_grad=1e-10, tolerance_change=1e-14)
        train = opt.minimize(loss)
        losses = []
        while not opt.converged and opt.iterations < 60:
            losses.append(float(train(x=X, t=T)))
            assert opt.iterations == len(losses)          # one call, one iteration
        final = float(fg.run(loss, {x: X, t: T}))
    assert opt.iterations <= 2 * ref.nit + 5
    assert all(a >= b for a, b in zip(losses, losses[1:]))   # sufficient decrease
    assert final == pytest.approx(ref.fun, rel=1e-12)
    np.testing.assert_allclose(np.r_[w.value, b.value], ref.x, atol=1e-6)
    assert b.value.shape == () and b.value.dtype == np.float64


def test_rosenbrock_from_the_usual_start():
    with fg.Graph():
        p = fg.variable(np.array([-1.2, 1.0]), name="p")
        loss = (1 - p[0]) ** 2 + 100 * (p[1] - p[0] ** 2) ** 2
        opt = fg.optim.LBFGS([p], tolerance_grad=1e-12, tolerance_change=1e-20)
        train = opt.minimize(loss)
        while not opt.converged and opt.iterations < 100:
            train()
    np.testing.assert_allclose(p.value, [1.0, 1.0], atol=1e-8)
    assert opt.iterations < 60 and opt.evaluations < 2 * opt.iterations + 20


@pytest.mark.parametrize("fn", [
    lambda x: ((x - 3.0) ** 2, 2 * (x - 3.0)),
    lambda x: (0.1 * x * x - math.sin(x), 0.2 * x - math.cos(x)),
    lambda x: (x ** 4 - 5 * x ** 2 - x, 4 * x ** 3 - 10 * x - 1),
    lambda x: (math.exp(x) - 8 * x, math.exp(x) - 8),
])
@pytest.mark.parametrize("t0", [1e-3, 1.0, 50.0])
def test_the_line_search_meets_the_strong_wolfe_conditions(fn, t0):
    d = np.array([1.0])
    f0, g0 = fn(0.0)

    def phi(t):
        f, g = fn(t)
        return f, np.array([g])
    start = lbfgs.Point(0.0, f0, np.array([g0]), d)
    assert start.slope < 0
    point, evals = lbfgs.strong_wolfe(phi, start, d, t0, 25, 1e-12)
    assert point.f <= f0 + lbfgs.C1 * point.t * start.slope          # sufficient decrease
    assert abs(point.slope) <= -lbfgs.C2 * start.slope               # curvature
    assert evals <= 25 and point.t > 0


def test_weight_decay_is_the_l2_term_of_the_objective():
    X, T, _ = _logistic(n=50, dim=3)
    runs = []
    for wd in (0.3, 0.0):
        with fg.Graph():
            x = fg.placeholder("x", shape=(None, 3))
            t = fg.placeholder("t", shape=(None,))
            w = fg.variable(np.ones(3), name="w")
            b = fg.variable(0.5, name="b")
            loss = fg.bce_with_logits(fg.linear(x, w, b), t)
            if not wd:
                loss = loss + 0.3 * (fg.l2(w) + fg.l2(b))
            opt = fg.optim.LBFGS([w, b], weight_decay=wd)
            train = opt.minimize(loss)
            for _ in range(8):
                train(x=X, t=T)
            runs.append(np.r_[w.value, b.value])
    np.testing.assert_allclose(runs[0], runs[1], rtol=1e-9, atol=1e-12)


def test_a_step_is_atomic_and_settings_are_checked(monkeypatch):
    with fg.Graph():
        w = fg.variable(np.array([2.0, -1.0], dtype=np.float32), name="w")
        loss = fg.sum((w - np.array([1.0, 1.0], dtype=np.float32)) ** 2)
        opt = fg.optim.LBFGS([w])
        train = opt.minimize(loss)
        train()
        assert w.value.dtype == np.float32
        before, memory = w.value.copy(), opt.memory
        real = lbfgs.strong_wolfe

        def interrupted(phi, *args):
            phi(0.5)                                   # a trial evaluation, then Ctrl-C
            raise KeyboardInterrupt
        monkeypatch.setattr(lbfgs, "strong_wolfe", interrupted)
        with pytest.raises(KeyboardInterrupt):
            train()
        np.testing.assert_array_equal(w.value, before)
        assert opt.memory is memory and opt.iterations == 1
        monkeypatch.setattr(lbfgs, "strong_wolfe", real)
        while not opt.converged and opt.iterations < 20:
            train()
        np.testing.assert_allclose(w.value, [1.0, 1.0], atol=1e-6)
        opt.reset()
        assert opt.iterations == 0 and not opt.converged and opt.memory["pairs"] == []
        with pytest.raises(TypeError):
            fg.optim.LBFGS([w], clipnorm=1.0)          # no clipping with a line search
        with pytest.raises(ValueError, match="history_size"):
            fg.optim.LBFGS([w], history_size=0)
        with pytest.raises(fg.NumericsError, match="the loss"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)       # inf · 0 in the gradient
            fg.optim.LBFGS([w], check_finite=True).minimize(loss * np.inf)()


def test_fit_drives_lbfgs_one_iteration_a_batch():
    X, T, f = _logistic(n=80, dim=3, seed=2)
    ref = scipy_optimize.minimize(f, np.zeros(4), jac=True, method="L-BFGS-B",
                                  options=dict(ftol=1e-15, gtol=1e-12))
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 3))
        t = fg.placeholder("t", shape=(None,))
        w = fg.variable(np.zeros(3), name="w")
        b = fg.variable(0.0, name="b")
        loss = fg.bce_with_logits(fg.linear(x, w, b), t) + 1e-2 * fg.l2(w)
        opt = fg.optim.LBFGS([w, b], tolerance_grad=1e-10, tolerance_change=1e-14)
        hist = opt.fit(loss, data={x: X, t: T}, epochs=40, batch_size=None,
                       callbacks=[lambda e, logs: opt.converged])   # stop once converged
    assert opt.iterations == hist.epochs < 40
    assert hist["loss"][0] == pytest.approx(np.log(2), rel=1e-12)
    np.testing.assert_allclose(np.r_[w.value, b.value], ref.x, atol=1e-6)


@pytest.mark.parametrize("check_finite", [False, True])
def test_a_non_finite_start_is_refused_not_called_converged(check_finite):
    """log(p) at p = 0 is −inf: L-BFGS cannot step from there. It used to stay and set
    ``converged``, so ``while not opt.converged`` stopped as if at an optimum. Now a
    NumericsError, nothing written; a finite start then steps."""
    with fg.Graph():
        p = fg.variable(np.array([0.0, 2.0]), name="p")
        loss = fg.sum((p - 1.0) ** 2 - 0.01 * fg.log(p))
        opt = fg.optim.LBFGS([p], check_finite=check_finite)
        train = opt.minimize(loss)
        with pytest.raises(fg.NumericsError, match="loss"):
            train()
        assert not opt.converged and opt.iterations == 0
        np.testing.assert_array_equal(p.value, [0.0, 2.0])
        p.value = np.array([0.5, 2.0])           # finite loss and gradient: a step
        before = float(train())
        assert before == pytest.approx(1.25 - 0.01 * math.log(0.5) - 0.01 * math.log(2.0))
        assert opt.iterations == 1 and not opt.converged
        assert float(fg.run(loss)) < before


def test_weight_decay_overflowing_the_objective_is_refused():
    with fg.Graph():
        p = fg.variable(np.array([1e200]), name="p")
        opt = fg.optim.LBFGS([p], weight_decay=1.0)
        train = opt.minimize(fg.sum(p * 0.0 + 1.0))
        with pytest.raises(fg.NumericsError, match="weight_decay"):
            train()
        assert not opt.converged and p.value[0] == 1e200
