"""Every optimizer against torch.optim in float64: 50 steps on a small model, each
side computing its own gradients (flowgrad's graph, torch's autograd), the values to
1e-11 after every step. Weight decay, momentum variants and gradient clipping
(torch.nn.utils.clip_grad_norm_ / clip_grad_value_ before torch's step) included."""
import numpy as np
import pytest

import flowgrad as fg

torch = pytest.importorskip("torch")

RNG = np.random.default_rng(7)
X, Y = RNG.normal(size=(16, 3)), RNG.normal(size=(16, 2))
INIT = {"W": RNG.normal(size=(3, 2)) * 0.5, "b": np.array([0.1, -0.2]), "s": np.array(1.3)}


def _torch_loss(W, b, s):
    x, y = torch.from_numpy(X), torch.from_numpy(Y)
    return torch.mean((torch.tanh(x @ W + b) * s - y) ** 2) + 0.05 * s ** 4


def _fg_model():
    x = fg.placeholder("x", shape=(None, 3))
    y = fg.placeholder("y", shape=(None, 2))
    W = fg.variable(INIT["W"], name="W")
    b = fg.variable(INIT["b"], name="b")
    s = fg.variable(float(INIT["s"]), name="s")        # 0-d float64: the float path too
    loss = fg.mean((fg.tanh(x @ W + b) * s - y) ** 2) + 0.05 * s ** 4
    return [W, b, s], loss, {x: X, y: Y}


