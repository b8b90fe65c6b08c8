"""The small expression language the drawn reverse rules are declared in.

A rule such as ``z̄ += v̄ · (σ(z) − t) / n`` is one tree of these nodes. The same tree
prints the caption (with the boxes' labels) and evaluates it with numpy (with the traced
values), so a caption can never say something other than the number drawn beside it:
tests/test_caption_values.py evaluates every op's caption against the op's own adjoint.

A ``Ctx`` carries what a rule is printed and evaluated with. Every walk over a tree is
an explicit stack (rules are small, but nothing here recurses over a graph).
"""
from __future__ import annotations

import numpy as np

# precedences: a child printed below its parent's level is parenthesised
SUM, PROD, NEG, POW, ATOM = 1, 2, 3, 4, 5


class NotEvaluable(Exception):
    """A caption that states its rule only in words (see ``Opaque``)."""


class Ctx:
    """What a rule is printed and evaluated with: the inputs' labels and shapes, the
    output's label and shape, the op's attributes, the argument the rule is for and,
    to evaluate, the values (``args``, ``out``) and the output's adjoint ``g``."""

    def __init__(self, names, ans, shapes, out_shape, attrs, argnum=0, args=None,
                 out=None, g=None):
        self.names, self.ans, self.attrs, self.argnum = list(names), ans, dict(attrs), argnum
        self.shapes, self.out_shape = [tuple(s) for s in shapes], tuple(out_shape)
        self.args, self.out, self.g = args, out, g


def bshape(*shapes):
    """numpy broadcasting of static shapes; None (a length known at run time) matches
    its partner."""
    ndim = max((len(s) for s in shapes), default=0)
    out = []
    for axis in range(-ndim, 0):
        dims = [s[axis] for s in shapes if len(s) >= -axis]
        known = {d for d in dims if d is not None and d != 1}
        out.append(known.pop() if len(known) == 1 else None if None in dims or known
                   else 1)
    return tuple(out)


def sum_to(value, shape):
    """``value`` summed down to ``shape`` (undoing numpy broadcasting)."""
    value = np.asarray(value)
    lead = value.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, s in enumerate(shape)
                                      if s == 1 and value.shape[lead + i] != 1)
    if axes:
        value = np.sum(value, axis=axes, keepdims=True)
    return np.reshape(value, value.shape[lead:]) if lead else value


def ex(x):
    """A Python number as a ``Num``; expressions pass through."""
    return x if isinstance(x, Ex) else Num(x)


class Ex:
    """An expression node: ``text(c)`` → (string, precedence), ``value(c)`` → array,
    ``shape(c)`` → its static shape (None: already the input's shape)."""
    kids: tuple = ()

    def __add__(self, o): return Bin("+", self, ex(o))
    def __radd__(self, o): return Bin("+", ex(o), self)
    def __sub__(self, o): return Bin("−", self, ex(o))
    def __rsub__(self, o): return Bin("−", ex(o), self)
    def __mul__(self, o): return Bin("·", self, ex(o))
    def __rmul__(self, o): return Bin("·", ex(o), self)
    def __truediv__(self, o): return Bin("/", self, ex(o))
    def __rtruediv__(self, o): return Bin("/", ex(o), self)
    def __neg__(self): return Neg(self)

    def juxt(self, o):
        """The product written by juxtaposition: "2 y", "y(1 − y)"."""
        return Bin(" ", self, ex(o))

    def shape(self, c):
        return ()

    def counts(self):
        """The ``Count`` leaves of this tree (their values are stated beside the rule)."""
        out, stack = [], [self]
        while stack:
            e = stack.pop()
            if isinstance(e, Count) and e not in out:
                out.append(e)
            stack.extend(e.kids)
        return out


class G(Ex):
    """v̄, the adjoint arriving at the op's output."""
    def text(self, c): return "v̄", ATOM
    def value(self, c): return np.asarray(c.g)
    def shape(self, c): return c.out_shape


class Arg(Ex):
    """The op's argument ``k``, printed as its box's label."""
    def __init__(self, k): self.k = k
    def text(self, c): return c.names[self.k], ATOM
    def value(self, c): return np.asarray(c.args[self.k])
    def shape(self, c): return c.shapes[self.k]


class Ans(Ex):
    """The op's output, printed as its box's label."""
    def text(self, c): return c.ans, ATOM
    def value(self, c): return np.asarray(c.out)
    def shape(self, c): return c.out_shape


class Num(Ex):
    def __init__(self, v): self.v = v

    def text(self, c):
        t = {0.5: "½"}.get(self.v) or (str(int(self.v)) if float(self.v).is_integer()
                                       else repr(float(self.v)))
        return t.replace("-", "−"), ATOM if self.v >= 0 else NEG

    def value(self, c): return np.asarray(self.v, dtype=float)


class Count(Ex):
    """A count the rule divides by (a mean's n), computed from the shapes; the caption
    states its value (", n = 6"), or ``what`` it is when a length is known only at run
    time. Its text is left out, with the division, where it is 1."""
    def __init__(self, fn, what, symbol="n"):
        self.fn, self.what, self.symbol = fn, what, symbol

    def static(self, c):
        try:
            return int(self.fn(c))
        except TypeError:          # a None length: known only at run time
            return None

    def text(self, c): return self.symbol, ATOM
    def value(self, c): return np.asarray(float(self.fn(c)))

    def note(self, c):
        v = self.static(c)
        return f"{self.symbol} = {v if v is not None else self.what}"


