"""The table from flowgrad ops to ONNX (opset 18) nodes, used by onnx_export.

Each converter ``conv(e, **attrs)`` writes ONNX nodes for ``e.node`` through the
Emitter ``e`` (inputs with ``e.arg(k, dtype)``) and returns the output tensor's name.
Ops whose value needs care are written in the same stable form as their flowgrad
kernels — sigmoid and softplus through exp(−|x|), log1p without cancellation,
logsumexp shifted by its max — so a float64 program matches to rounding.

``bce_with_logits``, ``linear``, ``mse``, ``l2`` and ``softmax_cross_entropy`` are
exported through their ``decompose`` (into the stable ops here). Ops with no ONNX
counterpart (inv, solve, logdet, eigvalsh, eigh, eigh_top, and basis_map,
which runs a compiled sub-program per basis vector for jacobian/hessian) are absent:
the exporter then tries ``op.decompose`` and otherwise names the op and the node.
"""
from __future__ import annotations

import numpy as np

from flowgrad.ops.base import result_dtype

from .onnx_types import compute_dtype

CONVERTERS: dict = {}


def converts(*names):
    def register(fn):
        for name in names:
            CONVERTERS[name] = fn
        return fn
    return register


def _simple(op_type, compute=None, kind=None):
    """Every input cast to the node's dtype (or to ``compute(node)``), one ONNX node;
    ``kind`` ("ring", "order"): computed in a wider dtype where the operator lacks the
    node's (Emitter.typed, onnx_types)."""
    def conv(e, **attrs):
        dtype = compute(e.node) if compute else None
        if kind == "compare":      # a bool result: operands in a dtype the operator takes
            dtype = compute_dtype(op_type, dtype, "order", e.opset)
        ins = [e.arg(k, dtype) for k in range(len(e.node.inputs))]
        if kind in (None, "compare"):
            return e.op(op_type, ins)
        return e.typed(op_type, ins, e.node.dtype, kind)
    return conv


_RING = {"add": "Add", "sub": "Sub", "mul": "Mul", "neg": "Neg"}
_ORDER = {"maximum": "Max", "minimum": "Min", "abs": "Abs", "sign": "Sign"}
for _name, _onnx_op in {"div": "Div", "exp": "Exp", "log": "Log", "sqrt": "Sqrt",
                        "tanh": "Tanh", "sin": "Sin", "cos": "Cos", "det": "Det"}.items():
    CONVERTERS[_name] = _simple(_onnx_op)
for _name, _onnx_op in _RING.items():
    CONVERTERS[_name] = _simple(_onnx_op, kind="ring")
for _name, _onnx_op in _ORDER.items():
    CONVERTERS[_name] = _simple(_onnx_op, kind="order")


@converts("relu")
def _relu(e):
    # onnxruntime has no int16 or int64 Relu: max(x, 0), which it has, is the same
    from .onnx_types import accepts
    dtype = e.node.dtype
    if accepts("Relu", dtype, e.opset):
        return e.op("Relu", [e.arg(0)])
    return e.typed("Max", [e.arg(0), e.const(0, dtype)], dtype, "order")


@converts("pow")
def _pow(e):
    """Float powers are ONNX's Pow. onnxruntime computes an integer Pow through float64
    (3**39 in int64 comes out 11 short) and never wraps as numpy does, so an integer
    power by a Python int n ≥ 0 is written as numpy computes it, by repeated squaring
    in the node's dtype (Mul wraps modulo 2^k, as numpy); other integer powers are
    refused."""
    dtype = e.node.dtype
    if dtype.kind not in "iub":
        return e.op("Pow", [e.arg(0), e.arg(1)])
    ex = e.node.inputs[1]
    n = ex.more["value"] if ex.weak else None
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 0:
        from .onnx_export import OnnxExportError
        where = f", built at {e.node.where}" if e.node.where else ""
        raise OnnxExportError(
            f"node {e.node.name!r} ({dtype} ** {ex.name!r}{where}) is not exported: ONNX "
            "runtimes compute an integer Pow through floating point (inexact past 2**53, "
            "no wrap-around); only an integer power by a Python int ≥ 0 is exported "
            "exactly (x ** 3); cast to float (fg.astype) for others")
    return int_power(e, e.arg(0), int(n), dtype)


