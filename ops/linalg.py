"""Linear algebra with numpy's semantics (1-d operands, batched leading axes):
matmul, dot, outer, trace, det, logdet, inv, solve, eigvalsh, eigh and norm.

Identities used by the rules (X̄ is the adjoint, Ẋ the tangent, ⟨A, B⟩ = tr AᵀB):

* ∂ det X = det X · X⁻ᵀ;  ∂ log det X = X⁻ᵀ;  the forward rules are
  det X · ⟨X⁻ᵀ, Ẋ⟩ and ⟨X⁻ᵀ, Ẋ⟩ (= tr X⁻¹Ẋ).
* Y = X⁻¹: X̄ = −Yᵀ Ḡ Yᵀ, Ẏ = −Y Ẋ Y — the output is reused, nothing is inverted twice.
* Y = A⁻¹B: B̄ = A⁻ᵀ Ḡ (one solve), Ā = −B̄ Yᵀ (reusing B̄ and Y); Ẏ = A⁻¹(Ḃ − Ȧ Y).
* S = V Λ Vᵀ symmetric: λ̄ ↦ S̄ = V diag(λ̄) Vᵀ; V̄ ↦ S̄ = V (F ∘ VᵀV̄) Vᵀ with
  F_ij = 1/(λ_j − λ_i) off the diagonal, 0 on it; λ̇ = diag(VᵀṠV), V̇ = V (F ∘ VᵀṠV).
  The eigenvalue rule needs V only, so first derivatives are exact at repeated
  eigenvalues; what meets F (second derivatives, eigenvector functions) is NaN at an
  exactly equal pair (see _gap_inverse), as svd's rules.
* ‖X‖₂ = √λ_max(XᵀX), through the top eigenpair's own rules (eigh_top), which need
  only λ_max simple: exact to any order however the other eigenvalues are tied.

Policies: an exactly singular matrix has inv = nan (not an exception), so det's
gradient there is nan and logdet's value is −inf with a nan gradient; logdet of a
matrix with negative determinant is nan (as log of a negative number) and its
gradient is that of log|det X|, X⁻ᵀ. Norms at 0 have value 0 and gradient 0 (the
minimum-norm subgradient).
"""
from __future__ import annotations

import builtins
import functools

import numpy as np

from flowgrad.engine.lazy_errors import guard, is_lazy, lazy_backend
from flowgrad.errors import ArgumentError

from .base import (NONDIFF, Op, apply, as_node, at_user_line, broadcast_shapes, float_dtype,
                   half_widened, keepdims_flag, normalize_axis, result_dtype, shape_error, sum_dtype)
from .complex import conj_of
from .elementwise import abs, equal, less_equal, sqrt, where
from .reductions import keep_dims, max, min, sum, unreduce
from .shape import expand_dims, reshape, squeeze, swap_last_axes, transpose
from .indexing import getitem
from .tensor import astype


def matmul_infer(a, b, op_name="matmul"):
    if not a.shape or not b.shape:
        raise shape_error(op_name, (a, b), "operands must be at least 1-d (use mul for scalars)")
    ka = a.shape[-1]
    kb = b.shape[0] if len(b.shape) == 1 else b.shape[-2]
    if ka is not None and kb is not None and ka != kb:
        raise shape_error(op_name, (a, b), f"inner dimensions differ ({ka} vs {kb})")
    if len(a.shape) == 1 and len(b.shape) == 1:
        return (), result_dtype(a, b)
    if len(b.shape) == 1:
        return a.shape[:-1], result_dtype(a, b)
    if len(a.shape) == 1:
        return b.shape[:-2] + b.shape[-1:], result_dtype(a, b)
    batch = broadcast_shapes(op_name, MatmulShape(a.shape[:-2]), MatmulShape(b.shape[:-2]))
    return batch + (a.shape[-2], b.shape[-1]), result_dtype(a, b)


class MatmulShape:
    """Just enough of a node for broadcast_shapes on batch dimensions."""
    def __init__(self, shape):
        self.shape, self.name = shape, "batch"


def matmul_da(g, ans, a, b):
    """Ā = Ḡ Bᵀ (1-d operands promoted to matrices, then squeezed back); Ḡ Bᴴ for a
    complex B (PyTorch's convention: ops/complex.py)."""
    b = conj_of(b)
    if len(a.shape) == 1 and len(b.shape) == 1:
        return g * b
    if len(b.shape) == 1:
        return expand_dims(g, -1) * b                      # outer product, batched
    gm = expand_dims(g, -2) if len(a.shape) == 1 else g
    out = matmul(gm, swap_last_axes(b))
    return squeeze(out, -2) if len(a.shape) == 1 else out


def matmul_db(g, ans, a, b):
    """B̄ = Aᵀ Ḡ (1-d operands promoted to matrices, then squeezed back); Aᴴ Ḡ for a
    complex A."""
    a = conj_of(a)
    if len(a.shape) == 1 and len(b.shape) == 1:
        return g * a
    if len(a.shape) == 1:
        return expand_dims(a, -1) * expand_dims(g, -2)     # outer product, batched
    if len(a.shape) == 2 and len(b.shape) == 1:
        return matmul(transpose(a), g)                     # the common X @ w case: one gemv
    gm = expand_dims(g, -1) if len(b.shape) == 1 else g
    out = matmul(swap_last_axes(a), gm)
    return squeeze(out, -1) if len(b.shape) == 1 else out


def _matmul_forward(xp, a, b):
    """xp.matmul, in numpy's dtype: dask contracts a chunked axis with a sum of per-chunk
    products that promotes integers and bools (int32 to int64, uint8 to uint64 without
    wrapping, bool to counts); cast back, that is numpy's result (modular for integers,
    nonzero for bools)."""
    out = xp.matmul(a, b)
    if lazy_backend(xp) is not None:
        want = np.result_type(a.dtype, b.dtype)
        if want.kind in "biu" and out.dtype != want:
            out = out.astype(want)
    return out


_matmul = Op("matmul", _matmul_forward, matmul_infer,
             vjp=(matmul_da, matmul_db), multilinear=True,
             doc="a @ b.  Ā = Ḡ Bᵀ, B̄ = Aᵀ Ḡ; forward rule Ȧ B + A Ḃ.")


def matmul(a, b):
    """a @ b with numpy's rules (1-d operands, broadcast batch axes).
    Ā = Ḡ Bᵀ, B̄ = Aᵀ Ḡ; forward rule Ȧ B + A Ḃ."""
    return apply(_matmul, a, b)


def mT(x):
    """The matrix transpose of a batch (last two axes swapped)."""
    return swap_last_axes(x)


# -- dot, outer: composites of matmul and mul -----------------------------------------