class Neg(Ex):
    def __init__(self, a): self.kids = (a,)

    def text(self, c):
        t, p = self.kids[0].text(c)
        return "−" + (t if p >= PROD and not t.startswith("−") else f"({t})"), NEG

    def value(self, c): return -self.kids[0].value(c)
    def shape(self, c): return self.kids[0].shape(c)


_BIN = {"+": (SUM, np.add), "−": (SUM, np.subtract), "·": (PROD, np.multiply),
        " ": (PROD, np.multiply), "/": (PROD, np.divide)}


class Bin(Ex):
    def __init__(self, op, a, b): self.op, self.kids = op, (a, b)

    def text(self, c):
        a, b = self.kids
        if self.op == "/" and isinstance(b, Count) and b.static(c) == 1:
            return a.text(c)                       # "/ n" with n = 1 says nothing
        prec = _BIN[self.op][0]
        (ta, pa), (tb, pb) = a.text(c), b.text(c)
        if pa < prec:
            ta = f"({ta})"
        if pb < prec or pb == prec and self.op in ("−", "/"):
            tb = f"({tb})"
        if self.op == " ":
            return ta + ("" if tb.startswith("(") else " ") + tb, prec
        return f"{ta} {self.op} {tb}", prec

    def value(self, c):
        return _BIN[self.op][1](self.kids[0].value(c), self.kids[1].value(c))

    def shape(self, c):
        sa, sb = (k.shape(c) for k in self.kids)
        return None if sa is None or sb is None else bshape(sa, sb)


class Call(Ex):
    """Anything else: ``fmt`` printed at precedence ``prec`` and ``fn(c, *values of
    args)`` its value. In ``fmt``, ``{0}``, ``{1}`` … are the *op's* arguments (their
    labels), ``{ans}`` its output, and the op's attributes by name. ``shape``: a function
    of c giving the value's static shape, or None when it has the input's shape already
    (a scatter, a transpose back)."""
    def __init__(self, fmt, fn, *args, prec=ATOM, shape=None):
        self.fmt, self.fn, self.kids, self.prec, self._shape = fmt, fn, args, prec, shape

    def text(self, c):
        return self.fmt.format(*c.names, ans=c.ans, **c.attrs), self.prec

    def value(self, c):
        return np.asarray(self.fn(c, *[k.value(c) for k in self.kids]))

    def shape(self, c):
        return None if self._shape is None else self._shape(c)


class Fn(Ex):
    """A named function of one argument: "cos x", "log(1 + x)", "σ(z)" (``paren``)."""
    def __init__(self, name, f, a, paren=False):
        self.name, self.f, self.kids, self.paren = name, f, (a,), paren

    def text(self, c):
        t, p = self.kids[0].text(c)
        if not self.paren and p == ATOM:
            return f"{self.name} {t}", PROD
        return f"{self.name}({t})", POW

    def value(self, c): return np.asarray(self.f(self.kids[0].value(c)))
    def shape(self, c): return self.kids[0].shape(c)


def indicator(fmt, test, *args):
    """An Iverson bracket "[x > 0]": 1 where ``test`` holds, else 0."""
    def shape(c):
        shapes = [a.shape(c) for a in args]
        return None if None in shapes else bshape(*shapes)
    return Call(fmt, lambda c, *v: np.asarray(test(*v), dtype=float), *args, shape=shape)


class Opaque(Ex):
    """A caption that states a rule in words only, for ops whose rule has no compact
    form; evaluating it raises ``NotEvaluable`` (the caption test lists such ops)."""
    def __init__(self, words): self.words = words
    def text(self, c): return self.words, ATOM

    def value(self, c):
        raise NotEvaluable(self.words)

    def shape(self, c): return None


class Rule:
    """One argument's reverse rule: ``x̄ += expr`` (``sign`` "+=" or "−="). Unless the
    expression already has the input's shape, its value is summed to that shape, and the
    caption says so where the shapes differ ("summed to (3,)")."""
    def __init__(self, sign, expr):
        self.sign, self.expr = sign, expr

    def rhs(self, c) -> str:
        text = f"{self.sign} {self.expr.text(c)[0]}"
        shape = self.expr.shape(c)
        if shape is not None and shape != c.shapes[c.argnum]:
            text += f" summed to {fmt_shape(c.shapes[c.argnum])}"
        notes = [k.note(c) for k in self.expr.counts() if k.static(c) != 1]
        return text + "".join(", " + n for n in notes)

    def value(self, c):
        v = self.expr.value(c)
        v = -v if self.sign == "−=" else v
        target = tuple(np.shape(c.args[c.argnum]))
        return sum_to(v, target) if np.shape(v) != target else v


class NoFlow(Rule):
    """An argument no adjoint reaches (a condition, an index, a shape reference, the
    inputs of a piecewise-constant op): ``x̄ += 0``."""
    def __init__(self, why):
        super().__init__("+=", Call("0", lambda c: np.zeros(np.shape(c.args[c.argnum]))))
        self.why = why

    def rhs(self, c):
        return f"+= 0 ({self.why})"


def plus(e): return Rule("+=", e)
def minus(e): return Rule("−=", e)


def fmt_shape(shape) -> str:
    """(3,) style, with "?" for a length known only at run time."""
    inner = ", ".join("?" if s is None else str(s) for s in shape)
    return f"({inner}{',' if len(shape) == 1 else ''})"