CASES = [
    ("SGD", dict(lr=0.1), "SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, weight_decay=0.05), "SGD", dict(lr=0.1, weight_decay=0.05)),
    ("Momentum", dict(lr=0.05, momentum=0.9), "SGD", dict(lr=0.05, momentum=0.9)),
    ("Momentum", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01),
     "SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01)),
    ("Adam", dict(lr=0.01), "Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
     "Adam", dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    ("AdamW", dict(lr=0.01), "AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.02, weight_decay=0.3, eps=1e-7), "AdamW",
     dict(lr=0.02, weight_decay=0.3, eps=1e-7)),
    ("RMSProp", dict(lr=0.01), "RMSprop", dict(lr=0.01)),
    ("RMSProp", dict(lr=0.005, alpha=0.9, centered=True), "RMSprop",
     dict(lr=0.005, alpha=0.9, centered=True)),
    ("RMSProp", dict(lr=0.005, momentum=0.7, weight_decay=0.02), "RMSprop",
     dict(lr=0.005, momentum=0.7, weight_decay=0.02)),
    ("RMSProp", dict(lr=0.003, momentum=0.5, centered=True, eps=1e-4), "RMSprop",
     dict(lr=0.003, momentum=0.5, centered=True, eps=1e-4)),
    ("Adagrad", dict(lr=0.1), "Adagrad", dict(lr=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.05, initial_accumulator_value=0.2,
                     eps=1e-6),
     "Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.05, initial_accumulator_value=0.2,
                     eps=1e-6)),
]


def _compare(ours, theirs, clip=None, steps=50):
    with fg.Graph():
        variables, loss, feed = _fg_model()
        opt = ours(variables)
        train = opt.minimize(loss)
        params = [torch.tensor(INIT[k], dtype=torch.float64, requires_grad=True)
                  for k in ("W", "b", "s")]
        topt = theirs(params)
        for step in range(steps):
            ours_loss = float(train(feed))
            topt.zero_grad()
            their_loss = _torch_loss(*params)
            their_loss.backward()
            if clip is not None:
                clip(params)
            topt.step()
            assert ours_loss == pytest.approx(float(their_loss.detach()), rel=1e-11, abs=1e-13), step
            for v, p in zip(variables, params):
                np.testing.assert_allclose(v.value, p.detach().numpy(), rtol=1e-11,
                                           atol=1e-13, err_msg=f"{v.name} at step {step}")
        # the state stays float64 numbers of the variables' shapes
        for v, st in zip(variables, opt.state):
            assert all(np.shape(a) == v.shape for a in st.values())
    return opt


@pytest.mark.parametrize("name, kwargs, tname, tkwargs", CASES,
                         ids=[f"{c[0]}-{k}" for k, c in enumerate(CASES)])
def test_each_update_is_torch_optims(name, kwargs, tname, tkwargs):
    _compare(lambda v: getattr(fg.optim, name)(v, **kwargs),
             lambda p: getattr(torch.optim, tname)(p, **tkwargs))


def _clip_each(max_norm):
    def clip(params):
        for p in params:
            torch.nn.utils.clip_grad_norm_([p], max_norm)
    return clip


@pytest.mark.parametrize("make, clip", [
    (lambda v: fg.optim.SGD(v, lr=0.3, clipnorm=0.05), _clip_each(0.05)),
    (lambda v: fg.optim.Adam(v, lr=0.01, clipnorm=0.02, weight_decay=0.1), _clip_each(0.02)),
    (lambda v: fg.optim.Momentum(v, lr=0.1, momentum=0.9, global_clipnorm=0.1),
     lambda p: torch.nn.utils.clip_grad_norm_(p, 0.1)),
    (lambda v: fg.optim.RMSProp(v, lr=0.01, global_clipnorm=0.03, centered=True),
     lambda p: torch.nn.utils.clip_grad_norm_(p, 0.03)),
    (lambda v: fg.optim.SGD(v, lr=0.2, clipvalue=0.01),
     lambda p: torch.nn.utils.clip_grad_value_(p, 0.01)),
    (lambda v: fg.optim.AdamW(v, lr=0.01, clipvalue=0.02),
     lambda p: torch.nn.utils.clip_grad_value_(p, 0.02)),
], ids=["sgd-clipnorm", "adam-clipnorm-wd", "momentum-global", "rmsprop-global",
        "sgd-clipvalue", "adamw-clipvalue"])
def test_clipping_is_torch_nn_utils_before_the_step(make, clip):
    kinds = {"SGD": torch.optim.SGD, "Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW,
             "RMSProp": torch.optim.RMSprop}
    with fg.Graph():
        probe = make(fg.variable(0.0, name="p"))
    kwargs = {"lr": probe.lr, "weight_decay": probe.weight_decay}
    if isinstance(probe, fg.optim.Momentum):
        theirs = lambda p: torch.optim.SGD(p, momentum=probe.momentum, **kwargs)  # noqa: E731
    elif isinstance(probe, fg.optim.RMSProp):
        theirs = lambda p: torch.optim.RMSprop(p, centered=probe.centered,  # noqa: E731
                                               **kwargs)
    else:
        theirs = lambda p: kinds[type(probe).__name__](p, **kwargs)  # noqa: E731
    _compare(make, theirs, clip=clip)


def test_clipping_is_active_and_the_program_keeps_the_true_gradients():
    with fg.Graph():
        w = fg.variable(np.array([3.0, 4.0]), name="w")
        loss = fg.l2(w)                                  # gradient = w, norm 5
        opt = fg.optim.SGD([w], lr=1.0, clipnorm=1.0)
        prog = opt.training_program(loss)
        out = opt.step(prog)
        assert float(out) == 12.5
        np.testing.assert_allclose(w.value, [3 - 0.6 / (1 + 2e-7), 4 - 0.8 / (1 + 2e-7)],
                                   rtol=1e-15)
        # the program outputs the true gradient; a hand-clipped one is still refused
        np.testing.assert_array_equal(prog(**{})[1], w.value)
        with pytest.raises(fg.OptimizerError, match="not the gradient"):
            opt.step(fg.compile([loss, fg.grad(loss, w) * 0.5]))
        v = fg.variable(np.array([0.3]), name="v")
        opt = fg.optim.SGD([w, v], lr=1.0, clipvalue=0.5)
        before = w.value.copy()
        opt.minimize(fg.l2(w) + fg.l2(v))()
        np.testing.assert_array_equal(w.value, before - 0.5)      # both entries clamped
        np.testing.assert_array_equal(v.value, [0.0])              # 0.3 is under the limit


def test_gradient_settings_are_checked():
    w = fg.variable([1.0], name="w")
    with pytest.raises(fg.OptimizerError, match="at most one"):
        fg.optim.SGD([w], lr=0.1, clipnorm=1.0, clipvalue=1.0)
    for key in ("clipnorm", "clipvalue", "global_clipnorm"):
        with pytest.raises(fg.OptimizerError, match=key):
            fg.optim.Adam([w], **{key: 0.0})             # the boundary: 0 is refused
        assert getattr(fg.optim.Adam([w], **{key: 1e-300}), key) == 1e-300
    with pytest.raises(fg.OptimizerError, match="weight_decay"):
        fg.optim.SGD([w], lr=0.1, weight_decay=-1e-12)
    assert fg.optim.SGD([w], lr=0.1, weight_decay=0.0).weight_decay == 0.0
    assert fg.optim.AdamW([w]).weight_decay == 0.01      # torch's default
    with pytest.raises(fg.OptimizerError, match="alpha"):
        fg.optim.RMSProp([w], alpha=1.0)
    with pytest.raises(fg.OptimizerError, match="lr_decay"):
        fg.optim.Adagrad([w], lr_decay=-0.1)
    with pytest.raises(AttributeError):
        fg.optim.SGD([w], lr=0.1).weight_decay = 0.1     # fixed when made


@pytest.mark.parametrize("ours, theirs, clip", [
    (lambda v: fg.optim.AdamW(v, lr=0.01, global_clipnorm=0.05),
     lambda p: torch.optim.AdamW(p, lr=0.01), lambda p: torch.nn.utils.clip_grad_norm_(p, 0.05)),
    (lambda v: fg.optim.RMSProp(v, lr=0.01, centered=True, momentum=0.5, weight_decay=0.1),
     lambda p: torch.optim.RMSprop(p, lr=0.01, centered=True, momentum=0.5, weight_decay=0.1),
     None),
    (lambda v: fg.optim.Adagrad(v, lr=0.1, clipvalue=0.02),
     lambda p: torch.optim.Adagrad(p, lr=0.1), lambda p: torch.nn.utils.clip_grad_value_(p, 0.02)),
], ids=["adamw-global", "rmsprop", "adagrad-clipvalue"])
def test_float32_variables_and_state_stay_float32(ours, theirs, clip):
    f32 = np.float32
    x32, y32 = X.astype(f32), Y.astype(f32)
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 3), dtype="float32")
        y = fg.placeholder("y", shape=(None, 2), dtype="float32")
        W = fg.variable(INIT["W"].astype(f32), name="W")
        b = fg.variable(INIT["b"].astype(f32), name="b")
        loss = fg.mean((fg.tanh(x @ W + b) - y) ** 2)
        opt = ours([W, b])
        train = opt.minimize(loss)
        params = [torch.tensor(INIT[k].astype(f32), requires_grad=True) for k in ("W", "b")]
        topt = theirs(params)
        for _ in range(20):
            train(x=x32, y=y32)
            topt.zero_grad()
            torch.mean((torch.tanh(torch.from_numpy(x32) @ params[0] + params[1])
                        - torch.from_numpy(y32)) ** 2).backward()
            if clip is not None:
                clip(params)
            topt.step()
        for v, p, st in zip((W, b), params, opt.state):
            assert v.value.dtype == np.float32
            assert all(np.asarray(a).dtype == np.float32 for a in st.values())
            np.testing.assert_allclose(v.value, p.detach().numpy(), rtol=2e-5, atol=2e-6)


