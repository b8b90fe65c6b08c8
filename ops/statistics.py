"""Statistics along axes: var, std, prod, cumsum.

``var`` is the two-pass, mean-centred form Σ(x − x̄)²/(N − ddof) (numpy's and torch's;
the one-pass Σx² − N x̄² cancels catastrophically for data far from 0). ``std`` is
√var, a composite.

``prod``'s derivative is the product of the *other* entries, which the usual ans/x
cannot give where x has zeros. Its rules build that product as a balanced tree of
multiplications (halves of the axis times each other, then the tree walked back),
from mul, getitem and concatenate only: no division anywhere, so the gradient is exact
with one zero (the product of the others at the zero, 0 elsewhere) or several (0),
and every higher derivative is exact too, the tree being a polynomial in x.
"""
from __future__ import annotations

import numbers

import numpy as np

from flowgrad.errors import DifferentiationError, UsageError

from .base import (Op, apply, as_node, at_user_line, float_dtype, half_widened, keepdims_flag,
                   normalize_axis, shape_error)
from .reductions import count_node, sum_infer, mean, reduced_shape, sum, unreduce, wide_count
from .shape import concatenate, expand_dims
from .special import as_float


# -- var / std -------------------------------------------------------------------------

def _var(xp, x, axis, ddof, keepdims):
    x = as_float(xp, x)
    n = int(np.prod([x.shape[a] for a in axis]))
    if ddof >= n:   # only reachable with lengths known at run time (infer checks the rest)
        raise ValueError(f"var: ddof={ddof} needs more than {ddof} entries along axis "
                         f"{axis}, got {n}")
    # a float16 x accumulated in float32 and rounded once, as torch's half var: in float16
    # the squares' sum overflowed past 65504 (inf, or NaN once N rounded to inf too)
    return half_widened(lambda v: _var_of(xp, v, axis, n - ddof, keepdims), x)


def _var_of(xp, x, axis, dof, keepdims):
    d = x - xp.mean(x, axis=axis, keepdims=True)
    return xp.sum(d * d, axis=axis, keepdims=keepdims) / dof


def _var_infer(x, axis, ddof, keepdims):
    if x.dtype.kind == "c":   # (x − x̄)² is not |x − x̄|²: refused rather than wrong
        raise shape_error("var", (x,), "complex values are not supported")
    dims = [x.shape[a] for a in axis]
    if None not in dims and ddof >= int(np.prod(dims)):
        raise shape_error("var", (x,), f"ddof={ddof} needs more than {ddof} entries along "
                          f"axis {axis}, which have {int(np.prod(dims))}")
    return reduced_shape(x.shape, axis, keepdims), float_dtype(x.dtype)


def _var_scale(x, axis, ddof):
    """2/(N − ddof), a number or (for run-time lengths) a node of x's float dtype; a
    float16 x's node is counted in float32 and rounded back (N past 65504 is inf in
    float16: the gradient was 0), the number a static N gives."""
    n = wide_count(x, axis)
    if type(n) is int or x.dtype != np.float16:
        return 2.0 / (n - ddof)
    from .tensor import astype
    return astype(2.0 / (n - ddof), np.float16)


def _var_vjp(g, ans, x, axis, ddof, keepdims):
    centred = x - mean(x, axis, keepdims=True)
    return unreduce(g, x, axis, keepdims) * (centred * _var_scale(x, axis, ddof))


def _var_jvp(t, ans, x, axis, ddof, keepdims):
    # Σ (x − x̄)(ṫ − mean ṫ) = Σ (x − x̄) ṫ: the mean's tangent drops out
    centred = x - mean(x, axis, keepdims=True)
    return sum(t * centred, axis, keepdims) * _var_scale(x, axis, ddof)


def _var_decompose(x, axis, ddof, keepdims):
    if x.dtype == np.float16:   # in float32 and rounded once, as the kernel
        from .tensor import half_in_float32
        return half_in_float32(lambda v: _var_decompose(v, axis, ddof, keepdims), x)
    d = x - mean(x, axis, keepdims=True)
    return sum(d * d, axis, keepdims) / (count_node(x, axis) - ddof)


