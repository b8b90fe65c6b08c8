"""Ops called with keywords: a keyword naming an input binds that input, as Python binds
a call (``fg.exp(x=w)`` is ``fg.exp(w)``); a keyword given twice, a missing input or a
keyword the op does not have is a UsageError naming the op, the keyword and its
signature. (A keyword used to be stored as an attribute: ``fg.exp(x=w)`` was a node
without inputs whose gradient was silently 0.)"""
import inspect
import math

import numpy as np
import pytest

import flowgrad as fg
from flowgrad.ops import Op
from flowgrad.ops.base import apply
from flowgrad.ops.reductions import _sum

X = np.array([0.3, 0.7, 1.6])
Y = np.array([1.1, 0.5, 2.0])
_erf = np.vectorize(math.erf)

#: every public op that is an Op instance, with a numpy reference of its value
REFERENCE = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
    "neg": np.negative, "pow": np.power, "exp": np.exp, "log": np.log, "log1p": np.log1p,
    "sqrt": np.sqrt, "abs": np.abs, "tanh": np.tanh, "sin": np.sin, "cos": np.cos,
    "maximum": np.maximum, "minimum": np.minimum, "sign": np.sign, "equal": np.equal,
    "not_equal": np.not_equal, "greater": np.greater, "greater_equal": np.greater_equal,
    "less": np.less, "less_equal": np.less_equal,
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)), "softplus": lambda x: np.log1p(np.exp(x)),
    "relu": lambda x: np.maximum(x, 0), "gelu": lambda x: x * (1 + _erf(x / np.sqrt(2))) / 2,
    "erf": _erf, "tan": np.tan, "stop_gradient": lambda x: x,
}
PUBLIC_OPS = [n for n in fg.ops.__all__ if isinstance(getattr(fg, n), Op)]


def test_the_reference_table_covers_every_public_op():
    assert sorted(REFERENCE) == sorted(PUBLIC_OPS)


def _fd_grad(ref, arrays, k, h=1e-6):
    """∂ Σ ref(arrays) / ∂ arrays[k] by central differences."""
    out = np.zeros_like(arrays[k])
    for i in range(arrays[k].size):
        up = [a.copy() for a in arrays]
        down = [a.copy() for a in arrays]
        up[k][i] += h
        down[k][i] -= h
        out[i] = (np.sum(ref(*up)) - np.sum(ref(*down))) / (2 * h)
    return out


@pytest.mark.parametrize("codegen", [True, False])
@pytest.mark.parametrize("name", PUBLIC_OPS)
def test_every_input_given_by_keyword_is_an_input(name, codegen):
    op, ref = getattr(fg, name), REFERENCE[name]
    names = list(inspect.signature(op).parameters)
    arrays = [X, Y][:len(names)]
    with fg.Graph():
        ws = [fg.variable(a, name=f"w{k}") for k, a in enumerate(arrays)]
        out = op(**dict(zip(names, ws)))
        assert list(out.inputs) == ws
        value = fg.compile(out, codegen=codegen)()
        np.testing.assert_allclose(value, ref(*arrays), rtol=1e-12)
        if out.dtype.kind != "f":
            return   # a comparison: no derivative
        grads = fg.compile(fg.grad(fg.sum(out), ws), codegen=codegen)()
    for k, g in enumerate(grads):
        expected = 0 * X if name == "stop_gradient" else _fd_grad(ref, arrays, k)
        np.testing.assert_allclose(g, expected, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("codegen", [True, False])
def test_the_probes_findings_give_the_closed_form(codegen):
    w0 = np.array([0.5, 2.0])
    with fg.Graph():
        w = fg.variable(w0, name="w")
        runs = fg.compile([fg.grad(fg.sum(fg.exp(x=w)), w),
                       fg.grad(fg.sum(fg.mul(w, y=w)), w),
                       fg.grad(fg.sum(fg.mul(x=w, y=w)), w),
                       fg.stop_gradient(x=w), fg.grad(fg.sum(w * fg.stop_gradient(x=w)), w),
                       fg.sigmoid(x=w), fg.add(w, y=2.0),
                       fg.pow(w, p=2.0), fg.grad(fg.sum(fg.pow(w, p=2.0)), w)],
                          codegen=codegen)()
    expected = [np.exp(w0), 2 * w0, 2 * w0, w0, w0, 1 / (1 + np.exp(-w0)), w0 + 2.0,
                w0 ** 2, 2 * w0]
    for got, want in zip(runs, expected):
        assert isinstance(got, np.ndarray)
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_a_node_built_by_keyword_names_the_users_line():
    with fg.Graph():
        w = fg.variable(X, name="w")
        here = inspect.currentframe().f_lineno + 1
        nodes = [fg.exp(x=w), fg.mul(w, y=w), fg.add(x=w, y=1.0)]
    for node in nodes:
        assert node.where == f"{__file__}:{here}"


def _refused(match):
    # the message names the op, the keyword and the signature, and the user's line
    return pytest.raises(fg.UsageError, match=match + r".*\n  at .*test_op_keywords\.py:\d+")


def test_a_keyword_the_op_does_not_have_is_refused_naming_it_and_the_signature():
    with fg.Graph():
        w = fg.variable(X, name="w")
        with _refused(r"exp: got an unexpected keyword argument 'axis'.*"
                      r"its signature is exp\(x\)"):
            fg.exp(w, axis=0)
        with _refused(r"pow: got an unexpected keyword argument 'y'.*pow\(x, p\)"):
            fg.pow(w, y=2.0)   # pow's exponent is p
        with _refused(r"sum: got an unexpected keyword argument 'axes'.*"
                      r"sum\(x, axis, keepdims\)"):
            apply(_sum, w, axes=(0,), keepdims=False)


def test_an_input_given_twice_or_left_out_is_refused():
    with fg.Graph():
        w = fg.variable(X, name="w")
        with _refused(r"mul: got input 'x' both by position and by keyword.*mul\(x, y\)"):
            fg.mul(w, x=w)
        with _refused(r"mul: missing input 'x'; its signature is mul\(x, y\)"):
            fg.mul(y=w)
        with _refused(r"sub: missing input 'y'"):
            fg.sub(x=w)
        with _refused(r"sigmoid: got an unexpected keyword argument 'slope'"):
            fg.sigmoid(slope=1.0)   # (as Python, an unknown keyword is named first)


def test_attributes_by_keyword_still_are_attributes():
    # the reductions pass their attributes through apply as keywords; an input named by
    # keyword next to them is bound as the input
    with fg.Graph():
        w = fg.variable(X, name="w")
        by_keyword = apply(_sum, x=w, axis=(0,), keepdims=True)
        assert list(by_keyword.inputs) == [w]
        assert by_keyword.attrs == {"axis": (0,), "keepdims": True}
        total, g = fg.run([fg.sum(w, axis=0), fg.grad(fg.sum(w * w, axis=0), w)])
    np.testing.assert_allclose(total, X.sum(), rtol=1e-12)
    np.testing.assert_allclose(g, 2 * X, rtol=1e-12)


def test_an_optional_input_left_out_by_keyword_stays_out():
    x0, w0 = np.ones((2, 3)), np.arange(12.0).reshape(3, 4)
    with fg.Graph():
        x, w = fg.constant(x0), fg.constant(w0)
        out = fg.ops.nn._linear_op(x=x, w=w)
        assert list(out.inputs) == [x, w]
        np.testing.assert_allclose(fg.run(out), x0 @ w0, rtol=1e-12)