COMPLEX_CASES = [
    ("Adam", dict(lr=0.05, betas=(0.8, 0.99), weight_decay=0.1), "Adam"),
    ("AdamW", dict(lr=0.05, weight_decay=0.2), "AdamW"),
    ("RMSProp", dict(lr=0.01, centered=True, momentum=0.5), "RMSprop"),
    ("RMSProp", dict(lr=0.01), "RMSprop"),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.3), "Adagrad"),
    ("Momentum", dict(lr=0.05, momentum=0.9, nesterov=True), "SGD"),
]


@pytest.mark.parametrize("name, kwargs, tname", COMPLEX_CASES,
                         ids=[f"{c[0]}-{k}" for k, c in enumerate(COMPLEX_CASES)])
@pytest.mark.parametrize("dtype", ["complex128", "complex64"])
def test_complex_variables_update_as_torch_optims(name, kwargs, tname, dtype):
    """torch.optim updates a complex parameter as its (real, imaginary) pairs
    (view_as_real): Adam's, RMSProp's and Adagrad's squared gradient is re² and im²
    apart, not the complex (re + i·im)². That was flowgrad's, and it drifted off at once.
    The gradient convention is torch's (2z for |z|²); a 0-d and a 1-d variable, and the
    state stays complex in the variable's dtype."""
    c = np.array([1 + 2j, -0.5 + 0.3j])
    z0, a0 = np.array([0.2 - 0.1j, 0.4 + 0.9j]), np.complex128(0.7 - 0.4j)
    with fg.Graph():
        z = fg.variable(z0.astype(dtype), name="z")
        a = fg.variable(a0.astype(dtype), name="a")
        d = z - c.astype(dtype)
        loss = fg.astype(fg.sum(fg.abs(d) ** 2 + 0.1 * fg.abs(d) ** 4)
                         + fg.abs(a - 1j) ** 3, "float64")
        opt = getattr(fg.optim, name)([z, a], **kwargs)
        train = opt.minimize(loss)
        tdtype = getattr(torch, dtype)
        pz = torch.tensor(z0, dtype=tdtype, requires_grad=True)
        pa = torch.tensor(a0, dtype=tdtype, requires_grad=True)
        topt = getattr(torch.optim, tname)([pz, pa], **kwargs)
        tc = torch.tensor(c, dtype=tdtype)
        for step in range(25):
            train()
            topt.zero_grad()
            td = pz - tc
            (torch.sum(td.abs() ** 2 + 0.1 * td.abs() ** 4) + (pa - 1j).abs() ** 3).backward()
            topt.step()
            tol = 1e-11 if dtype == "complex128" else 1e-4
            np.testing.assert_allclose(z.value, pz.detach().numpy(), rtol=tol, atol=tol,
                                       err_msg=f"step {step}")
            np.testing.assert_allclose(a.value, pa.detach().numpy(), rtol=tol, atol=tol)
        assert z.value.dtype == dtype and np.asarray(a.value).dtype == dtype
        for v, st in zip((z, a), opt.state):
            assert all(np.asarray(s).dtype == dtype and np.shape(s) == v.shape
                       for s in st.values())


