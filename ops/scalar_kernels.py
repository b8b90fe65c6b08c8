"""Scalar kernels: each op's forward on Python floats, for programs whose every value is 0-d.

One table rather than a ``scalar=`` argument on every Op: the formulations sit side
by side, where they are easy to compare with the array kernels they must agree
with (the tests check each against the array path), and the op modules — edited by
others — stay untouched. An op without an entry simply keeps its program on arrays.

Each entry is either a format pattern (inlined into the generated code: no call
at all) or a function of floats. Every function repeats the array kernel's
formulation step for step (σ through exp(−|x|), softplus through log1p …), so the
two agree to rounding. Where Python raises and numpy would return inf or nan
(``math.exp(1000)``, ``1.0 / 0.0``, ``math.log(-1.0)``), the generated code
catches it and reruns the call on arrays, so such values get numpy's results.
"""
from __future__ import annotations

import math

_exp, _log1p = math.exp, math.log1p


def _sign(x):
    # numpy: sign(nan) = nan, sign(±0) = 0
    if x > 0:
        return 1.0
    if x < 0:
        return -1.0
    return 0.0 if x == 0 else x


def _maximum(x, y):
    # numpy propagates nan (Python's max would not); on a tie (±0) numpy hands back y
    if x != x or y != y:
        return x + y
    return x if x > y else y


def _minimum(x, y):
    if x != x or y != y:
        return x + y
    return x if x < y else y


def _tie_weight(x, y):
    return 1.0 if x > y else (0.5 if x == y else 0.0)


def _pow(x, p):
    # numpy's power takes these exponents through exact shortcuts (sqrt, a product, a
    # reciprocal), which math.pow does not: sqrt keeps −0.0's sign, x·x is correctly
    # rounded where math.pow(x, 2) may not be. Other exponents agree to rounding.
    if p == 2.0:
        return x * x
    if p == 0.5:
        return math.sqrt(x)
    if p == -1.0:
        return 1.0 / x
    return math.pow(x, p)


def _sigmoid(x):
    e = _exp(-abs(x))
    return (1.0 if x >= 0 else e) / (1.0 + e)


def _softplus(x):
    return _maximum(x, 0.0) + _log1p(_exp(-abs(x)))


def _bce(z, t):
    # ops/losses.py's order: max(z, 0) − z t + log1p(e^−|z|); any reduction of a 0-d
    # value is the value itself (numpy's mean divides by 1)
    return _maximum(z, 0.0) - z * t + _log1p(_exp(-abs(z)))


def _mse(y, t):
    d = y - t
    return d * d


def _l2(w):
    return 0.5 * (w * w)


def _relu(x):
    # 0.0, not 0: an int result would lose the sign a later negation gives (−relu(−1))
    return _maximum(x, 0.0)


def _float(x):
    return float(x)


# -- issue 22 (one block): erf, Φ and gelu run ops/special.py's own steps on floats ---------

class _Floats:
    """The few array functions ops/special.py's formulas use, on Python floats: the same
    operations in the same order as on arrays (math.floor of nan or inf raises, and the
    caller reruns on arrays, as for any kernel that raises)."""
    abs = staticmethod(math.fabs)
    exp = staticmethod(math.exp)
    floor = staticmethod(math.floor)
    minimum = staticmethod(_minimum)

    @staticmethod
    def where(cond, x, y):
        return x if cond else y


def _erf(x):
    from .special import erf_of
    return erf_of(_Floats, x)


def _normal_cdf(x):
    from .special import normal_cdf_of
    return normal_cdf_of(_Floats, x)


def _gelu(x):
    return x * _normal_cdf(x)


def _clip(x, lo, hi):
    # the bounds first, as ops/activations.py: a tie hands back x (its sign of zero)
    return _minimum(hi, _maximum(lo, x))


