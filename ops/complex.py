"""Complex parts: conj, real, imag; and ``conj_of``, the conjugate the reverse rules of
holomorphic ops apply to their derivative factor.

flowgrad's complex gradients follow PyTorch's convention: for a real loss L of a complex
z, the gradient is 2 ∂L/∂z̄ (the conjugate Wirtinger derivative, what torch's ``.grad``
holds; minus it is the direction of steepest descent). A holomorphic f then passes
v̄ · conj(f′(z)) back, where its rule for real inputs wrote v̄ · f′(z); its forward rule
(jvp) stays f′(z) · ż, as torch's forward AD. ``conj_of`` is the identity on a real node
(no node is built), so a real graph's derivatives are the nodes they always were.

conj, real and imag of a real x are numpy's: x itself for conj and real (the node, no
new one), zeros for imag. Their rules (PyTorch's): conj̄ = conj(v̄); real's x̄ = v̄ (as a
complex), imag's x̄ = i v̄; forward rules conj(ż), real(ż), imag(ż).
"""
from __future__ import annotations

import numpy as np

from flowgrad.graph import Node

from .base import Op, apply, as_node


def _infer_same(x):
    return x.shape, x.dtype


def _infer_part(x):
    """real/imag of a complex is real, of its precision (complex64 → float32)."""
    return x.shape, np.finfo(x.dtype).dtype if x.dtype.kind == "c" else x.dtype


def _conj_vjp(g, ans, x):
    return conj(g)


def _real_vjp(g, ans, x):
    # the term for a complex x: a real v̄ (the sweep gives it x's complex dtype)
    return g


def _imag_vjp(g, ans, x):
    return g * 1j


_conj = Op("conj", lambda xp, x: xp.conj(x), _infer_same,
           vjp=(_conj_vjp,), jvp=(lambda t, ans, x: conj(t),), elementwise=True,
           doc="The complex conjugate x̄ = re x − i im x (x itself for a real x).  "
               "Its adjoint is conj(Ḡ); forward rule conj(ẋ).")
_real = Op("real", lambda xp, x: xp.real(x), _infer_part,
           vjp=(_real_vjp,), jvp=(lambda t, ans, x: real(t),), elementwise=True,
           doc="The real part re x (x itself for a real x).  x̄ = Ḡ (a complex with "
               "imaginary part 0); forward rule re ẋ.")
_imag = Op("imag", lambda xp, x: xp.imag(x), _infer_part,
           vjp=(_imag_vjp,), jvp=(lambda t, ans, x: imag(t),), elementwise=True,
           doc="The imaginary part im x (zeros for a real x).  x̄ = i Ḡ; forward rule "
               "im ẋ.")


def conj(x):
    """The complex conjugate of x, elementwise (numpy.conj). A real x is returned as it is
    (no node); otherwise one node, whose adjoint is conj(v̄) and tangent conj(ẋ)."""
    x = as_node(x)
    return x if x.dtype.kind != "c" else apply(_conj, x)


def real(x):
    """The real part of x (numpy.real): a real dtype of x's precision. A real x is
    returned as it is (no node). x̄ = v̄, as a complex; forward rule re ẋ."""
    x = as_node(x)
    return x if x.dtype.kind != "c" else apply(_real, x)


def imag(x):
    """The imaginary part of x (numpy.imag): a real dtype of x's precision; zeros for a
    real x. x̄ = i v̄ (PyTorch's); forward rule im ẋ."""
    x = as_node(x)
    if x.dtype.kind != "c":
        from .creation import zeros_like
        return zeros_like(x)
    return apply(_imag, x)


def conj_of(x):
    """conj(x) for a rule's derivative factor: a real node (or a real Python number) comes
    back as it is, so a rule built for real inputs builds exactly the nodes it always did."""
    if isinstance(x, Node):
        return x if x.dtype.kind != "c" else apply(_conj, x)
    return np.conj(x) if np.iscomplexobj(x) else x