def int_power(e, x, n, dtype):
    """x ** n (n ≥ 0) by repeated squaring, in ``dtype``'s wrap-around arithmetic."""
    result = None
    while n:
        if n & 1:
            result = x if result is None else e.typed("Mul", [result, x], dtype, "ring")
        n >>= 1
        if n:
            x = e.typed("Mul", [x, x], dtype, "ring")
    if result is None:                      # x ** 0 is 1, even for x = 0 (numpy)
        value = e.onnx.numpy_helper.from_array(np.ones(1, dtype))
        return e.op("ConstantOfShape", [e.op("Shape", [x])], value=value)
    return result


@converts("matmul")
def _matmul(e):
    # 1-d operands are promoted to matrices explicitly, as numpy does implicitly:
    # onnxruntime (1.32) fuses Transpose into a MatMul with a 1-d right operand wrongly
    a_nd, b_nd = (len(x.shape) for x in e.node.inputs)
    a, b = e.arg(0), e.arg(1)
    if a_nd > 1 and b_nd > 1:
        return e.typed("MatMul", [a, b], e.node.dtype, "ring")
    if a_nd == 1:
        a = e.op("Unsqueeze", [a, e.ints([0])])
    if b_nd == 1:
        b = e.op("Unsqueeze", [b, e.ints([1])])
    out = e.typed("MatMul", [a, b], e.node.dtype, "ring")
    drop = ([-2] if a_nd == 1 else []) + ([-1] if b_nd == 1 else [])
    return e.op("Squeeze", [out, e.ints(drop)])


def _promoted(node):
    return result_dtype(*node.inputs)


for _name, _onnx_op in {"greater": "Greater", "greater_equal": "GreaterOrEqual",
                        "less": "Less", "less_equal": "LessOrEqual", "equal": "Equal"}.items():
    CONVERTERS[_name] = _simple(_onnx_op, _promoted, "compare")


@converts("not_equal")
def _not_equal(e):
    dtype = compute_dtype("Equal", _promoted(e.node), "order", e.opset)
    return e.op("Not", [e.op("Equal", [e.arg(0, dtype), e.arg(1, dtype)])])


@converts("where")
def _where(e):
    c = e.arg(0, bool)
    if e.node.dtype == np.bool_:    # onnxruntime has no bool Where: (c ∧ a) ∨ (¬c ∧ b)
        return e.op("Or", [e.op("And", [c, e.arg(1)]),
                           e.op("And", [e.op("Not", [c]), e.arg(2)])])
    return e.typed("Where", [c, e.arg(1), e.arg(2)], e.node.dtype, "order", data=(1, 2))


# -- stable elementwise functions --------------------------------------------------------

def log1p(e, x, dtype):
    """log(1+x) to full precision without a Log1p op: u = 1+x; log(u)·x/(u−1), and x
    itself where u rounds to 1 (the classic correction for the rounding of 1+x)."""
    one = e.const(1, dtype)
    u = e.op("Add", [one, x])
    d = e.op("Sub", [u, one])
    small = e.op("Equal", [d, e.const(0, dtype)])
    safe_d = e.op("Where", [small, one, d])
    big = e.op("Mul", [e.op("Log", [u]), e.op("Div", [x, safe_d])])
    return e.op("Where", [small, x, big])


def _exp_neg_abs(e, x):
    return e.op("Exp", [e.op("Neg", [e.op("Abs", [x])])])


@converts("log1p")
def _log1p(e):
    return log1p(e, e.arg(0), e.node.dtype)


@converts("sigmoid")
def _sigmoid(e):
    # e = exp(−|x|) never overflows: σ = 1/(1+e) for x ≥ 0, e/(1+e) below
    dtype = e.node.dtype
    x = e.arg(0)
    ex = _exp_neg_abs(e, x)
    num = e.op("Where", [e.op("GreaterOrEqual", [x, e.const(0, dtype)]), e.const(1, dtype), ex])
    return e.op("Div", [num, e.op("Add", [e.const(1, dtype), ex])])


def softplus(e, x, dtype):
    """max(x, 0) + log1p(exp(−|x|)): finite and accurate for any x."""
    return e.op("Add", [e.op("Max", [x, e.const(0, dtype)]),
                        log1p(e, _exp_neg_abs(e, x), dtype)])


@converts("softplus")
def _softplus(e):
    return softplus(e, e.arg(0), e.node.dtype)