def test_clipvalue_refuses_complex_variables_and_clipnorm_is_torchs():
    """numpy's clip orders complex numbers by their real part first (3+4j became 1+0j,
    0.5−2j stayed): meaningless, and torch's clip_grad_value_ refuses complex. The norm
    clips are |g|-based and match torch's clip_grad_norm_."""
    with fg.Graph():
        z = fg.variable(np.array([3 + 4j, 0.5 - 2j]), name="z")
        w = fg.variable(np.array([1.0]), name="w")
        with pytest.raises(fg.OptimizerError, match=r"clipvalue.*\['z'\] are complex"):
            fg.optim.SGD([w, z], lr=0.1, clipvalue=1.0)
        fg.optim.SGD([w], lr=0.1, clipvalue=1.0)           # a real variable alone is fine
        opt = fg.optim.SGD([w, z], lr=1.0, global_clipnorm=1.0)
        opt.minimize(fg.astype(fg.sum(fg.abs(z) ** 2), "float64") + fg.sum(w * w))()
        pz = torch.tensor([3 + 4j, 0.5 - 2j], dtype=torch.complex128, requires_grad=True)
        pw = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
        ((pz.abs() ** 2).sum() + (pw * pw).sum()).backward()
        torch.nn.utils.clip_grad_norm_([pw, pz], 1.0)
        np.testing.assert_allclose(z.value, (pz - pz.grad).detach().numpy(), rtol=1e-14)
        np.testing.assert_allclose(w.value, (pw - pw.grad).detach().numpy(), rtol=1e-14)