def dot(a, b):
    """numpy.dot: products of scalars, inner products, matrix products, and for N-d
    operands the sum over a's last axis and b's second-to-last. Built of matmul / mul,
    so its derivatives are theirs: ā = ḡ bᵀ, b̄ = aᵀ ḡ for matrices."""
    a, b = as_node(a), as_node(b)
    if not a.shape or not b.shape:
        return a * b
    if len(b.shape) == 1 or len(a.shape) <= 2 and len(b.shape) <= 2:
        return matmul(a, b)
    # a (..., k) · b (B..., k, n): give a one length-1 axis per batch axis of b and a
    # row axis, so matmul's broadcasting lays out a's axes, then B, then n
    na, nb = len(a.shape), len(b.shape)
    a_e = expand_dims(a, tuple(range(na - 1, na + nb - 2)))
    return squeeze(matmul(a_e, b), -2)


def outer(a, b):
    """numpy.outer: the inputs flattened, out[i, j] = a[i] b[j].  ā = Ḡ b, b̄ = Ḡᵀ a."""
    return reshape(a, (-1, 1)) * reshape(b, (1, -1))


# -- masks: identity / lower-triangle patterns shaped from a run-time array ------------

def _mask_forward(xp, x, kind, k, axis1, axis2):
    n1, n2 = x.shape[axis1], x.shape[axis2]
    dtype = x.dtype if x.dtype.kind in "fc" else xp.float64
    # a square pattern cut to n1 × n2: dask's eye(N, M=…) with N ≠ M builds a broken
    # graph ("Missing dependency"), and eye/tri(n)[:n1, :n2] is the same pattern
    n = n1 if n1 >= n2 else n2   # (max is the op here)
    m = xp.eye(n, k=k, dtype=dtype) if kind == "eye" else xp.tri(n, k=k, dtype=dtype)
    if (n1, n2) != (n, n):
        m = m[:n1, :n2]
    if axis1 > axis2:
        m = m.T
    shape = [1] * x.ndim
    shape[axis1], shape[axis2] = n1, n2
    return xp.reshape(m, tuple(shape))


def _mask_infer(x, kind, k, axis1, axis2):
    shape = [1] * len(x.shape)
    shape[axis1], shape[axis2] = x.shape[axis1], x.shape[axis2]
    return tuple(shape), float_dtype(x.dtype)


_mask = Op("mask", _mask_forward, _mask_infer, vjp=(NONDIFF,), jvp=(NONDIFF,),
           doc="An eye(n1, n2, k) or tri(n1, n2, k) pattern on axes (axis1, axis2) of x, "
               "length 1 on x's other axes (x is only a shape reference).")


def mask(x, kind="eye", k=0, axis1=-2, axis2=-1):
    nd = len(x.shape)
    return apply(_mask, x, kind=kind, k=int(k), axis1=axis1 % nd, axis2=axis2 % nd)


# -- trace ------------------------------------------------------------------------------

def _trace_infer(x, offset, axis1, axis2):
    shape = tuple(s for i, s in enumerate(x.shape) if i not in (axis1, axis2))
    return shape, sum_dtype(x.dtype)   # a sum: numpy's accumulator (uint8 → uint64)


def _trace_vjp(g, ans, x, offset, axis1, axis2):
    """∂ tr X = I: Ḡ spread along the (offset) diagonal."""
    return expand_dims(g, tuple(sorted((axis1, axis2)))) * \
        mask(x, "eye", offset, axis1, axis2)


_trace = Op("trace", lambda xp, x, offset, axis1, axis2: xp.trace(x, offset, axis1, axis2),
            _trace_infer, vjp=(_trace_vjp,), multilinear=True,
            doc="Sum of the diagonal.  ∂ tr X = I; the forward rule is tr Ẋ.")


def trace(x, offset=0, axis1=0, axis2=1):
    """numpy.trace: the sum along the ``offset`` diagonal of axes (axis1, axis2) — the
    first two by default, as numpy; pass ``axis1=-2, axis2=-1`` for a batch of matrices.
    ∂ tr X = I (on that diagonal): X̄ = v̄ on the diagonal, 0 elsewhere."""
    x = as_node(x)
    nd = len(x.shape)
    if nd < 2:
        raise shape_error("trace", (x,), "needs an array of at least 2 dimensions")
    a1, a2 = normalize_axis("trace", x, axis1)[0], normalize_axis("trace", x, axis2)[0]
    if a1 == a2:
        raise shape_error("trace", (x,), f"axis1 and axis2 are the same axis ({axis1})")
    return apply(_trace, x, offset=int(offset), axis1=a1, axis2=a2)


# -- square-matrix ops ------------------------------------------------------------------

def _square(name, x):
    if len(x.shape) < 2:
        raise shape_error(name, (x,), "needs a (batch of) square matrices, at least 2-d")
    n, m = x.shape[-2:]
    if n is not None and m is not None and n != m:
        raise shape_error(name, (x,), f"the matrices are not square ({n}×{m})")


def _batch_scalar_infer(name):
    def infer(x):
        _square(name, x)
        return x.shape[:-2], float_dtype(x.dtype)
    return infer


def _linalg_error(xp):
    return getattr(xp.linalg, "LinAlgError", np.linalg.LinAlgError)


def _whole(x):
    """x with each matrix in one chunk, for a chunked namespace (dask's LU needs square
    chunks: a matrix fed in chunks of rows could not be inverted or solved)."""
    if hasattr(x, "rechunk") and x.ndim:
        x = x.rechunk({x.ndim - 1: -1, **({x.ndim - 2: -1} if x.ndim > 1 else {})})
    return x


def _inv_forward(xp, x):
    """inv, with nan matrices (instead of an exception) for exactly singular ones."""
    x = _whole(x)
    if is_lazy(xp, x):
        # dask's inv raises when its task meets a singular matrix, past any try here:
        # numpy's kernel instead, per block (each holds whole matrices), so the NaN rule
        # and the values are numpy's; a failure names this node (guard)
        dtype = _inv_numpy(np.eye(1, dtype=x.dtype)).dtype
        return x.map_blocks(guard(_inv_numpy), dtype=dtype,
                            meta=np.empty((0,) * x.ndim, dtype))
    try:
        return xp.linalg.inv(x)
    except _linalg_error(xp):
        flat = xp.reshape(x, (-1,) + x.shape[-2:])
        out = xp.empty(flat.shape, dtype=xp.result_type(flat.dtype, xp.float64)
                       if flat.dtype.kind not in "fc" else flat.dtype)
        for k in range(flat.shape[0]):
            try:
                out[k] = xp.linalg.inv(flat[k])
            except _linalg_error(xp):
                out[k] = xp.nan
        return xp.reshape(out, x.shape)


def _inv_numpy(x):
    """numpy's inv kernel (module level: a task sent to another process pickles it)."""
    return _inv_forward(np, x)


def _inv_infer(x):
    _square("inv", x)
    return x.shape, float_dtype(x.dtype)