@converts("tie_weight")
def _tie_weight(e):
    dtype, cmp = e.node.dtype, _promoted(e.node)
    x, y = e.arg(0, cmp), e.arg(1, cmp)
    half = e.op("Where", [e.op("Equal", [x, y]), e.const(0.5, dtype), e.const(0, dtype)])
    return e.op("Where", [e.op("Greater", [x, y]), e.const(1, dtype), half])


# -- reductions ---------------------------------------------------------------------------

_REDUCE_KIND = {"ReduceSum": "ring", "ReduceProd": "ring", "ReduceMax": "order"}


def _refuse_inexact(e, what):
    from .onnx_export import OnnxExportError
    where = f", built at {e.node.where}" if e.node.where else ""
    raise OnnxExportError(
        f"node {e.node.name!r} ({e.node.op.name} in {e.node.dtype}{where}) is not exported: "
        f"onnxruntime's integer {what} accumulates in floating point (2**53 + 1 + 1 + 1 "
        "comes out 2**53 + 4, an overflow saturates) where numpy adds exactly and wraps; "
        "cast to float (fg.astype) to export it")


def int_sum(e, x, shape, axes, keepdims, dtype):
    """An integer sum over ``axes`` of ``x`` (shaped ``shape``) as a MatMul against ones:
    onnxruntime's integer ReduceSum accumulates in double (inexact past 2**53,
    saturating on overflow), its integer MatMul adds exactly and wraps as numpy."""
    nd = len(shape)
    axes = sorted(a % nd for a in axes)
    kept = [a for a in range(nd) if a not in axes]
    if kept + axes != list(range(nd)):
        x = e.op("Transpose", [x], perm=kept + axes)
    dims = [shape[a] for a in axes]
    k = int(np.prod(dims)) if None not in dims else -1
    wide = compute_dtype("MatMul", dtype, "ring", e.opset)
    rows = e.op("Reshape", [e.cast(x, dtype, wide), e.ints([0] * len(kept) + [1, k])])
    if k >= 0:
        ones = e.const(np.ones((k, 1), wide))
    else:
        length = e.op("Gather", [e.op("Shape", [rows]), e.ints([-1])], axis=0)
        ones = e.op("Expand", [e.const(np.ones((1, 1), wide)),
                               e.op("Concat", [length, e.ints([1])], axis=0)])
    out = e.op("Squeeze", [e.op("MatMul", [rows, ones]), e.ints([-2, -1])])
    out = e.cast(out, wide, dtype)
    return e.op("Unsqueeze", [out, e.ints(axes)]) if keepdims else out


def reduce(e, op_type, x, axes, keepdims, dtype=None, shape=None):
    """``op_type`` over ``axes`` of ``x`` (of ``dtype`` and ``shape``, default input 0's
    shape and the node's dtype)."""
    if not axes:          # numpy: reducing over no axes is the identity
        return x
    dtype = np.dtype(e.node.dtype if dtype is None else dtype)
    if dtype.kind in "iub" and op_type == "ReduceSum":
        shape = e.node.inputs[0].shape if shape is None else shape
        return int_sum(e, x, shape, axes, keepdims, dtype)
    if dtype.kind in "iu" and op_type == "ReduceProd":
        _refuse_inexact(e, "ReduceProd")
    kind = _REDUCE_KIND.get(op_type)
    if kind is None:
        return e.op(op_type, [x, e.ints(axes)], keepdims=int(bool(keepdims)))
    return e.typed(op_type, [x, e.ints(axes)], dtype, kind, data=(0,),
                   keepdims=int(bool(keepdims)))


@converts("sum")
def _sum(e, axis, keepdims):
    return reduce(e, "ReduceSum", e.arg(0), axis, keepdims)


@converts("mean")
def _mean(e, axis, keepdims):
    return reduce(e, "ReduceMean", e.arg(0), axis, keepdims)


@converts("max")
def _max(e, axis, keepdims):
    return reduce(e, "ReduceMax", e.arg(0), axis, keepdims)


@converts("norm2")
def _norm2(e, axis, keepdims):
    x = e.arg(0)
    return e.op("Sqrt", [reduce(e, "ReduceSum", e.op("Mul", [x, x]), axis, keepdims)])