_var_op = Op("var", _var, _var_infer, vjp=(_var_vjp,), jvp=(_var_jvp,),
             doc="Σ(x − x̄)²/(N − ddof) over axis (two-pass).  ∂/∂x = 2(x − x̄)/(N − ddof); "
                 "forward rule 2 Σ(x − x̄) ẋ/(N − ddof).")
_var_op.decompose = _var_decompose
# what var() refuses (ddof −1, True), a graph file may not give either (io/opsig.py)
_var_op.check_attrs = lambda x, axis, ddof, keepdims: _ddof("var", ddof)


def _ddof(op_name, ddof):
    if isinstance(ddof, (bool, np.bool_)) or not isinstance(ddof, numbers.Real) or \
            not ddof >= 0:
        raise UsageError(f"{op_name}: ddof must be a number ≥ 0, got {ddof!r}" + at_user_line())
    return int(ddof) if float(ddof).is_integer() else float(ddof)


def var(x, axis=None, ddof=0, keepdims=False):
    """Variance of x over ``axis`` (all axes when None): Σ(x − x̄)²/(N − ddof), N the
    entries reduced; ddof=0 is the biased (population) variance, ddof=1 the unbiased.
    ddof ≥ N is refused (a ShapeError when the graph is built, or when it runs for
    lengths known only then). ∂/∂x = 2(x − x̄)/(N − ddof). A float16 x's variance is
    accumulated in float32 and rounded once to float16, as torch's half var (in float16
    the sum of squares overflowed past 65504)."""
    x = as_node(x)
    return apply(_var_op, x, axis=normalize_axis("var", x, axis), ddof=_ddof("var", ddof),
                 keepdims=keepdims_flag("var", keepdims))


def std(x, axis=None, ddof=0, keepdims=False):
    """Standard deviation √var(x, axis, ddof) (a composite of var and sqrt).
    ∂/∂x = (x − x̄)/((N − ddof) std); at zero spread (std = 0) the gradient is 0, as
    torch's and as norm's at 0 (the minimum-norm subgradient), not 0/0. A float16 x is
    taken in float32 and the result (and x̄) rounded back to float16, as torch's half
    std."""
    x = as_node(x)
    if x.dtype == np.float16:
        # √ of the float32 variance, rounded once, as torch's half std: a variance past
        # 65504 is inf in float16 where its root (≥ 256) is not
        from .tensor import half_in_float32
        return half_in_float32(lambda v: std(v, axis, ddof, keepdims), x)
    from .elementwise import equal, sqrt, where
    v = var(x, axis, ddof, keepdims)
    flat = equal(v, 0)
    # sqrt never sees the 0 (where's adjoint does not reach the branch not taken)
    return where(flat, 0.0, sqrt(where(flat, 1.0, v)))


# -- prod --------------------------------------------------------------------------------

def _along(a, start, stop):
    return (slice(None),) * a + (slice(start, stop),)


def _tree_levels(x, a, n):
    """The levels of x's product tree along axis a: each halves the length, multiplying
    the first half by the second (an odd last entry is carried up)."""
    from .indexing import getitem
    levels = [(x, n)]
    while n > 1:
        m = n // 2
        y = getitem(x, _along(a, 0, m)) * getitem(x, _along(a, m, 2 * m))
        if n % 2:
            y = concatenate([y, getitem(x, _along(a, 2 * m, n))], axis=a)
        x, n = y, m + n % 2
        levels.append((x, n))
    return levels


def _tree_back(levels, a, gbar):
    """Walk the tree back from the adjoint ``gbar`` of its top (length 1 along a)."""
    from .indexing import getitem
    for (y, n) in reversed(levels[:-1]):
        m = n // 2
        head = getitem(gbar, _along(a, 0, m))
        parts = [head * getitem(y, _along(a, m, 2 * m)), head * getitem(y, _along(a, 0, m))]
        if n % 2:
            parts.append(getitem(gbar, _along(a, m, m + 1)))
        gbar = concatenate(parts, axis=a)
    return gbar


def _static_lengths(x, axis):
    dims = [x.shape[a] for a in axis]
    if None in dims:
        raise DifferentiationError(
            f"prod's derivative needs the lengths of the reduced axes {axis} when the graph "
            f"is built; {x.name!r} has shape {x.shape}" + at_user_line())
    return dims