_inv = Op("inv", _inv_forward, _inv_infer,
          vjp=(lambda g, ans, x: -matmul(matmul(mT(ans), g), mT(ans)),),
          jvp=(lambda t, ans, x: -matmul(matmul(ans, t), ans),),
          doc="X⁻¹ (nan for an exactly singular X).  X̄ = −X⁻ᵀ Ḡ X⁻ᵀ, Ẏ = −X⁻¹ Ẋ X⁻¹, "
              "both reusing the output.")


def inv(x):
    """The inverse of a (batch of) square matrices; nan where a matrix is exactly singular.
    Y = X⁻¹: X̄ = −Yᵀ Ȳ Yᵀ, Ẏ = −Y Ẋ Y."""
    return apply(_inv, x)


def _det_vjp(g, ans, x):
    """∂ det X = det X · X⁻ᵀ."""
    return expand_dims(g * ans, (-2, -1)) * mT(inv(x))


def _det_jvp(t, ans, x):
    return ans * sum(mT(inv(x)) * t, (-2, -1))


_det = Op("det", lambda xp, x: xp.linalg.det(x), _batch_scalar_infer("det"),
          vjp=(_det_vjp,), jvp=(_det_jvp,),
          doc="det X.  ∂ det X = det X · X⁻ᵀ; forward rule det X · tr(X⁻¹ Ẋ). "
              "At an exactly singular X the value is 0 and the gradient nan.")


def det(x):
    """The determinant of a (batch of) square matrices.  ∂ det X = det X · X⁻ᵀ."""
    return apply(_det, x)


def _logdet_forward(xp, x):
    # through slogdet, so a huge or tiny determinant never over/underflows; a negative
    # determinant has no real log (nan, as numpy's log), a zero one gives −inf
    sign, logabs = xp.linalg.slogdet(x)
    return xp.where(sign < 0, xp.nan, logabs)


def _logdet_infer(x):
    # slogdet's sign is a unit complex number there, not ±1: `sign < 0` dropped it and
    # gave log|det X| as the value, silently (torch's logdet is the complex log)
    _no_complex("logdet", x, "the log of a complex determinant is complex")
    return _batch_scalar_infer("logdet")(x)


def _no_complex(name, x, why):
    if np.dtype(x.dtype).kind == "c":
        raise shape_error(name, (x,), f"complex values are not supported ({why})")


_logdet = Op("logdet", _logdet_forward, _logdet_infer,
             vjp=(lambda g, ans, x: expand_dims(g, (-2, -1)) * mT(inv(x)),),
             jvp=(lambda t, ans, x: sum(mT(inv(x)) * t, (-2, -1)),),
             doc="log det X, via slogdet.  ∂ log det X = X⁻ᵀ; forward rule tr(X⁻¹ Ẋ). "
                 "nan for det X < 0 (gradient still X⁻ᵀ, that of log|det X|), "
                 "−inf for a singular X (gradient nan).")


def logdet(x):
    """log det X of a (batch of) square matrices, computed through slogdet; real
    matrices only (complex is refused: its log det is complex).
    ∂ log det X = X⁻ᵀ."""
    return apply(_logdet, x)


# -- solve ------------------------------------------------------------------------------

def _solve_infer(a, b):
    _square("solve", a)
    n = a.shape[-1]
    if len(b.shape) == 1:   # numpy 2: a 1-d b is a vector, broadcast against a's batch
        if None not in (n, b.shape[0]) and n != b.shape[0]:
            raise shape_error("solve", (a, b), f"b has length {b.shape[0]}, a is {n}×{n}")
        return a.shape[:-1], float_dtype(result_dtype(a, b))
    if len(b.shape) < 2:
        raise shape_error("solve", (a, b), "b must be a vector or a (batch of) matrices")
    if None not in (n, b.shape[-2]) and n != b.shape[-2]:
        raise shape_error("solve", (a, b), f"b has {b.shape[-2]} rows, a is {n}×{n}")
    batch = broadcast_shapes("solve", MatmulShape(a.shape[:-2]), MatmulShape(b.shape[:-2]))
    return batch + b.shape[-2:], float_dtype(result_dtype(a, b))


def _solve_forward(xp, a, b):
    a, b = _whole(a), _whole(b)
    lazy = lazy_backend(xp)
    if lazy is not None and (is_lazy(xp, a) or is_lazy(xp, b)):
        # as inv: numpy's kernel (NaN for a singular matrix), as one task of the graph
        # (a and b's batches may be chunked differently)
        shape = _solve_shape(a.shape, b.shape)
        dtype = _solve_numpy(np.eye(1, dtype=a.dtype), np.ones(1, dtype=b.dtype)).dtype
        return lazy.task(_solve_task, [a, b], [shape], [dtype], inputs=True)[0]
    try:
        return xp.linalg.solve(a, b)
    except _linalg_error(xp):   # a singular matrix in the batch: nan there, as inv
        ai = _inv_forward(xp, a)
        return ai @ b if b.ndim > 1 else (ai @ b[..., None])[..., 0]


def _solve_shape(a, b):
    """solve's result shape for operand shapes ``a`` and ``b``; a batch length unknown
    yet (NaN: a dask array's) stays NaN (the task then runs when built, and measures)."""
    if len(b) == 1:
        return a[:-1]
    batch = a[:-2], b[:-2]
    if any(d != d for d in batch[0] + batch[1]):
        return (np.nan,) * builtins.max(len(a) - 2, len(b) - 2) + b[-2:]   # (max: the op's)
    return np.broadcast_shapes(*batch) + b[-2:]


def _solve_numpy(a, b):
    """numpy's solve kernel, for a lazy backend's task."""
    return _solve_forward(np, np.asarray(a), np.asarray(b))


def _solve_task(a, b):
    """``_solve_numpy`` as a task: its one result in a list."""
    return [_solve_numpy(a, b)]


def _col(v, b):
    """A 1-d right-hand side (and what is shaped like its result) as a column."""
    return expand_dims(v, -1) if len(b.shape) == 1 else v


def _uncol(v, b):
    return squeeze(v, -1) if len(b.shape) == 1 else v


def _solve_db(g, ans, a, b):
    """B̄ = A⁻ᵀ Ḡ."""
    return _uncol(solve(mT(a), _col(g, b)), b)


def _solve_da(g, ans, a, b):
    """Ā = −B̄ Yᵀ, reusing the output Y (B̄ is the same node as b's rule, merged by CSE)."""
    return -matmul(_col(_solve_db(g, ans, a, b), b), mT(_col(ans, b)))


def _solve_jvp_a(t, ans, a, b):
    """Ẏ = −A⁻¹ Ȧ Y."""
    return -_uncol(solve(a, matmul(t, _col(ans, b))), b)


_solve = Op("solve", _solve_forward, _solve_infer,
            vjp=(_solve_da, _solve_db),
            jvp=(_solve_jvp_a, lambda t, ans, a, b: solve(a, t)),
            doc="Y = A⁻¹B.  B̄ = A⁻ᵀḠ, Ā = −B̄Yᵀ; Ẏ = A⁻¹(Ḃ − ȦY).")