@converts("logsumexp")
def _logsumexp(e, axis, keepdims):
    # shift by the max; a max of ±inf (or nan) is replaced by 0, as flowgrad's kernel does:
    # m − m is 0 exactly when m is finite
    dtype = e.node.dtype
    x = e.arg(0)
    if not axis:
        return x
    m = e.op("ReduceMax", [x, e.ints(axis)], keepdims=1)
    finite = e.op("Equal", [e.op("Sub", [m, m]), e.const(0, dtype)])
    m = e.op("Where", [finite, m, e.const(0, dtype)])
    s = e.op("ReduceSum", [e.op("Exp", [e.op("Sub", [x, m])]), e.ints(axis)], keepdims=1)
    out = e.op("Add", [e.op("Log", [s]), m])
    return out if keepdims else e.op("Squeeze", [out, e.ints(axis)])


@converts("reduced_size")
def _reduced_size(e, axis):
    dims = [e.node.inputs[0].shape[a] for a in axis]
    if None not in dims:
        return e.const(int(np.prod(dims)), e.node.dtype)
    picked = e.op("Gather", [e.shape_of(0), e.ints(axis)], axis=0)
    return e.cast(e.op("ReduceProd", [picked], keepdims=0), np.int64, e.node.dtype)


def _unreduced(e, ans, axis, keepdims):
    return ans if keepdims or not axis else e.op("Unsqueeze", [ans, e.ints(axis)])


@converts("max_weights")
def _max_weights(e, axis, keepdims):
    dtype = e.node.dtype
    x = e.arg(0)
    hit = e.cast(e.op("Equal", [x, _unreduced(e, e.arg(1), axis, keepdims)]), bool, dtype)
    if not axis:
        return e.op("Div", [hit, hit])
    return e.op("Div", [hit, e.op("ReduceSum", [hit, e.ints(axis)], keepdims=1)])


# -- shapes --------------------------------------------------------------------------------

@converts("reshape")
def _reshape(e, shape):
    extra = {"allowzero": 1} if 0 in shape and -1 not in shape else {}
    return e.op("Reshape", [e.arg(0), e.ints(shape)], **extra)


@converts("reshape_like")
def _reshape_like(e):
    return e.op("Reshape", [e.arg(0), e.shape_of(1)])


@converts("transpose")
def _transpose(e, axes):
    return e.op("Transpose", [e.arg(0)], perm=list(axes))


@converts("broadcast_to")
def _broadcast_to(e, shape):
    return e.op("Expand", [e.arg(0), e.ints(shape)])


@converts("broadcast_like")
def _broadcast_like(e):
    return e.op("Expand", [e.arg(0), e.shape_of(1)])


@converts("sum_to")
def _sum_to(e, shape):
    x = e.arg(0)
    xs = e.node.inputs[0].shape
    lead = len(xs) - len(shape)
    inner = [lead + i for i, s in enumerate(shape) if s == 1 and xs[lead + i] != 1]
    if inner:
        x = e.op("ReduceSum", [x, e.ints(inner)], keepdims=1)
    if lead:
        x = e.op("ReduceSum", [x, e.ints(range(lead))], keepdims=0)
    return x


@converts("expand_dims")
def _expand_dims(e, axis):
    return e.op("Unsqueeze", [e.arg(0), e.ints(axis)])


@converts("squeeze")
def _squeeze(e, axis):
    return e.op("Squeeze", [e.arg(0), e.ints(axis)])


@converts("concatenate")
def _concatenate(e, axis):
    return e.op("Concat", [e.arg(k) for k in range(len(e.node.inputs))], axis=int(axis))


@converts("concat_offsets")
def _concat_offsets(e, axis):
    # 0, n₀, n₀+n₁, …: the running sums of the parts' lengths along axis
    sums = [e.ints([0])]
    for k in range(len(e.node.inputs)):
        sums.append(e.op("Add", [sums[-1], e.dim(k, axis)]))
    return e.op("Concat", sums, axis=0)


def _offset(e, k):
    """offsets[k] as a 1-element int64 tensor (input 1 of concat_part/unpart)."""
    return e.op("Slice", [e.arg(1, np.int64), e.ints([k]), e.ints([k + 1]), e.ints([0])])


@converts("concat_part")
def _concat_part(e, index, axis, length):
    return e.op("Slice", [e.arg(0), _offset(e, index), _offset(e, index + 1), e.ints([axis])])


