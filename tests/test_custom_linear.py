"""A custom_jvp rule is transposed into the reverse rule only when it is linear in the
tangents: a nonlinear or affine rule is refused when grad/vjp builds the reverse rule
(it used to give a silently wrong gradient: 0 for t*t, 1 for sin(t)), naming the
function, the rule's node and line and the line that asked; linear forms still give
the gradient PyTorch gives for the forward."""
import inspect

import numpy as np
import pytest
import torch

import flowgrad as fg

X = np.array([0.3, -0.7, 1.1, 0.4, -1.5, 0.9])


def _one_input(rule, name):
    @fg.custom_jvp(name=f"tests.linear.{name}")
    def f(x):
        return fg.sin(x)
    f.defjvp(rule)
    return f


NONLINEAR = {
    "sin": (lambda ts, ans, x: fg.sin(ts[0]), "applies sin"),
    "square": (lambda ts, ans, x: ts[0] * ts[0], "mul multiplies tangent terms"),
    "abs": (lambda ts, ans, x: fg.abs(ts[0]), "applies abs"),
    "exp": (lambda ts, ans, x: fg.exp(ts[0]) * fg.cos(x), "applies exp"),
    "offset": (lambda ts, ans, x: ts[0] + 1.0, "add adds a term that does not depend"),
    "offset_first": (lambda ts, ans, x: 1.0 - ts[0], "sub adds a term"),
    "divide_by_t": (lambda ts, ans, x: fg.cos(x) / ts[0], "divides by a tangent"),
    "relu_of_t": (lambda ts, ans, x: fg.where(ts[0] > 0.0, ts[0], 0.0), "applies greater"),
    "stop_gradient": (lambda ts, ans, x: fg.stop_gradient(ts[0]), "passes no derivative"),
    "no_tangent": (lambda ts, ans, x: fg.cos(x), "does not depend on the tangents"),
    "pad_one": (lambda ts, ans, x: fg.pad(ts[0][1:], [(1, 0)], value=1.0), "fills with 1.0"),
    "round": (lambda ts, ans, x: fg.astype(fg.astype(ts[0], "int64"), "float64"),
              "rounds a tangent"),
}


@pytest.mark.parametrize("case", sorted(NONLINEAR))
@pytest.mark.parametrize("how", ["grad", "vjp"])
def test_a_rule_not_linear_in_the_tangents_is_refused(case, how):
    rule, why = NONLINEAR[case]
    f = _one_input(rule, case)
    rule_line = inspect.getsourcelines(rule)[1]
    with fg.Graph():
        x = fg.placeholder("x", shape=(6,))
        y = f(x)
        line = inspect.currentframe().f_lineno + (3 if how == "grad" else 5)
        with pytest.raises(fg.DifferentiationError) as info:
            if how == "grad":
                fg.grad(fg.sum(y), x)
            else:
                fg.vjp(y, x, np.ones(6))
    text = str(info.value)
    assert f"custom_jvp 'tests.linear.{case}'" in text and "not linear" in text
    assert why in text
    assert f"test_custom_linear.py:{rule_line})" in text          # the rule's own line
    assert text.endswith(f"test_custom_linear.py:{line}")          # the line that asked


def test_two_tangents_multiplied_are_refused():
    @fg.custom_jvp(name="tests.linear.bilinear")
    def f(u, v):
        return u * v

    @f.defjvp
    def f_jvp(ts, ans, u, v):
        return ts[0] * ts[1]
    with fg.Graph():
        u, v = fg.placeholder("u", shape=(3,)), fg.placeholder("v", shape=(3,))
        with pytest.raises(fg.DifferentiationError, match="mul multiplies tangent terms"):
            fg.grad(fg.sum(f(u, v)), [u, v])


@pytest.mark.parametrize("offset, ok", [(0.0, True), (np.zeros(6), True),
                                        (5e-324, False), (np.eye(6)[5], False)])
def test_the_offset_boundary_is_exactly_zero(offset, ok):
    # an added constant is linear only when it is 0: the first nonzero value is refused
    f = _one_input(lambda ts, ans, x: ts[0] * fg.cos(x) + offset, f"offset{ok}")
    with fg.Graph():
        x = fg.placeholder("x", shape=(6,))
        y = fg.sum(f(x))
        if not ok:
            with pytest.raises(fg.DifferentiationError, match="affine offset"):
                fg.grad(y, x)
            return
        got = fg.run(fg.grad(y, x), {x: X})
    np.testing.assert_allclose(got, np.cos(X), rtol=1e-14)


C = np.array([2.0, -1.0, 0.5, 3.0, -0.25, 1.5])
A = np.arange(6.0).reshape(3, 2) / 5.0 - 0.4
MASK = np.array([True, False, True, True, False, True])