def solve(a, b):
    """The solution Y of A Y = B (numpy 2 rules: a 1-d b is one vector; batches broadcast).
    B̄ = A⁻ᵀ Ȳ (one solve), Ā = −B̄ Yᵀ; Ẏ = A⁻¹(Ḃ − Ȧ Y)."""
    return apply(_solve, a, b)


# -- symmetric eigenproblems -------------------------------------------------------------

def _eig_infer(x):
    _square("eigvalsh", x)
    return x.shape[:-1], float_dtype(x.dtype)


def _eigvecs_infer(x):
    _square("eigh", x)
    return x.shape, float_dtype(x.dtype)


def _gap_inverse(w):
    """F_ij = 1/(w_j − w_i) off the diagonal, 0 on it, and NaN where w_j = w_i exactly.

    Why NaN at an exact tie: the eigenvector (singular vector) rules meet F only in second
    derivatives of eigenvalue functions and in first derivatives of eigenvector
    functions, and there the true coefficient of a tied pair is a limit the rule cannot
    see. For g(λ) = Σ h(λᵢ) it is the divided difference (h′(λᵢ) − h′(λⱼ))/(λᵢ − λⱼ) →
    h″(λ), which depends on how λ̄ (or V̄) was made from λ, not on its value there; for a
    general function of the eigenvectors there is no derivative at all. A 0 (the old
    choice) was right only for g linear in the tied values, and silently wrong otherwise
    (Σ λᵢ² at S = I), so a tie makes the whole eigenvector term NaN, as PyTorch does."""
    gap = expand_dims(w, -2) - expand_dims(w, -1)
    same = equal(gap, 0)
    inverse = where(same, np.nan, 1 / where(same, 1.0, gap))
    return where(equal(mask(gap, "eye", 0), 1), 0.0, inverse)


def _eigvalsh_vjp(g, ans, s):
    """λ̄ ↦ S̄ = V diag(λ̄) Vᵀ."""
    v = apply(_eigvecs, s)
    return matmul(v * expand_dims(g, -2), mT(v))


def _eigvalsh_jvp(t, ans, s):
    """λ̇ = diag(Vᵀ Ṡ V)."""
    v = apply(_eigvecs, s)
    return sum(v * matmul(t, v), -2)


def _eigvecs_vjp(g, ans, s):
    """V̄ ↦ S̄ = V (F ∘ VᵀV̄) Vᵀ."""
    f = _gap_inverse(apply(_eigvalsh, s))
    return matmul(matmul(ans, f * matmul(mT(ans), g)), mT(ans))


def _eigvecs_jvp(t, ans, s):
    """V̇ = V (F ∘ VᵀṠV)."""
    f = _gap_inverse(apply(_eigvalsh, s))
    return matmul(ans, f * matmul(mT(ans), matmul(t, ans)))


def _finite_or_nan(xp, s, solver, tail):
    """``solver(s)``, with NaN for every matrix of the batch that holds a non-finite entry.

    LAPACK's answer there depends on where the entry sits and on the size: numpy's
    eigvalsh raises LinAlgError ("did not converge") for most, returns NaN for some and
    finite numbers for others ([[nan, 0], [0, 2]] gives [0, -0]). Such matrices are
    replaced by zeros before the solver sees them and their results set to NaN, so every
    backend, size and position gives the same answer, as det, inv and solve do (NaN in,
    NaN out). ``tail``: the number of trailing axes the result has per matrix."""
    ok = xp.all(xp.isfinite(s), axis=(-2, -1))
    if bool(xp.all(ok)):
        return solver(s)
    out = solver(xp.where(xp.reshape(ok, ok.shape + (1, 1)), s, 0))
    return xp.where(xp.reshape(ok, ok.shape + (1,) * tail), out, xp.nan)


# Both primitives take a *symmetric* S (the public functions symmetrize first), so their
# rules need only be right for symmetric tangents.
_eigvalsh = Op("eigvalsh", lambda xp, s: _finite_or_nan(xp, s, xp.linalg.eigvalsh, 1),
               _eig_infer,
               vjp=(_eigvalsh_vjp,), jvp=(_eigvalsh_jvp,),
               doc="Eigenvalues (ascending) of a symmetric S.  S̄ = V diag(λ̄) Vᵀ, "
                   "λ̇ = diag(VᵀṠV).")
_eigvecs = Op("eigh_vectors",
              lambda xp, s: _finite_or_nan(xp, s, lambda m: xp.linalg.eigh(m)[1], 2),
              _eigvecs_infer,
              vjp=(_eigvecs_vjp,), jvp=(_eigvecs_jvp,),
              doc="Eigenvectors (columns) of a symmetric S.  S̄ = V (F ∘ VᵀV̄) Vᵀ, "
                  "V̇ = V (F ∘ VᵀṠV), F_ij = 1/(λ_j − λ_i) (NaN where they are equal).")


# -- the top eigenpair alone (the spectral norm) --------------------------------------------
# λ = λ_max(S) and its eigenvector v, for S symmetric with a simple top eigenvalue:
#   λ̇ = vᵀ Ṡ v,  S̄ = λ̄ v vᵀ;   v̇ = K Ṡ v,  S̄ = (K v̄) vᵀ,  with K = B⁻¹ − v vᵀ and
#   B = λ I − S + v vᵀ (eigenvalues 1 for v, λ − λⱼ for the others: invertible exactly
#   when λ is simple). K = Σ_{j≠top} vⱼ vⱼᵀ / (λ − λⱼ) needs no other eigenvector, so the
#   rules (and theirs, to any order) are exact however the lower eigenvalues are tied —
#   where going through eigvalsh and eigh's F would meet NaN (‖xxᵀ‖₂ at x = e₁). At a tied
#   top, v and v̇ are not defined: v's rules give NaN there.

def _top_infer(s, part):
    _square("norm", s)
    # the Gram matrix is built with a plain transpose: a complex one is not Hermitian
    _no_complex("norm", s, "the spectral norm is √λ_max(XᴴX)")
    return (s.shape[:-2] if part == "w" else s.shape[:-1]), float_dtype(s.dtype)


def _top_forward(xp, s, part):
    if part == "w":
        return _finite_or_nan(xp, s, xp.linalg.eigvalsh, 1)[..., -1]
    return _finite_or_nan(xp, s, lambda m: xp.linalg.eigh(m)[1], 2)[..., -1]


def _top_parts(s):
    return apply(_eigtop, s, part="w"), apply(_eigtop, s, part="v")