@converts("concat_unpart")
def _concat_unpart(e, index, axis, total):
    # zeros before the block up to its offset, after it up to the total length
    last = e.node.inputs[1].shape[0] - 1          # offsets hold one entry per part, plus 0
    after = e.op("Sub", [_offset(e, last), _offset(e, index + 1)])
    pads = e.op("Concat", [_offset(e, index), after], axis=0)
    return e.op("Pad", [e.arg(0), pads, e.const(0, e.node.dtype), e.ints([axis])])


@converts("zeros_like", "ones_like")
def _fill_like(e):
    fill = 0 if e.node.op.name == "zeros_like" else 1
    value = e.onnx.numpy_helper.from_array(np.array([fill], dtype=e.node.dtype))
    return e.op("ConstantOfShape", [e.shape_of(0)], value=value)


@converts("one_hot_like")
def _one_hot_like(e, axis):
    ref = e.node.inputs[1]
    depth = e.op("Squeeze", [e.dim(1, axis), e.ints([0])])
    classes = e.op("Range", [e.const(0, np.int64), depth, e.const(1, np.int64)])
    trailing = len(ref.shape) - axis - 1
    if trailing:
        classes = e.op("Unsqueeze", [classes, e.ints(range(1, trailing + 1))])
    labels = e.op("Unsqueeze", [e.arg(0, np.int64), e.ints([axis])])
    return e.cast(e.op("Equal", [labels, classes]), bool, e.node.dtype)


@converts("one_hot")
def _one_hot(e, depth, axis, dtype):
    # labels outside [0, depth) give a row of zeros here; flowgrad's kernel refuses them
    nd = len(e.node.shape)
    classes = e.const(np.arange(depth, dtype=np.int64).reshape((depth,) + (1,) * (nd - axis - 1)))
    labels = e.op("Unsqueeze", [e.arg(0, np.int64), e.ints([axis])])
    return e.cast(e.op("Equal", [labels, classes]), bool, dtype)


@converts("argmax")
def _argmax(e, axis, keepdims):
    # the first index on a tie, as numpy
    src = e.node.inputs[0].dtype
    x = e.cast(e.raw(0), src, compute_dtype("ArgMax", src, "order", e.opset))
    return e.op("ArgMax", [x], axis=int(axis), keepdims=int(bool(keepdims)),
                select_last_index=0)


#: ops that have an ONNX look-alike which would not compute the same thing: refused,
#: with the reason in the error
REFUSED = {name: "ONNX's random ops draw from their own generator, so an exported "
                 "program could not reproduce flowgrad's draws; feed the noise as an input"
           for name in ("random_normal", "random_uniform", "random_bernoulli")}


# -- linear-algebra helpers ------------------------------------------------------------------

def _mask_tensor(e, k_in, kind, k, axis1, axis2, dtype):
    """eye/tri(n1, n2, k) on axes (axis1, axis2) of input k_in, length 1 elsewhere."""
    size = e.op("Concat", [e.dim(k_in, axis1), e.dim(k_in, axis2)], axis=0)
    value = e.onnx.numpy_helper.from_array(np.array([1], dtype=dtype))
    ones = e.op("ConstantOfShape", [size], value=value)
    m = e.op("EyeLike", [ones], k=int(k)) if kind == "eye" else \
        e.op("Trilu", [ones, e.const(int(k), np.int64)], upper=0)
    if axis1 > axis2:
        m = e.op("Transpose", [m], perm=[1, 0])
    ndim = len(e.node.inputs[k_in].shape)
    others = [a for a in range(ndim) if a not in (axis1, axis2)]
    return e.op("Unsqueeze", [m, e.ints(others)]) if others else m


@converts("mask")
def _mask(e, kind, k, axis1, axis2):
    return _mask_tensor(e, 0, kind, k, axis1, axis2, e.node.dtype)


@converts("trace")
def _trace(e, offset, axis1, axis2):
    x = e.arg(0)
    m = _mask_tensor(e, 0, "eye", offset, axis1, axis2, e.node.dtype)
    return reduce(e, "ReduceSum", e.typed("Mul", [x, m], e.node.dtype, "ring"),
                  sorted((axis1, axis2)), False)


# -- indexing --------------------------------------------------------------------------------

from .onnx_index import getitem_tensor, scatter_add  # noqa: E402