#: name: (the forward in fg, its linear jvp rule, the same forward in torch)
LINEAR = {
    "t_times_c": (lambda x: fg.sin(x) * C, lambda t, x: t * fg.cos(x) * C,
                  lambda x: torch.sin(x) * torch.tensor(C)),
    "c_times_t": (lambda x: C * fg.exp(x), lambda t, x: C * (t * fg.exp(x)),
                  lambda x: torch.tensor(C) * torch.exp(x)),
    "t_over_c": (lambda x: fg.tanh(x) / C, lambda t, x: t / C * (1.0 - fg.tanh(x) ** 2),
                 lambda x: torch.tanh(x) / torch.tensor(C)),
    "neg": (lambda x: -x * x, lambda t, x: -(t * x) * 2.0, lambda x: -x * x),
    "sum": (lambda x: fg.sum(x * x), lambda t, x: fg.sum(2.0 * x * t),
            lambda x: torch.sum(x * x)),
    "reshape_transpose_matmul": (
        lambda x: fg.transpose(fg.reshape(x, (2, 3))) @ A.T,
        lambda t, x: fg.transpose(fg.reshape(t, (2, 3))) @ A.T,
        lambda x: x.reshape(2, 3).T @ torch.tensor(A.T)),
    "const_matmul_t": (lambda x: A.T @ fg.reshape(x * x, (3, 2)),
                       lambda t, x: A.T @ fg.reshape(2.0 * x * t, (3, 2)),
                       lambda x: torch.tensor(A.T) @ (x * x).reshape(3, 2)),
    "where_const_condition": (lambda x: fg.where(MASK, fg.sin(x), 0.0),
                              lambda t, x: fg.where(MASK, t * fg.cos(x), 0.0),
                              lambda x: torch.where(torch.tensor(MASK), torch.sin(x),
                                                    torch.zeros(6, dtype=x.dtype))),
    "index_concat": (lambda x: fg.concatenate([x[1:], 3.0 * x[:2]], axis=0),
                     lambda t, x: fg.concatenate([t[1:], 3.0 * t[:2]], axis=0),
                     lambda x: torch.cat([x[1:], 3.0 * x[:2]])),
}
W = np.linspace(-1.0, 1.0, 9)


def _torch_grad(fwd):
    x = torch.tensor(X, requires_grad=True)
    out = fwd(x).reshape(-1)
    torch.sum(out * torch.tensor(W[:out.numel()])).backward()
    return x.grad.numpy()


@pytest.mark.parametrize("case", sorted(LINEAR))
@pytest.mark.parametrize("codegen", [True, False])
def test_a_linear_rule_gives_torchs_gradient(case, codegen):
    fwd, rule, ref = LINEAR[case]

    @fg.custom_jvp(name=f"tests.linear.ok.{case}")
    def f(x):
        return fwd(x)
    f.defjvp(lambda ts, ans, x: rule(ts[0], x))
    with fg.Graph():
        x = fg.placeholder("x", shape=(6,))
        out = f(x)
        y = fg.sum(fg.reshape(out, (-1,)) * W[:int(np.prod(out.shape))])
        prog = fg.compile(fg.grad(y, x), codegen=codegen)
        want = _torch_grad(ref)
        for _ in range(2):                                 # first call and a later one
            np.testing.assert_allclose(prog(x=X), want, rtol=1e-13, atol=1e-15)


def test_two_inputs_summed_tangents_and_a_zero_rule():
    @fg.custom_jvp(name="tests.linear.two")
    def f(u, v):
        return fg.sin(u) * fg.cos(v)

    @f.defjvp
    def f_jvp(ts, ans, u, v):
        return ts[0] * fg.cos(u) * fg.cos(v) - ts[1] * fg.sin(u) * fg.sin(v)

    @fg.custom_jvp(name="tests.linear.zero")
    def z(u):
        return u * 3.0
    z.defjvp(lambda ts, ans, u: fg.zeros_like(ans))   # a zero derivative: linear
    with fg.Graph():
        u, v = fg.placeholder("u", shape=(6,)), fg.placeholder("v", shape=(6,))
        grads = fg.run(fg.grad(fg.sum(f(u, v) * W[:6]) + fg.sum(z(u)), [u, v]),
                       {u: X, v: C})
    tu, tv = torch.tensor(X, requires_grad=True), torch.tensor(C, requires_grad=True)
    torch.sum(torch.sin(tu) * torch.cos(tv) * torch.tensor(W[:6])).backward()
    np.testing.assert_allclose(grads[0], tu.grad.numpy(), rtol=1e-13)
    np.testing.assert_allclose(grads[1], tv.grad.numpy(), rtol=1e-13)