def _top_k_apply(s, u):
    """K u = B⁻¹ u − v (vᵀ u) for a batch of vectors u, NaN where the top is tied."""
    w, v = _top_parts(s)
    vv = expand_dims(v, -1) * expand_dims(v, -2)
    b = mask(s, "eye", 0) * expand_dims(w, (-2, -1)) - s + vv
    out = squeeze(solve(b, expand_dims(u, -1)), -1) - v * sum(v * u, -1, True)
    n = s.shape[-1]
    if n is None or n < 2:
        return out
    second = getitem(apply(_eigvalsh, s), (Ellipsis, -2))
    return where(expand_dims(equal(second, w), -1), np.nan, out)


def _top_vjp(g, ans, s, part):
    w, v = _top_parts(s)
    if part == "w":                                  # S̄ = λ̄ v vᵀ
        return expand_dims(g, (-2, -1)) * (expand_dims(v, -1) * expand_dims(v, -2))
    return expand_dims(_top_k_apply(s, g), -1) * expand_dims(v, -2)    # (K v̄) vᵀ


def _top_jvp(t, ans, s, part):
    w, v = _top_parts(s)
    tv = squeeze(matmul(t, expand_dims(v, -1)), -1)   # Ṡ v
    if part == "w":
        return sum(v * tv, -1)                       # vᵀ Ṡ v
    return _top_k_apply(s, tv)                       # K Ṡ v


_eigtop = Op("eigh_top", _top_forward, _top_infer, vjp=(_top_vjp,), jvp=(_top_jvp,),
             doc="λ_max (part 'w') or its eigenvector (part 'v') of a symmetric S.  "
                 "S̄ = λ̄ v vᵀ, λ̇ = vᵀṠv; v̇ = K Ṡ v, S̄ = (K v̄) vᵀ, K = (λI − S + vvᵀ)⁻¹ − vvᵀ.")


def check_part(op_name, parts, a, part):
    """A result selector of a factorisation as its builder sets it: one of ``parts``.
    The op's ``check_attrs``: a graph file (io/opsig.py) may give no other."""
    if part not in parts:
        raise ArgumentError(f"{op_name}: part must be one of {parts}, got {part!r:.40}")


def _symmetric_from(x, uplo):
    """The symmetric matrix numpy's eigh sees: x's lower (or upper) triangle mirrored."""
    if uplo not in ("L", "U"):
        raise ArgumentError(f"UPLO must be 'L' or 'U', got {uplo!r}" + at_user_line())
    x = as_node(x)
    _square("eigvalsh", x)
    if uplo == "U":
        x = mT(x)
    return x * mask(x, "tri", 0) + mT(x * mask(x, "tri", -1))


def eigvalsh(x, UPLO="L"):
    """Eigenvalues, ascending, of the symmetric matrix whose lower (UPLO="L") or upper
    triangle is x's, as numpy.linalg.eigvalsh; batched. Gradients see only that triangle.
    First derivatives are exact at repeated eigenvalues; second derivatives meet the
    eigenvector rule and are NaN at an exact tie (their limit there, h″(λ) for Σ h(λᵢ), is
    not in the values). ∂λᵢ/∂S = vᵢ vᵢᵀ: S̄ = V diag(λ̄) Vᵀ; λ̇ = diag(Vᵀ Ṡ V).
    A matrix (of a batch) with a NaN or ±inf anywhere in it (the symmetrization reads both
    triangles) gives NaN eigenvalues, on every backend and path, where numpy's eigvalsh
    raises LinAlgError, or returns NaN or even finite numbers, depending on the entry."""
    return apply(_eigvalsh, _symmetric_from(x, UPLO))


def eigh(x, UPLO="L"):
    """(eigenvalues, eigenvectors as columns) of the symmetric matrix from x's lower or
    upper triangle, as numpy.linalg.eigh. Eigenvectors are defined up to sign: only
    sign-invariant functions of them (V diag(f(λ)) Vᵀ, |V|, …) are well defined.
    S̄ = V (diag(λ̄) + F ∘ VᵀV̄) Vᵀ with F_ij = 1/(λ_j − λ_i) off the diagonal, NaN where
    λ_j = λ_i exactly (eigenvectors have no derivative at a tie). A non-finite entry anywhere in a matrix makes its eigenvalues and eigenvectors NaN,
    as eigvalsh."""
    s = _symmetric_from(x, UPLO)
    return apply(_eigvalsh, s), apply(_eigvecs, s)


# -- norm -----------------------------------------------------------------------------

def _safe_divisor(d):
    """d with its zeros replaced by 1 (where's adjoint never reaches the replaced ones)."""
    return where(equal(d, 0), 1.0, d)


def _norm2_vjp(g, ans, x, axis, keepdims):
    """∂‖x‖ = x/‖x‖, and 0 at x = 0, in value and in every derivative (_masked_at_zero)."""
    n = keep_dims(ans, axis, keepdims)
    return unreduce(g, x, axis, keepdims) * _masked_at_zero(n, x / _safe_divisor(n))


def _norm2_jvp(t, ans, x, axis, keepdims):
    return _masked_at_zero(ans, sum(x * t, axis, keepdims) / _safe_divisor(ans))


def _masked_at_zero(n, v):
    """v, and 0 where the norm n is 0. In every direction ‖x‖ has a kink at 0 (‖s d‖ =
    |s| ‖d‖), so its second derivative there is abs's, 0, as std's at zero spread; the
    divisor's 1 alone left x/1 there, whose derivative I is the Hessian of ½‖x‖²."""
    return where(equal(n, 0), 0.0, v)


def _norm2_infer(x, axis, keepdims):
    from .reductions import reduced_shape
    # √Σx² is not numpy's √Σ|x|² for complex x (and its value would be complex): refused
    _no_complex("norm", x, "the 2-norm is √Σ|x|², not √Σx²")
    return reduced_shape(x.shape, axis, keepdims), float_dtype(x.dtype)


_norm2 = Op("norm2", lambda xp, x, axis, keepdims: half_widened(   # (x² of float16 > 255: inf)
    lambda v: xp.sqrt(xp.sum(v * v, axis=axis, keepdims=keepdims)), x),
            _norm2_infer, vjp=(_norm2_vjp,), jvp=(_norm2_jvp,),
            doc="√Σx² over axis (vector 2-norm, Frobenius).  ∂‖x‖ = x/‖x‖; 0 at x = 0.")


def _sqrt_at_zero_flat(v):
    """√v with derivative 0 (not ∞) where v = 0: the minimum-norm subgradient policy."""
    zero = equal(v, 0)
    return where(zero, 0.0, sqrt(where(zero, 1.0, v)))


def _spectral(x, r, c, keepdims):
    _no_complex("norm", x, "the spectral norm is √λ_max(XᴴX)")
    nd = len(x.shape)
    rest = tuple(i for i in range(nd) if i not in (r, c))
    m = transpose(x, rest + (r, c))
    rows, cols = m.shape[-2:]
    gram = matmul(m, mT(m)) if rows is not None and cols is not None and rows < cols \
        else matmul(mT(m), m)
    top = apply(_eigtop, gram, part="w")   # λ_max, with rules exact at lower ties
    out = _sqrt_at_zero_flat(top)
    return expand_dims(out, tuple(sorted((r, c)))) if keepdims else out