@converts("getitem")
def _getitem(e, index):
    return getitem_tensor(e, e.arg(0), e.node.inputs[0], index,
                          [k + 1 for k in range(len(e.node.inputs) - 1)])


@converts("scatter_add")
def _scatter_add(e, index):
    return scatter_add(e, index)



# convolution, pooling and the embedding index check: converters in onnx_layers
from . import onnx_layers  # noqa: E402,F401
# -- issue 22's vocabulary (a block of its own, for merging) -----------------------------------
# erf and Φ are written out in the kernel's own steps (ops/special.py): onnxruntime has
# no float64 Erf (nor Tan), and the same steps give the same values to rounding.

from flowgrad.ops import special as _special  # noqa: E402


def _exp_neg_sq(e, a, dtype, scale=1.0):
    """e^(−scale·a²) split as the kernel does: h = ⌊16a⌋/16, a² = h² + (a − h)(a + h)."""
    c = lambda v: e.const(v, dtype)   # noqa: E731
    a = e.op("Min", [a, c(40.0)])
    h = e.op("Div", [e.op("Floor", [e.op("Mul", [a, c(16.0)])]), c(16.0)])
    big = e.op("Mul", [c(-scale), e.op("Mul", [h, h])])
    rest = e.op("Mul", [c(-scale), e.op("Mul", [e.op("Sub", [a, h]), e.op("Add", [a, h])])])
    return e.op("Mul", [e.op("Exp", [big]), e.op("Exp", [rest])])


def _erf_parts(e, x, dtype, expo=None):
    """(|x| < SPLIT, series(x clamped), fraction(|x| clamped)) as ONNX tensors; ``expo``
    (a function of the clamped |x|) gives e^(−x²) when the caller has it better."""
    c = lambda v: e.const(v, dtype)   # noqa: E731
    a = e.op("Abs", [x])
    small = e.op("Less", [a, c(_special.SPLIT)])
    xs = e.op("Where", [small, x, c(0.0)])
    xl = e.op("Where", [small, c(_special.SPLIT), a])
    # the series: (2/√π) x e^(−x²) (1 + z/3 (1 + z/5 (…))), z = 2x²
    sq = e.op("Mul", [xs, xs])
    z = e.op("Mul", [c(2.0), sq])
    h = e.op("Add", [e.op("Mul", [z, c(1.0 / (2 * _special.SERIES_TERMS + 1))]), c(1.0)])
    for k in range(_special.SERIES_TERMS - 1, 0, -1):
        h = e.op("Add", [e.op("Mul", [e.op("Mul", [h, z]), c(1.0 / (2 * k + 1))]), c(1.0)])
    lead = e.op("Mul", [e.op("Mul", [c(_special.TWO_OVER_SQRT_PI), xs]),
                        e.op("Exp", [e.op("Neg", [sq])])])
    series = e.op("Mul", [lead, h])
    # the continued fraction, bottom-up
    f = e.op("Add", [e.op("Div", [c(_special.CF_TERMS / 2), xl]), xl])
    for k in range(_special.CF_TERMS - 1, 0, -1):
        f = e.op("Add", [e.op("Div", [c(k / 2), f]), xl])
    ex = _exp_neg_sq(e, xl, dtype) if expo is None else expo(small)
    frac = e.op("Div", [e.op("Mul", [ex, c(_special.INV_SQRT_PI)]), f])
    return small, series, frac


def _negative(e, x, dtype):
    return e.op("Less", [x, e.const(0.0, dtype)])


@converts("erf")
def _erf(e):
    dtype = e.node.dtype
    x = e.arg(0)
    small, series, frac = _erf_parts(e, x, dtype)
    tail = e.op("Sub", [e.const(1.0, dtype), frac])
    signed = e.op("Where", [_negative(e, x, dtype), e.op("Neg", [tail]), tail])
    return e.op("Where", [small, series, signed])


def erfc(e, x, dtype, expo=None):
    small, series, frac = _erf_parts(e, x, dtype, expo)
    big = e.op("Where", [_negative(e, x, dtype),
                         e.op("Sub", [e.const(2.0, dtype), frac]), frac])
    return e.op("Where", [small, e.op("Sub", [e.const(1.0, dtype), series]), big])


