"""Leaner numpy kernels for a few ops whose generic kernel goes through numpy's Python
layers (``np.mean`` → ``_methods._mean``, ``np.broadcast_to`` → stride tricks,
``np.result_type``, ``functools.partial`` …).

On small arrays those layers, not the arithmetic, are the cost of a step (3–5 µs
each in the linear-regression step at n = 10). Each kernel here calls the ufunc
method underneath directly and returns the same values, dtype and type (ndarray or
numpy scalar) — the tests compare generated code with the interpreter bit for bit.
What can be decided from the node's static shapes (the number of axes, which axes a
``sum_to`` reduces) is decided once, here. Only used by the generated code on the
numpy backend, and only for float results (numpy's integer sums promote; those keep
the generic kernel). Where the program does not hand a value out, a 0-d result may
come back as a numpy scalar instead of a 0-d array (``kernel(..., output=False)``).

:func:`shared_residuals` finds ``mse(y, t)`` steps whose reverse pass also computes
``y − t``: codegen then computes the residual once and hands it to
:func:`mse_of_residual` (the same subtraction, ``vdot`` and division as ``mse``'s
own kernel, so the same bits). :func:`shared_exps` finds ``bce_with_logits(z, t)`` and
``softplus(z)`` steps whose reverse pass also computes ``σ(z)``: both need exp(−|z|),
computed once (ops/losses.py's and ops/nn.py's formulas, the same ufuncs).
"""
from __future__ import annotations

import operator

import numpy as np

_add_reduce, _matmul, _vdot = np.add.reduce, np.matmul, np.vdot
_full, _broadcast_to, _asarray, _empty = np.full, np.broadcast_to, np.asarray, np.empty
_ndarray, _float64 = np.ndarray, np.float64
SMALL = 4096     # below this many entries a broadcast is materialised (cheaper than a view)


def _sum(axis, keepdims):
    def k(x):
        return _add_reduce(x, axis, None, None, keepdims)
    return k


def _mean(axis, keepdims):
    def k(x):
        n = 1
        shape = x.shape
        for a in axis:
            n *= shape[a]
        r = _add_reduce(x, axis, None, None, keepdims)
        return r / n
    return k


def _reduced_size(axis, output):
    """The count as a 0-d array, or — when the program does not hand it out — as a numpy
    scalar of that dtype: the same value wherever it is used (a divisor), cheaper to
    make, and a 0-d division by it then runs on scalars (``_scalar_div``)."""
    if len(axis) == 1 and not output:
        a0 = axis[0]
        return lambda x: x.dtype.type(x.shape[a0])

    def k(x):
        n = 1
        shape = x.shape
        for a in axis:
            n *= shape[a]
        return _asarray(n, dtype=x.dtype) if output else x.dtype.type(n)
    return k


def _scalar_div():
    """``a / b`` for 0-d operands on numpy scalars (0-d arrays unwrapped): the same IEEE
    division in the same dtype as the ufunc on 0-d arrays, which also returns a numpy
    scalar, at a quarter of its cost."""
    def k(a, b):
        if type(a) is _ndarray:
            a = a[()]
        if type(b) is _ndarray:
            b = b[()]
        return a / b
    return k


def _broadcast_like():
    def k(x, ref):
        shape = ref.shape
        if getattr(x, "shape", None) == shape:
            return x
        # a small broadcast is cheaper to fill than to build as a strided view
        return _full(shape, x) if ref.size <= SMALL else _broadcast_to(x, shape)
    return k


def _sum_to(shape, x_shape=None):
    """ops/broadcast.py's sum_to: the axes it reduces are static when no axis of the
    target is a 1 that x may (at run time) fill with a longer length."""
    if x_shape is not None and 1 not in shape:
        lead = len(x_shape) - len(shape)
        axes = tuple(range(lead))
        if not axes:
            return lambda x: x
        if not shape:                  # everything, into a 0-d array (the generic reshape's)

            def k(x):
                return _add_reduce(x, axes, None, _empty((), x.dtype))
            return k

        def k(x):                      # the leading axes only: keepdims and reshape undone
            return _add_reduce(x, axes, None, None, False)
        return k

    def k(x):
        lead = x.ndim - len(shape)
        xs = x.shape
        axes = tuple(range(lead)) + tuple(
            lead + i for i, s in enumerate(shape) if s == 1 and xs[lead + i] != 1)
        if axes:
            x = _add_reduce(x, axes, None, None, True)
        if lead:
            x = x.reshape(x.shape[lead:])
        return x
    return k


def _transpose(axes):
    if axes == (1, 0):
        return operator.attrgetter("T")       # a 2-d x: the same view as x.transpose(1, 0)

    def k(x):
        return x.transpose(axes)
    return k