def _prod_back(x, axis, gbar=None):
    """x̄ for the adjoint gbar (keepdims form; None: ones, giving the products of the
    others) of prod over axis: the trees, one axis at a time (the product over later
    axes is of the earlier axes' tops)."""
    from .creation import ones_like, zeros_like
    dims = _static_lengths(x, axis)
    if 0 in dims:                      # an empty product is 1, whatever x is
        return zeros_like(x)
    trees, y = [], x
    for a, n in zip(axis, dims):
        levels = _tree_levels(y, a, n)
        trees.append((a, levels))
        y = levels[-1][0]
    if gbar is None:
        gbar = ones_like(y)
    for a, levels in reversed(trees):
        gbar = _tree_back(levels, a, gbar)
    return gbar


def _others(x, axis, gbar=None):
    """_prod_back, a float16 x's tree multiplied in float32 and rounded once, as the
    value is: in float16 each of its log₂ n levels rounded, and the gradient of a
    product of 800 entries near 1 was 3.5 % off (torch's, prod/x, 1.8 %)."""
    if x.dtype != np.float16:
        return _prod_back(x, axis, gbar)
    from .tensor import astype, half_in_float32
    wide = None if gbar is None else astype(gbar, np.float32)
    return half_in_float32(lambda v: _prod_back(v, axis, wide), x)


def _prod_vjp(g, ans, x, axis, keepdims):
    if not keepdims and axis:
        g = expand_dims(g, axis)
    return _others(x, axis, g)


def _prod_jvp(t, ans, x, axis, keepdims):
    if not axis:
        return t
    others = _others(x, axis)
    return sum(t * others, axis, keepdims)


# (a float16 x multiplied in float32 and rounded once: numpy rounds each of its n − 1
# products to float16, 1.8 % off over 800 entries near 1 (as torch), dask's chunks 2.1 %)
_prod = Op("prod", lambda xp, x, axis, keepdims: half_widened(
               lambda v: xp.prod(v, axis=axis, keepdims=keepdims), x),
           lambda x, axis, keepdims: sum_infer(x, axis, keepdims),
           vjp=(_prod_vjp,), jvp=(_prod_jvp,),
           doc="Π over axis.  ∂/∂xᵢ = Πⱼ≠ᵢ xⱼ, the product of the others, built without "
               "division: exact at zeros (with one zero, the product of the others there "
               "and 0 elsewhere; with two or more, 0).")


def prod(x, axis=None, keepdims=False):
    """Product of x over ``axis`` (all axes when None).  ∂/∂xᵢ = the product of the
    other entries, exact where x has zeros (no division by x).

    The derivative is built as a product tree over the reduced axes, so it needs their
    lengths when the graph is built (a DifferentiationError names them otherwise); the
    value itself takes run-time lengths."""
    x = as_node(x)
    return apply(_prod, x, axis=normalize_axis("prod", x, axis),
                 keepdims=keepdims_flag("prod", keepdims))


# -- cumsum --------------------------------------------------------------------------------

def _reversed(x, axis):
    from .indexing import getitem
    return getitem(x, (slice(None),) * axis + (slice(None, None, -1),))


_cumsum = Op("cumsum", lambda xp, x, axis: half_widened(lambda v: xp.cumsum(v, axis=axis), x),
             lambda x, axis: (x.shape, sum_infer(x, (), False)[1]),
             vjp=(lambda g, ans, x, axis: _reversed(cumsum(_reversed(g, axis), axis), axis),),
             multilinear=True,
             doc="Running sums along axis.  x̄ = the running sums of Ḡ from the end "
                 "(reverse cumsum); the forward rule is cumsum of the tangent.")


def cumsum(x, axis=None):
    """Running sums of x along ``axis`` (a linear map), as numpy.cumsum; axis=None runs
    over x flattened. x̄ = v̄'s running sums taken from the end of the axis."""
    from .shape import reshape
    x = as_node(x)
    if axis is None:
        x, axis = reshape(x, (-1,)) if len(x.shape) != 1 else x, 0
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
        raise UsageError(f"cumsum: axis must be an int or None, got {axis!r}" + at_user_line())
    return apply(_cumsum, x, axis=normalize_axis("cumsum", x, int(axis))[0])