_VECTOR_ORDS = (None, 2, 1, np.inf)
_MATRIX_ORDS = (None, "fro", 2, 1, np.inf)


def norm(x, ord=None, axis=None, keepdims=False):
    """numpy.linalg.norm: vector norms (ord None/2, 1, inf) along one axis; matrix norms
    (None/"fro" Frobenius, 2 spectral, 1, inf) over two axes; with axis=None, a 1-d x is
    a vector, a 2-d x a matrix, and ord=None is the 2-norm of all entries. Batched.
    At 0 the value is 0 and the gradient 0 (the vector 2-norm's and Frobenius's second
    derivative there 0 too, abs's: ‖s d‖ = |s| ‖d‖ along each line). ∂‖x‖₂ = x/‖x‖₂, ∂‖X‖_F = X/‖X‖_F,
    ∂‖x‖₁ = sign x, ∂‖X‖₂ = u vᵀ (top singular vectors), through λ_max(XᵀX)'s own rules:
    exact to any order however the lower singular values are tied, NaN from the second
    order on where the top one is tied; the others through max/abs. Complex x is
    refused for the 2-norm, Frobenius and spectral norms (a ShapeError)."""
    x = as_node(x)
    keepdims = keepdims_flag("norm", keepdims)
    if x.dtype.kind in "biu":
        # numpy.linalg.norm takes an int or bool x as float64 first: x·x, |x| and the sums
        # in the int's own dtype wrapped (‖int8 [−128, 127]‖ was 5.83, ‖·‖∞ was 127 of
        # dtype int8, ‖·‖₁ an int64)
        x = astype(x, np.float64)
    nd = len(x.shape)
    if axis is None:
        if ord is None:
            return apply(_norm2, x, axis=tuple(range(nd)), keepdims=bool(keepdims))
        if nd not in (1, 2):
            raise shape_error("norm", (x,), f"ord={ord!r} with axis=None needs a 1-d or 2-d "
                              f"array, not {nd}-d")
        axis = tuple(range(nd))
    normalize_axis("norm", x, axis)   # type, range and repeat checks; the order below matters
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    axes = tuple(int(a) % nd for a in axes)
    if len(axes) == 1:
        return _vector_norm(x, ord, axes, keepdims)
    if len(axes) == 2:
        return _matrix_norm(x, ord, axes, keepdims)
    raise shape_error("norm", (x,), f"axis must be an int or a pair, got {axis}")


def _vector_norm(x, ord, axes, keepdims):
    if ord not in _VECTOR_ORDS:
        raise NotImplementedError(f"norm: vector ord {ord!r} is not supported "
                                  f"(use one of {_VECTOR_ORDS})")
    if ord is None or ord == 2:
        return apply(_norm2, x, axis=axes, keepdims=bool(keepdims))
    if ord == 1:
        return sum(abs(x), axes, keepdims)
    return max(abs(x), axes, keepdims)


def _matrix_norm(x, ord, axes, keepdims):
    if ord not in _MATRIX_ORDS:
        raise NotImplementedError(f"norm: matrix ord {ord!r} is not supported "
                                  f"(use one of {_MATRIX_ORDS})")
    r, c = axes
    if ord is None or ord == "fro":
        return apply(_norm2, x, axis=tuple(sorted(axes)), keepdims=bool(keepdims))
    if ord == 2:
        return _spectral(x, r, c, keepdims)
    # 1: the largest column sum of |x|; inf: the largest row sum
    inner, outer_axis = (r, c) if ord == 1 else (c, r)
    sums = sum(abs(x), inner, keepdims=True)
    out = max(sums, outer_axis, keepdims=True)
    return out if keepdims else squeeze(out, tuple(sorted(axes)))


# -- decompositions (issue 22): cholesky, qr, and lstsq through qr --------------------------
# Identities (Φ(X) = the lower triangle of X with its diagonal halved; sym(X) = (X + Xᵀ)/2;
# copyltu(M) = the symmetric matrix with M's lower triangle):
#
# * S = L Lᵀ (Cholesky): L̇ = L Φ(L⁻¹ Ṡ L⁻ᵀ); S̄ = sym(L⁻ᵀ Φ(Lᵀ L̄) L⁻¹), because
#   ⟨B, Φ(M)⟩ = ⟨Φ(B), M⟩ for symmetric M.
# * A = Q R (reduced, m ≥ n, full column rank): with C = Qᵀ Ȧ R⁻¹ and Ω = the skew part of
#   C's strict lower triangle (Ω = tril(C, −1) − tril(C, −1)ᵀ), Ṙ = (C − Ω) R and
#   Q̇ = Ȧ R⁻¹ − Q (C − Ω); Ā = (Q̄ + Q copyltu(M)) R⁻ᵀ with M = R R̄ᵀ − Q̄ᵀ Q.
# * lstsq: x = R⁻¹ Qᵀ b, a composite of qr, matmul and solve (its rules are theirs).
#
# The primitives see a symmetric S (cholesky symmetrizes x's lower triangle first, as
# numpy reads only that triangle), so their rules need only be right for symmetric Ṡ.

def _phi(x):
    """The lower triangle of x with its diagonal halved."""
    return x * (mask(x, "tri", 0) - 0.5 * mask(x, "eye", 0))


_LOWER_FLAG: dict = {}   # {namespace: whether its cholesky takes lower= (dask's; upper by default)}


def _cholesky_forward(xp, s):
    if is_lazy(xp, s):
        # numpy's kernel per block (each holds whole matrices): numpy's values, batches
        # (dask's own cholesky takes one matrix), and a matrix that is not positive
        # definite fails as this node's RunError (guard), wherever it is computed
        s = _whole(s)
        dtype = _cholesky_numpy(np.eye(1, dtype=s.dtype)).dtype
        return s.map_blocks(guard(_cholesky_numpy), dtype=dtype,
                            meta=np.empty((0,) * s.ndim, dtype))
    flag = _LOWER_FLAG.get(xp)
    if flag is None:
        import inspect
        try:
            flag = "lower" in inspect.signature(xp.linalg.cholesky).parameters
        except (TypeError, ValueError):   # a builtin without a signature: numpy's rule
            flag = False
        _LOWER_FLAG[xp] = flag
    s = _whole(s)
    return xp.linalg.cholesky(s, lower=True) if flag else xp.linalg.cholesky(s)


def _cholesky_numpy(s):
    """numpy's cholesky kernel (module level: a task sent to another process pickles it)."""
    return _cholesky_forward(np, s)


def _cholesky_infer(s):
    _square("cholesky", s)
    return s.shape, float_dtype(s.dtype)