def normal_cdf(e, x, dtype):
    """½ erfc(−x/√2), with e^(−x²/2) taken from x itself, as the kernel does."""
    def expo(small):
        xl = e.op("Where", [small, e.const(_special.SPLIT / _special.INV_SQRT2, dtype),
                            e.op("Abs", [x])])
        return _exp_neg_sq(e, xl, dtype, 0.5)
    arg = e.op("Mul", [e.op("Neg", [x]), e.const(_special.INV_SQRT2, dtype)])
    return e.op("Mul", [e.const(0.5, dtype), erfc(e, arg, dtype, expo)])


@converts("normal_cdf")
def _normal_cdf(e):
    return normal_cdf(e, e.arg(0), e.node.dtype)


@converts("gelu")
def _gelu(e):
    x = e.arg(0)
    return e.op("Mul", [x, normal_cdf(e, x, e.node.dtype)])


@converts("tan")
def _tan(e):
    x = e.arg(0)
    return e.op("Div", [e.op("Sin", [x]), e.op("Cos", [x])])


@converts("clip")
def _clip(e):
    dtype = e.node.dtype
    return e.typed("Min", [e.typed("Max", [e.arg(0), e.arg(1)], dtype, "order"), e.arg(2)],
                   dtype, "order")


@converts("leaky_relu")
def _leaky_relu(e, slope):
    dtype = e.node.dtype
    x = e.arg(0)
    return e.op("Where", [e.op("Greater", [x, e.const(0, dtype)]), x,
                          e.op("Mul", [x, e.const(slope, dtype)])])


@converts("elu")
def _elu(e, alpha):
    dtype = e.node.dtype
    x = e.arg(0)
    below = e.op("Sub", [e.op("Exp", [e.op("Min", [x, e.const(0, dtype)])]), e.const(1, dtype)])
    return e.op("Where", [e.op("Greater", [x, e.const(0, dtype)]), x,
                          e.op("Mul", [below, e.const(alpha, dtype)])])


@converts("prod")
def _prod(e, axis, keepdims):
    return reduce(e, "ReduceProd", e.arg(0), axis, keepdims)


@converts("cumsum")
def _cumsum(e, axis):
    return e.typed("CumSum", [e.arg(0), e.const(int(axis), np.int64)], e.node.dtype, "ring",
                   data=(0,))


@converts("einsum")
def _einsum(e, spec):
    ins, _, out = spec.replace("...", "").partition("->")
    letters = [c for c in ins if c.isalpha()]
    if "->" not in spec:       # implicit: the letters that appear once, sorted
        out = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    if e.node.dtype.kind in "iu" and set(letters) - set(out):
        _refuse_inexact(e, "Einsum with a summation")
    return e.typed("Einsum", [e.arg(k) for k in range(len(e.node.inputs))], e.node.dtype,
                   "ring", equation=spec)


@converts("pad")
def _pad(e, widths, value):
    pads = [b for b, _ in widths] + [a for _, a in widths]
    return e.typed("Pad", [e.arg(0), e.ints(pads), e.const(value, e.node.dtype)], e.node.dtype,
                   "order", data=(0, 2), mode="constant")


@converts("astype")
def _astype(e, dtype):
    return e.op("Cast", [e.raw(0)], to=e.elem(dtype))


REFUSED.update({name: "ONNX has no operator for this matrix decomposition (opset 18)"
                for name in ("cholesky", "qr", "svd")})
# lstsq is a composite whose first node is qr: say so, or its refusal names only 'qr'
REFUSED["qr"] += "; fg.lstsq is built on qr, so a graph using lstsq is refused too"
# a conj/real/imag node always reads a complex tensor (of a real one it is no node)
REFUSED.update({name: "ONNX has no operators on complex tensors (opset 18)"
                for name in ("conj", "real", "imag")})
# issue 21: stop_gradient's value is its input; a custom function's is its forward's
# (argument 0 of custom_call), a remat block's input read late is the input (argument 0
# of remat_after: the ordering it imposes is a memory matter); rules are gradient nodes
# (shaped_like: a derivative's seed, its value; its shape check is flowgrad's run-time one)
@converts("stop_gradient", "custom_call", "custom_input", "remat_after", "shaped_like")
def _identity(e, **attrs):
    return e.op("Identity", [e.arg(0)])


# issue 20: loops and branches as Scan, Loop and If (their converters register themselves)
from . import onnx_loops  # noqa: E402,F401