#: op name → pattern or function (see the module docstring)
KERNELS = {
    "add": "{} + {}", "sub": "{} - {}", "mul": "{} * {}", "div": "{} / {}", "neg": "-{}",
    "pow": _pow, "exp": math.exp, "log": math.log, "log1p": math.log1p,
    "sqrt": math.sqrt, "tanh": math.tanh, "sin": math.sin, "cos": math.cos,
    "abs": math.fabs, "sign": _sign, "maximum": _maximum, "minimum": _minimum,
    "tie_weight": _tie_weight, "where": "({1} if {0} else {2})",
    "greater": "{} > {}", "greater_equal": "{} >= {}", "less": "{} < {}",
    "less_equal": "{} <= {}", "equal": "{} == {}", "not_equal": "{} != {}",
    "sigmoid": _sigmoid, "softplus": _softplus, "bce_with_logits": _bce, "relu": _relu,
    "mse": _mse, "l2": _l2,
    "copy": _float,
    # with every value 0-d, reductions and reshapes are identities and fills constants;
    # numpy's sum (and mean) of a 0-d value adds it to +0.0: sum(−0.0) is +0.0
    "sum": "(0.0 + {})", "mean": "(0.0 + {})", "sum_to": "{}", "reshape": "{}",
    "reshape_like": "{}", "broadcast_to": "{}", "broadcast_like": "{}",
    "zeros_like": "0.0", "ones_like": "1.0",
}

#: ops whose numpy kernel hands back a 0-d array (not a numpy scalar) for 0-d inputs:
#: an output they produce is converted back to one, so both paths return the same type
ARRAY_RESULT = {"where", "tie_weight", "copy", "broadcast_to", "broadcast_like",
                "zeros_like", "ones_like"}

# issue 22's ops (their functions are above, before KERNELS)
KERNELS.update({"erf": _erf, "normal_cdf": _normal_cdf, "gelu": _gelu, "tan": math.tan,
                "clip": _clip})
ARRAY_RESULT.update({"erf", "normal_cdf"})   # their kernels end in xp.where: 0-d arrays

class WithAttrs:
    """A kernel that depends on its node's attributes: ``make(**attrs)`` returns the
    function of floats for one node (leaky_relu's slope, elu's alpha)."""

    def __init__(self, make):
        self.make = make


def bind(kernel, attrs):
    """The pattern or function of floats for one node's step."""
    return kernel.make(**attrs) if isinstance(kernel, WithAttrs) else kernel


def _leaky_relu(slope):
    def leaky_relu(x):            # numpy: where(x > 0, x, x · slope)
        return x if x > 0 else x * slope
    return leaky_relu


def _elu(alpha):
    expm1 = math.expm1

    def elu(x):                   # numpy: where(x > 0, x, α · expm1(min(x, 0)))
        return x if x > 0 else alpha * expm1(_minimum(x, 0.0))
    return elu


KERNELS.update({"leaky_relu": WithAttrs(_leaky_relu), "elu": WithAttrs(_elu)})
ARRAY_RESULT.update({"leaky_relu", "elu"})    # their kernels end in xp.where: 0-d arrays

# identities (issue 21): stop_gradient, a custom function's call and input stand-ins and a
# remat block's ordering hand their first input back; the others are dependencies only
# ("{}" formats the first argument and ignores the rest)
PASS_THROUGH = frozenset({"stop_gradient", "custom_call", "custom_input", "remat_after",
                          "shaped_like"})
KERNELS.update({name: "{}" for name in PASS_THROUGH})


#: ops that, on a 0-d value, hand back a value of their input's type: numpy's reshape of
#: a numpy scalar is a numpy scalar (of a 0-d array a 0-d array), and sum_to to the
#: input's own shape returns the input. Their output's type is their input's: followed
#: back by ``origin`` as the pass-throughs are (their value is their input's too)
TYPE_KEEPING = frozenset({"reshape", "reshape_like", "sum_to"})
_FOLLOWED = PASS_THROUGH | TYPE_KEEPING


def origin(slot, producer, first_input):
    """The slot whose value ``slot`` holds, pass-through (and type-keeping) steps
    followed back: such a step returns its input object itself (or one of its type), so
    the array path hands back what its input is (a fed 0-d array stays an array, a
    product's numpy scalar stays a scalar). ``producer`` maps a step's output slot to
    its op name, ``first_input`` to its first input slot."""
    while producer.get(slot) in _FOLLOWED:
        slot = first_input[slot]
    return slot