def _cholesky_vjp(g, ans, s):
    li = inv(ans)
    p = matmul(matmul(mT(li), _phi(matmul(mT(ans), g))), li)
    return 0.5 * (p + mT(p))


def _cholesky_jvp(t, ans, s):
    li = inv(ans)
    return matmul(ans, _phi(matmul(matmul(li, t), mT(li))))


_cholesky = Op("cholesky", _cholesky_forward, _cholesky_infer,
               vjp=(_cholesky_vjp,), jvp=(_cholesky_jvp,),
               doc="L with S = L Lᵀ, S symmetric positive definite.  S̄ = sym(L⁻ᵀ Φ(Lᵀ L̄) "
                   "L⁻¹), L̇ = L Φ(L⁻¹ Ṡ L⁻ᵀ), Φ = lower triangle with the diagonal halved.")


def cholesky(x):
    """The lower-triangular L with L Lᵀ = S, S the symmetric matrix from x's lower
    triangle (numpy.linalg.cholesky reads only that triangle); batched. A matrix that is
    not positive definite is an error when the program runs (numpy's LinAlgError).
    S̄ = sym(L⁻ᵀ Φ(Lᵀ L̄) L⁻¹), L̇ = L Φ(L⁻¹ Ṡ L⁻ᵀ), Φ the lower triangle with the
    diagonal halved; gradients see only x's lower triangle."""
    x = as_node(x)
    _square("cholesky", x)
    return apply(_cholesky, x * mask(x, "tri", 0) + mT(x * mask(x, "tri", -1)))


def _qr_infer(a, part):
    if len(a.shape) < 2:
        raise shape_error("qr", (a,), "needs a (batch of) matrices, at least 2-d")
    m, n = a.shape[-2:]
    if m is None or n is None or m < n:
        raise shape_error("qr", (a,), f"needs m ≥ n known when the graph is built (a tall or "
                          f"square matrix; the wide case has no unique derivative), got "
                          f"{'×'.join(str(d) for d in (m, n))}")
    shape = a.shape if part == "q" else a.shape[:-2] + (n, n)
    return shape, float_dtype(a.dtype)


def _qr_forward(xp, a, part):
    q, r = xp.linalg.qr(_whole(a))
    return q if part == "q" else r


def _qr_parts(a):
    return apply(_qr, a, part="q"), apply(_qr, a, part="r")


def _skew_lower(c):
    low = c * mask(c, "tri", -1)
    return low - mT(low)


def _qr_jvp(t, ans, a, part):
    q, r = _qr_parts(a)
    ri = inv(r)
    c = matmul(matmul(mT(q), t), ri)
    k = c - _skew_lower(c)                  # Ṙ R⁻¹, upper triangular
    if part == "r":
        return matmul(k, r)
    return matmul(t, ri) - matmul(q, k)


def _copyltu(m):
    low = m * mask(m, "tri", -1)
    return low + mT(low) + m * mask(m, "eye", 0)


def _qr_vjp(g, ans, a, part):
    q, r = _qr_parts(a)
    if part == "q":
        inner = g + matmul(q, _copyltu(-matmul(mT(g), q)))
    else:
        inner = matmul(q, _copyltu(matmul(r, mT(g))))
    return mT(solve(r, mT(inner)))          # inner R⁻ᵀ, one triangular-shaped solve


_qr = Op("qr", _qr_forward, _qr_infer, vjp=(_qr_vjp,), jvp=(_qr_jvp,),
         doc="Q or R of the reduced A = Q R (m ≥ n).  Ā = (Q̄ + Q copyltu(R R̄ᵀ − Q̄ᵀ Q)) "
             "R⁻ᵀ; with C = Qᵀ Ȧ R⁻¹ and Ω = tril(C, −1) − tril(C, −1)ᵀ, Ṙ = (C − Ω) R, "
             "Q̇ = Ȧ R⁻¹ − Q (C − Ω).")
_qr.check_attrs = functools.partial(check_part, "qr", ("q", "r"))


def qr(x):
    """(Q, R), the reduced QR decomposition of a (batch of) m×n matrices with m ≥ n, as
    numpy.linalg.qr (R's diagonal may be negative: LAPACK's signs). Needs full column
    rank for derivatives. Ā = (Q̄ + Q copyltu(R R̄ᵀ − Q̄ᵀ Q)) R⁻ᵀ; Ṙ = (C − Ω) R and
    Q̇ = Ȧ R⁻¹ − Q (C − Ω), C = Qᵀ Ȧ R⁻¹, Ω = tril(C, −1) − tril(C, −1)ᵀ."""
    return _qr_parts(as_node(x))


def _rank_deficient(r, m):
    """Whether A = QR is numerically rank deficient: some |R_ii| ≤ m·ε·max|R_jj|.

    Why: QR of a rank-deficient A leaves R's diagonal at round-off (~1e-16, rarely exactly
    0), so solve(R, ·) gave ~1e14 with no sign of trouble. The bound is
    numpy.linalg.matrix_rank's (max(m, n)·ε·the largest, here on |diag R|, m ≥ n)."""
    d = abs(sum(r * mask(r, "eye", 0), -1))             # |R_ii|
    bound = float(m) * float(np.finfo(np.dtype(r.dtype)).eps)
    return less_equal(min(d, -1), bound * max(d, -1))


def _nan_where(cond, x, sources):
    """x, or NaN where the scalar ``cond`` holds, in value and in the derivatives with
    respect to every node of ``sources`` (the singular-matrix policy of solve and inv).

    The NaN enters as ``poison``, a where-branch built from the sources, never through x:
    where sends x a zero adjoint there, so no NaN reaches a solve (dask's LU refuses one:
    "array must not contain infs or NaNs"), and poison's own factor is 0, not NaN, when
    cond is false, so a zero adjoint times it stays 0."""
    nan_or_zero = astype(where(cond, np.nan, 0.0), x.dtype)   # x's float type, not float64
    poison = sum(sources[0]) * nan_or_zero
    for s in sources[1:]:
        poison = poison + sum(s) * nan_or_zero
    return where(cond, poison, x)


def lstsq(a, b):
    """The least-squares solution x of A x ≈ b (A m×n with m ≥ n and full column rank; b
    a vector or a matrix of right-hand sides): x = R⁻¹ Qᵀ b from A = Q R (a composite of
    qr, matmul and solve). A numerically rank-deficient A — some |R_ii| ≤ m·ε·max|R_jj|,
    numpy.linalg.matrix_rank's bound, ε of A's float type — gives NaN, value and
    gradients, as solve of a singular matrix. ∂x/∂b = A⁺ = R⁻¹ Qᵀ; ∂x/∂A through qr's
    and solve's rules.

    Only the solution is returned (numpy.linalg.lstsq also returns residuals, rank and
    singular values, and for a rank-deficient A the minimum-norm solution)."""
    a, b = as_node(a), as_node(b)
    if len(a.shape) != 2 or len(b.shape) not in (1, 2):
        raise shape_error("lstsq", (a, b), "needs a matrix a and a vector or matrix b")
    m, n = a.shape
    if m is None or n is None or m < n:
        raise shape_error("lstsq", (a, b), f"needs m ≥ n known when the graph is built (a "
                          f"tall or square a: a wide one is underdetermined, with many "
                          f"solutions), got {m}×{n}")
    if b.shape[0] is not None and m != b.shape[0]:
        raise shape_error("lstsq", (a, b), f"a has {m} rows, b has {b.shape[0]}")
    q, r = qr(a)
    deficient = _rank_deficient(r, m)
    # solve a well-posed stand-in there (R ↦ I), so no path meets a singular matrix
    x = solve(where(deficient, mask(r, "eye", 0), r), matmul(mT(q), b))
    return _nan_where(deficient, x, (a, b))