def _expand_dims(axis, ndim):
    """``x[index]`` with None at the new axes: the view numpy's expand_dims returns,
    without its Python-level axis normalisation (~3 µs a call: a scan body's gradient
    runs it once per iteration)."""
    axes = axis if isinstance(axis, tuple) else (axis,)
    out = ndim + len(axes)
    new = {a % out for a in axes}
    index = tuple(None if a in new else slice(None) for a in range(out))

    def k(x):
        if type(x) is _ndarray:
            return x[index]
        return np.expand_dims(x, axis)
    return k


def _linear(in_shapes, in_dtypes=None, dtype=None):
    """``x @ w + b`` for 1-d or wider x and w (a 0-d operand keeps the generic kernel):
    matmul, then the bias added in place when it cannot change z's dtype (the generic
    kernel's test, np.result_type, costs more than the addition on small arrays)."""
    if len(in_shapes) < 2 or not in_shapes[0] or not in_shapes[1]:
        return None
    if len(in_shapes) == 2:
        return _matmul
    result_type = np.result_type
    if in_dtypes is not None and (len(in_shapes[0]) > 1 or len(in_shapes[1]) > 1) \
            and np.dtype(in_dtypes[2]) == dtype == result_type(in_dtypes[0], in_dtypes[1]):
        def k(x, w, b):      # z ≥ 1-d of the result's dtype, b of it too: the values'
            z = _matmul(x, w)  # dtypes are the nodes' (the binders cast or refuse)
            z += b
            return z
        return k

    def k(x, w, b):
        z = _matmul(x, w)
        if type(z) is _ndarray and z.ndim and (
                (type(b) is _ndarray and b.dtype is z.dtype) or z.dtype == result_type(z, b)):
            z += b           # as the generic kernel: z is fresh, b never enlarges it
            return z
        return z + b
    return k


def _as_float(d):
    if type(d) is not _ndarray:
        d = _asarray(d)
    return d if d.dtype.kind in "fc" else d.astype(_float64)


def mse_of_residual(reduction, residual_dtype=None, residual_shape=None):
    """``mse``'s kernel after its subtraction: the residual ``d = y − t`` in, the loss out
    (a residual known to be float needs no conversion: numpy scalars have vdot and size).
    A real 1-d residual (a fresh, contiguous array) takes ``d.dot(d)``: numpy's vdot
    and dot of two real vectors call the same dtype ``dotfunc`` (BLAS ``ddot``/``sdot``),
    so the same bits, and the method skips vdot's ravel (~0.15 µs of a 10-entry step)."""
    if reduction == "none":
        return None
    floats = residual_dtype is not None and np.dtype(residual_dtype).kind in "fc"
    if floats and np.dtype(residual_dtype).kind == "f" and residual_shape is not None \
            and len(residual_shape) == 1:
        if reduction == "sum":
            return lambda d: d.dot(d)
        return lambda d: d.dot(d) / d.size
    if reduction == "sum":
        if floats:
            return lambda d: _vdot(d, d)

        def k(d):
            d = _as_float(d)
            return _vdot(d, d)
        return k
    if floats:
        return lambda d: _vdot(d, d) / d.size

    def k(d):
        d = _as_float(d)
        return _vdot(d, d) / d.size
    return k


def _mse(reduction, exact=False):
    """``exact``: the operands may both be ints or bools, which the op subtracts in
    float64 (ops/losses.py: in their own dtype the difference wraps)."""
    kr = mse_of_residual(reduction)
    if kr is None:
        return None
    subtract = np.subtract
    if not exact:
        def k(y, t):
            return kr(subtract(y, t))
        return k

    def k_exact(y, t):
        if _asarray(y).dtype.kind in "biu" and _asarray(t).dtype.kind in "biu":
            y, t = _asarray(y, _float64), _asarray(t, _float64)
        return kr(subtract(y, t))
    return k_exact


