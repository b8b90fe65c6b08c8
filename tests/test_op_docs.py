"""Ops are functions users can inspect: help() and inspect.signature show the call and a
docstring that states the derivative (issue 11 §5)."""
import inspect
import pydoc

import numpy as np
import pytest

import flowgrad as fg
from flowgrad.ops import Op

PUBLIC = fg.ops.__all__
RULE_MARKS = ("∂", "\u0304", "derivative")   # ∂/∂x = …, an adjoint x̄ = …, "no derivative"


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_op_documents_its_derivative(name):
    fn = getattr(fg, name)
    doc = inspect.getdoc(fn)
    assert doc and any(m in doc for m in RULE_MARKS), f"fg.{name}: {doc!r}"


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_op_has_a_call_signature_without_xp(name):
    sig = inspect.signature(getattr(fg, name))
    assert sig.parameters and "xp" not in sig.parameters


def test_op_instances_look_like_functions():
    assert isinstance(fg.sigmoid, Op) and isinstance(fg.relu, Op)
    assert str(inspect.signature(fg.sigmoid)) == "(x)"
    assert str(inspect.signature(fg.pow)) == "(x, p)"
    assert str(inspect.signature(fg.add)) == "(x, y)"
    assert fg.relu.__name__ == "relu" and fg.relu.__module__ == "flowgrad.ops.nn"
    assert inspect.isroutine(fg.relu)
    assert repr(fg.relu) == "<Op relu>"                # internals keep the short form


def test_help_shows_the_signature_and_the_derivative():
    text = pydoc.render_doc(fg.relu, renderer=pydoc.plaintext)
    assert "relu(x)" in text and "∂/∂x = [x > 0]" in text
    text = pydoc.render_doc(fg.sigmoid, renderer=pydoc.plaintext)
    assert "sigmoid(x)" in text and "σ(1−σ)" in text
    text = pydoc.render_doc(fg.logdet, renderer=pydoc.plaintext)
    assert "logdet(x)" in text and "∂ log det X = X⁻ᵀ" in text
    text = pydoc.render_doc(fg.softmax_cross_entropy, renderer=pydoc.plaintext)
    assert "softmax_cross_entropy(z, t, reduction='mean', axis=-1)" in text


def test_the_fused_model_ops_keep_their_signatures():
    assert str(inspect.signature(fg.linear)) == "(x, w, b=None)"
    assert str(inspect.signature(fg.mse)) == "(y, t, reduction='mean')"
    assert str(inspect.signature(fg.bce_with_logits)) == "(z, t, reduction='mean')"
    assert str(inspect.signature(fg.l2)) == "(w)"


def test_an_op_stored_on_a_class_stays_the_op_as_a_ufunc_would():
    class Layer:
        act = fg.tanh

        def __call__(self, x):
            return self.act(x)

    with fg.Graph():
        x = fg.placeholder("x", shape=(2,))
        assert Layer.act is fg.tanh
        y = Layer()(x)
        assert y.op is fg.tanh
        np.testing.assert_allclose(fg.run(y, {x: [0.5, -1.0]}), np.tanh([0.5, -1.0]))
