"""The simplifier's identities, as data (flowgrad/engine/simplify.py is their driver).

One row a rule: the op it applies to, what it looks at in the inputs (``needs``), the
fill values it tests, and a small function of (pass, node, a, b, fill of a, fill of b)
that returns a representative id, "zero" (a signless zero fill), an (op, attrs, ins)
rewrite, ``STOP`` (no rewrite, and no later rule of the op), or None (the next rule).
``needs``: "fill" a known fill operand, "neg" one negated operand, "negs" both,
"any" no special input at all (the driver must then send every node of the op here).
The driver's shortcuts are derived from this table: a new rule needs a row here and
nothing else. Each rule is exact for every value, −0.0, ±inf and NaN included, but
where its comment states the convention (simplify.py's module docstring lists them).

A rule sees the pass through its public face: ``neg_of`` ({id: the id it negates}),
``signless`` (ids of signless zeros), ``fits(kept, nid)`` (the kept operand has the
result's shape and dtype), ``adds_nothing(nid, zero, c, x)``, ``integral(nid)``,
``unsigned(nid)`` and ``negate(x)``.
"""
from __future__ import annotations

import math

__all__ = ["Rule", "RULES", "IDENTITIES", "STOP", "NEGATION", "negative_zero"]


def negative_zero(c) -> bool:
    """Whether the number ``c`` is −0.0."""
    return isinstance(c, float) and c == 0 and math.copysign(1.0, c) < 0


def _neg_op():
    from flowgrad.ops.elementwise import neg
    return neg


def _elementwise(name):
    from flowgrad.ops import elementwise
    return getattr(elementwise, name)


STOP = object()
NEGATION = "neg"


class Rule:
    __slots__ = ("op", "needs", "fills", "apply")

    def __init__(self, op, needs, apply, fills=()):
        self.op, self.needs, self.apply, self.fills = op, needs, apply, fills


def _add_zero_left(p, nid, a, b, fa, fb):
    # 0 + x → x, but at x = −0.0 (−0.0 + 0.0 is +0.0): see the pass's adds_nothing
    if fa == 0 and p.fits(b, nid) and p.adds_nothing(nid, a, fa, b):
        return b


def _add_zero_right(p, nid, a, b, fa, fb):
    if fb == 0 and p.fits(a, nid) and p.adds_nothing(nid, b, fb, a):
        return a


def _add_neg_right(p, nid, a, b, fa, fb):      # a + (−b') → a − b'
    if b in p.neg_of:
        return (_elementwise("sub"), {}, (a, p.neg_of[b]))


def _add_neg_left(p, nid, a, b, fa, fb):       # (−a') + b → b − a'
    if a in p.neg_of:
        return (_elementwise("sub"), {}, (b, p.neg_of[a]))


def _sub_zero(p, nid, a, b, fa, fb):
    # x − 0.0 is x everywhere; x − (−0.0) is x + 0.0 (as 0 + x above)
    if fb == 0 and p.fits(a, nid) and p.adds_nothing(nid, b, -fb, a):
        return a


def _zero_sub(p, nid, a, b, fa, fb):
    # 0 − x → −x only for a −0.0, integers, or a signless zero (0.0 − 0.0 is +0.0)
    if fa == 0 and p.fits(b, nid) and (negative_zero(fa) or p.integral(nid)
                                        or a in p.signless):
        return (_neg_op(), {}, (b,))


def _sub_self(p, nid, a, b, fa, fb):           # x − x → 0 (the convention: any x)
    if a == b:
        return "zero"


def _sub_neg(p, nid, a, b, fa, fb):            # a − (−b') → a + b'
    if b in p.neg_of:
        return (_elementwise("add"), {}, (a, p.neg_of[b]))


def _mul_negs(p, nid, a, b, fa, fb):           # (−a')(−b') → a'b'
    if a in p.neg_of and b in p.neg_of:
        return (_elementwise("mul"), {}, (p.neg_of[a], p.neg_of[b]))


def _kept_if(fill, value, keep):
    def rule(p, nid, a, b, fa, fb):            # x·1, 1·x, x/1, x**1 → x
        if (fa if fill == "a" else fb) == value and p.fits(keep(a, b), nid):
            return keep(a, b)
    return rule


def _negated_if(fill):
    def rule(p, nid, a, b, fa, fb):            # (−1)·x, x·(−1) → −x
        # not for unsigned x: numpy refuses x · (−1) there (−1 is out of uint8's range),
        # where −x would wrap silently
        x = b if fill == "a" else a
        if (fa if fill == "a" else fb) == -1 and p.fits(x, nid) and not p.unsigned(nid):
            return (_neg_op(), {}, (x,))
    return rule


def _zero_div(p, nid, a, b, fa, fb):           # 0 / x → 0 (the convention: any x)
    if fa == 0:
        return "zero"


def _neg_neg(p, nid, a, b, fa, fb):            # −(−x) → x, or nothing at all
    inner = p.neg_of.get(a)
    if inner is not None:
        return inner if p.fits(inner, nid) else STOP


def _neg_absorbed(p, nid, a, b, fa, fb):       # −(a − b) → b − a … (_negate)
    return p.negate(a)


def _first(a, b):
    return a


def _second(a, b):
    return b


RULES = (
    Rule("add", "fill", _add_zero_left, (0,)),
    Rule("add", "fill", _add_zero_right, (0,)),
    Rule("add", "neg", _add_neg_right),
    Rule("add", "neg", _add_neg_left),
    Rule("sub", "fill", _sub_zero, (0,)),
    Rule("sub", "fill", _zero_sub, (0,)),
    Rule("sub", "any", _sub_self),
    Rule("sub", "neg", _sub_neg),
    Rule("mul", "negs", _mul_negs),
    Rule("mul", "fill", _kept_if("a", 1, _second), (1,)),
    Rule("mul", "fill", _kept_if("b", 1, _first), (1,)),
    Rule("mul", "fill", _negated_if("a"), (-1,)),
    Rule("mul", "fill", _negated_if("b"), (-1,)),
    Rule("div", "fill", _kept_if("b", 1, _first), (1,)),
    Rule("div", "fill", _zero_div, (0,)),
    Rule("pow", "fill", _kept_if("b", 1, _first), (1,)),
    Rule(NEGATION, "neg", _neg_neg),
    Rule(NEGATION, "any", _neg_absorbed),
)

#: op name → its rules, in table order
IDENTITIES: dict = {}
for _rule in RULES:
    IDENTITIES.setdefault(_rule.op, []).append(_rule)