def kernel(name, attrs, dtype, in_shapes=None, in_dtypes=None, output=True):
    """A lean kernel for op ``name`` with ``attrs``, result ``dtype`` and (when known)
    the static shapes and dtypes of its inputs, or None. ``output=False`` says the
    program does not hand the value out (its type may then differ, not its value).
    None for float16 results too: the op's own kernels add half floats in float32
    (ops.base.summed), where ``add.reduce`` and ``vdot`` add them in float16."""
    if np.dtype(dtype).kind != "f" or dtype == np.float16:
        return None
    if name == "sum":
        return _sum(attrs["axis"], attrs["keepdims"])
    if name == "mean":
        # np.mean sums integers and bools in float64 and float16 in float32; add.reduce
        # would sum them in their own dtype (int64 wraps: the mean of [2⁶², 2⁶²] came
        # out negative; float16 overflows): only a float32/float64 x sums as np.mean does
        if in_dtypes is None or np.dtype(in_dtypes[0]) != np.dtype(dtype) or \
                np.dtype(dtype) not in (np.dtype(np.float32), np.dtype(np.float64)):
            return None
        return _mean(attrs["axis"], attrs["keepdims"])
    if name == "reduced_size":
        return _reduced_size(attrs["axis"], output)
    if name == "div" and in_shapes is not None and in_shapes == [(), ()] and not output:
        return _scalar_div()
    if name == "broadcast_like":
        return _broadcast_like()
    if name == "sum_to":
        return _sum_to(attrs["shape"], in_shapes[0] if in_shapes else None)
    if name == "transpose":
        return _transpose(attrs["axes"])
    if name == "expand_dims" and in_shapes is not None:
        return _expand_dims(attrs["axis"], len(in_shapes[0]))
    if name == "matmul":
        return _matmul
    if name == "linear" and in_shapes is not None:
        return _linear(in_shapes, in_dtypes, np.dtype(dtype))
    if name == "mse":
        exact = in_dtypes is None or all(np.dtype(d).kind in "biu" for d in in_dtypes)
        return _mse(attrs["reduction"], exact)
    return None


def shared_residuals(steps, plan):
    """{mse step: (sub step, kernel)} for each ``mse(y, t)`` (mean or sum) whose ``y − t``
    a later plan step also computes (its reverse rule builds that node): computed at the
    mse step and passed to the kernel, :func:`mse_of_residual`. ``steps`` are the plan's
    (op, attrs, result dtype[, result shape]), ``plan`` its ``Step`` records
    (flowgrad/engine/plan.py)."""
    subs = {}
    for k, (op, attrs, dtype, *_) in enumerate(steps):
        if op.name == "sub":
            subs.setdefault(plan[k].ins, k)
    out = {}
    for k, (op, attrs, dtype, *_) in enumerate(steps):
        # (not float16: the op's kernel sums its squares in float32, vdot in float16)
        if op.name != "mse" or attrs.get("reduction") == "none" or dtype is None \
                or np.dtype(dtype).kind != "f" or dtype == np.float16:
            continue
        j = subs.get(plan[k].ins)
        # (an int residual is the wrapped difference, not the op's float64 one)
        if j is not None and j > k and steps[j][2] is not None \
                and np.dtype(steps[j][2]).kind in "fc":
            out[k] = (j, mse_of_residual(attrs["reduction"], *steps[j][2:4]))
    return out


def bce_and_sigmoid(reduction):
    """``(bce_with_logits(z, t), σ(z))`` from one exp(−|z|): ops/losses.py's own
    ``bce_and_sigmoid`` (``bce_of`` and ops/nn.py's ``sigmoid_of``, the two ops' kernels
    after their exp), so the same bits. Written out of place: reusing the temporaries
    in place (``exp(e, out=e)`` …) measured 25 % slower on 10⁵ entries here."""
    from ..ops.losses import bce_and_sigmoid as shared

    def k(z, t):
        return shared(np, z, t, reduction)
    return k


def softplus_and_sigmoid():
    """``(softplus(x), σ(x))`` from one exp(−|x|) (ops/nn.py's, as for bce)."""
    from ..ops.nn import softplus_and_sigmoid as shared

    def k(x):
        return shared(np, x)
    return k


def shared_exps(steps, plan):
    """{bce_with_logits or softplus step: (σ step, kernel)} for each whose ``σ(z)`` of the
    same z a later plan step computes (their reverse and forward rules build that node):
    both values come from one kernel (:func:`bce_and_sigmoid`,
    :func:`softplus_and_sigmoid`) at the first step. ``steps`` and ``plan`` as for
    :func:`shared_residuals`."""
    sigmoids = {}
    for k, (op, attrs, dtype, *_) in enumerate(steps):
        if op.name == "sigmoid":
            sigmoids.setdefault(plan[k].ins[0], k)
    out = {}
    for k, (op, attrs, dtype, *_) in enumerate(steps):
        if op.name not in ("bce_with_logits", "softplus") or dtype is None \
                or np.dtype(dtype).kind != "f":
            continue
        j = sigmoids.get(plan[k].ins[0])
        if j is not None and j > k:
            out[k] = (j, bce_and_sigmoid(attrs["reduction"]) if op.name == "bce_with_logits"
                      else softplus_and_sigmoid())
    return out