# -- svd (issue 22): reduced A = U diag(s) Vᵀ, k = min(m, n), distinct nonzero s ------------
# With dP = Uᵀ Ȧ V and F_ij = 1/(s_j² − s_i²) (0 on the diagonal, NaN at an exact tie):
#   ṡ = diag(dP);  U̇ = U (F ∘ (dP S + S dPᵀ)) + (I − UUᵀ) Ȧ V S⁻¹;
#   V̇ = V (F ∘ (S dP + dPᵀ S)) + (I − VVᵀ) Ȧᵀ U S⁻¹;
# and, transposed: s̄ ↦ U diag(s̄) Vᵀ; Ū ↦ U ((J + Jᵀ) S) Vᵀ + (I − UUᵀ) Ū S⁻¹ Vᵀ with
# J = F ∘ UᵀŪ; V̄ ↦ U (S (J + Jᵀ)) Vᵀ + U S⁻¹ V̄ᵀ (I − VVᵀ) with J = F ∘ VᵀV̄.
# F blows up where two singular values meet, S⁻¹ where one is 0: U and V (and second
# derivatives of s) are defined only for distinct, nonzero singular values; an exact tie
# gives NaN (not 0, which was silently wrong: Σ s² at A = I). s's own rule needs U and V
# only, so first derivatives of functions of s are exact at ties.

def _svd_infer(a, part):
    if len(a.shape) < 2:
        raise shape_error("svd", (a,), "needs a (batch of) matrices, at least 2-d")
    m, n = a.shape[-2:]
    if m is None or n is None:
        raise shape_error("svd", (a,), "needs the matrix sizes when the graph is built")
    k = m if m < n else n
    shape = {"u": a.shape[:-1] + (k,), "s": a.shape[:-2] + (k,),
             "vh": a.shape[:-2] + (k, n)}[part]
    return shape, float_dtype(a.dtype)


def _svd_forward(xp, a, part):
    u, s, vh = xp.linalg.svd(_whole(a), full_matrices=False)
    if part == "s":
        return s
    # each pair (uᵢ, vᵢ) is defined up to a common sign, which LAPACK and dask choose
    # differently: flip so that the largest-magnitude entry of each uᵢ is positive, the
    # same answer on every backend (ties between ±max keep the library's sign)
    mag = xp.abs(u)
    top = mag == xp.max(mag, axis=-2, keepdims=True)
    sign = xp.sign(xp.sum(xp.where(top, u, 0.0), axis=-2, keepdims=True))
    sign = xp.where(sign == 0, 1.0, sign)
    return u * sign if part == "u" else vh * xp.swapaxes(sign, -1, -2)


def _svd_parts(a):
    return tuple(apply(_svd, a, part=p) for p in ("u", "s", "vh"))


def _svd_jvp(t, ans, a, part):
    u, s, vh = _svd_parts(a)
    v = mT(vh)
    dp = matmul(matmul(mT(u), t), v)
    if part == "s":
        return sum(dp * mask(dp, "eye", 0), -1)
    f = _gap_inverse(s * s)
    row, col = expand_dims(s, -2), expand_dims(s, -1)      # S on the right, on the left
    m, n = a.shape[-2:]
    if part == "u":
        du = matmul(u, f * (dp * row + col * mT(dp)))
        if m > n:
            tv = matmul(t, v)
            du = du + (tv - matmul(u, matmul(mT(u), tv))) / row
        return du
    dv = matmul(v, f * (col * dp + mT(dp) * row))
    if n > m:
        tu = matmul(mT(t), u)
        dv = dv + (tu - matmul(v, matmul(vh, tu))) / row
    return mT(dv)


def _svd_vjp(g, ans, a, part):
    u, s, vh = _svd_parts(a)
    if part == "s":
        return matmul(u * expand_dims(g, -2), vh)
    f = _gap_inverse(s * s)
    row, col = expand_dims(s, -2), expand_dims(s, -1)
    m, n = a.shape[-2:]
    if part == "u":
        j = f * matmul(mT(u), g)
        out = matmul(matmul(u, (j + mT(j)) * row), vh)
        if m > n:
            out = out + matmul((g - matmul(u, matmul(mT(u), g))) / row, vh)
        return out
    v, vbar = mT(vh), mT(g)
    j = f * matmul(vh, vbar)
    out = matmul(matmul(u, col * (j + mT(j))), vh)
    if n > m:
        out = out + matmul(u, mT(vbar - matmul(v, matmul(vh, vbar))) / col)
    return out


_svd = Op("svd", _svd_forward, _svd_infer, vjp=(_svd_vjp,), jvp=(_svd_jvp,),
          doc="U, s or Vᵀ of the reduced A = U diag(s) Vᵀ.  Ā = U diag(s̄) Vᵀ for s; U's and "
              "Vᵀ's rules through F_ij = 1/(s_j² − s_i²) and S⁻¹ (distinct nonzero s).")
_svd.check_attrs = functools.partial(check_part, "svd", ("u", "s", "vh"))


def svd(x):
    """(U, s, Vh), the reduced singular value decomposition A = U diag(s) Vh of a (batch
    of) matrices, as numpy.linalg.svd(x, full_matrices=False); s descending; the sign
    of each pair (uᵢ, vᵢ) is chosen so that uᵢ's largest-magnitude entry is positive (the
    same on every backend, where numpy's is LAPACK's choice). Derivatives
    of U and Vh, and second derivatives of s, assume distinct, nonzero singular values (U
    and V are not unique otherwise; an exact tie gives NaN there, while first derivatives of
    functions of s alone stay exact), and only
    functions invariant to the sign of a pair (uᵢ, vᵢ) are well defined.  The rules:
    s̄ ↦ Ā = U diag(s̄) Vᵀ, ṡ = diag(Uᵀ Ȧ V); U̇ = U (F ∘ (dP S + S dPᵀ)) + (I − UUᵀ) Ȧ V S⁻¹
    with dP = Uᵀ Ȧ V, F_ij = 1/(s_j² − s_i²), and V̇ likewise."""
    return _svd_parts(as_node(x))
