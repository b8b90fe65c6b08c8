"""The reverse rule each op's edge label and walkthrough caption shows, declared once.

``TABLE[op name](c)`` is the ``Rule`` for argument ``c.argnum`` (see ``rule_expr``): it
prints the caption and evaluates to the number the drawing shows beside it, so the two
cannot disagree. Rules depend on the op's attributes and shapes where the op's own rule
does: a mean's losses divide by n, matmul's 1-d operands, class-index targets.
tests/test_caption_values.py checks every registered op's caption against the op's own
adjoint; an op missing here is drawn with an honest "v̄ · ∂op/∂x" and fails that test.
"""
from __future__ import annotations

import math

import numpy as np

from .rule_expr import (POW, PROD, Ans, Arg, Bin, Call, Count, Ctx, Fn, G, NoFlow, Num,
                        Opaque, bshape, indicator, minus, plus)
from .rules_conv import CONV
from .rules_vocab import VOCAB, VOCAB_IN_WORDS
from .rules_models import LINALG, LOSSES

V, X0, X1, ANS = G(), Arg(0), Arg(1), Ans()


def _sigmoid(v):
    return 0.5 * (1 + np.tanh(0.5 * v))      # σ without overflow


def _fixed(*rules):
    return lambda c: rules[c.argnum]


# -- elementwise ------------------------------------------------------------------------

def _tie(fmt, win):
    """maximum/minimum: the argument's share, 1 where it wins, ½ on a tie."""
    return Call(fmt, lambda c, x, y: np.where(win(x, y), 1.0, np.where(x == y, 0.5, 0.0)),
                X0, X1, shape=lambda c: bshape(c.shapes[0], c.shapes[1]))


def _sig(a):
    return Fn("σ", _sigmoid, a, paren=True)


SQUARE = Call("{ans}²", lambda c, v: v * v, ANS, prec=POW, shape=lambda c: c.out_shape)
POW_DX = Call("{1} {0}^({1}−1)", lambda c, x, p: p * x ** (p - 1), X0, X1, prec=PROD,
              shape=lambda c: bshape(c.shapes[0], c.shapes[1]))

ELEMENTWISE = {
    "add": _fixed(plus(V), plus(V)),
    "sub": _fixed(plus(V), minus(V)),
    "mul": _fixed(plus(V * X1), plus(V * X0)),
    "div": _fixed(plus(V / X1), minus(V * ANS / X1)),
    "neg": _fixed(minus(V)),
    "pow": _fixed(plus(V * POW_DX), plus(V * ANS.juxt(Fn("log", np.log, X0)))),
    "exp": _fixed(plus(V * ANS)),
    "log": _fixed(plus(V / X0)),
    "log1p": _fixed(plus(V / (1 + X0))),
    "sqrt": _fixed(plus(V / Num(2).juxt(ANS))),
    "tanh": _fixed(plus(V * (1 - SQUARE))),
    "sin": _fixed(plus(V * Fn("cos", np.cos, X0))),
    "cos": _fixed(minus(V * Fn("sin", np.sin, X0))),
    "abs": _fixed(plus(V * Fn("sign", np.sign, X0))),
    "relu": _fixed(plus(V * indicator("[{0} > 0]", lambda x: x > 0, X0))),
    "sigmoid": _fixed(plus(V * ANS.juxt(1 - ANS))),
    "softplus": _fixed(plus(V * _sig(X0))),
    "maximum": _fixed(plus(V * _tie("([{0} > {1}] + ½[{0} = {1}])", np.greater)),
                      plus(V * _tie("([{1} > {0}] + ½[{0} = {1}])", np.less))),
    "minimum": _fixed(plus(V * _tie("([{0} < {1}] + ½[{0} = {1}])", np.less)),
                      plus(V * _tie("([{1} < {0}] + ½[{0} = {1}])", np.greater))),
    "where": _fixed(NoFlow("a condition"),
                    plus(V * indicator("[{0}]", lambda c: c, Arg(0))),
                    plus(V * indicator("[¬{0}]", lambda c: ~np.asarray(c, bool), Arg(0)))),
}

#: ops no adjoint flows through (piecewise constant, integer-valued, shape references,
#: random draws): every argument's rule is x̄ += 0
NO_FLOW = {
    "equal": "piecewise constant", "not_equal": "piecewise constant",
    "greater": "piecewise constant", "greater_equal": "piecewise constant",
    "less": "piecewise constant", "less_equal": "piecewise constant",
    "sign": "piecewise constant", "tie_weight": "piecewise constant",
    "embedding_index": "integer indices",
    "stop_gradient": "stop_gradient",
    "custom_input": "the custom function's rule carries v̄ across it",
    "argmax": "integer-valued", "one_hot": "integer input", "one_hot_like": "a constant",
    "zeros_like": "only its shape is read", "ones_like": "only its shape is read",
    "reduced_size": "only its shape is read", "mask": "only its shape is read",
    "batch_norm_count": "only its shape is read",
    "concat_offsets": "only its shape is read", "max_weights": "piecewise constant",
    "random_normal": "a random draw", "random_uniform": "a random draw",
    "random_bernoulli": "a random draw",
}


# -- reductions ----------------------------------------------------------------------------

def _spread(c, g):
    """A reduction's v̄ spread back over its input (the reduced axes restored)."""
    axes, keep = c.attrs["axis"], c.attrs["keepdims"]
    if not keep and axes:
        g = np.expand_dims(g, axes)
    return np.broadcast_to(g, np.shape(c.args[0]))


def _kept(c, v):
    """A reduction's output with the reduced axes back as length 1."""
    axes, keep = c.attrs["axis"], c.attrs["keepdims"]
    return v if keep or not axes else np.expand_dims(v, axes)


SPREAD = Call("broadcast(v̄)", _spread, V)
REDUCED = Count(lambda c: math.prod(c.shapes[0][a] for a in c.attrs["axis"]),
                "the entries averaged")


def _max_share(c, g, x, ans):
    hit = (x == _kept(c, ans)).astype(float)
    return _spread(c, g) * hit / np.sum(hit, axis=c.attrs["axis"], keepdims=True)


def _softmax_of(c, g, x, ans):
    return _spread(c, g) * np.exp(x - _kept(c, ans))


def _norm_share(c, g, x, ans):
    ans = _kept(c, ans)
    return _spread(c, g) * x / np.where(ans == 0, 1.0, ans)


REDUCTIONS = {
    "sum": _fixed(plus(SPREAD)),
    "mean": _fixed(plus(SPREAD / REDUCED)),
    "max": _fixed(plus(Call("broadcast(v̄) · [{0} = {ans}] / k (k: the tied maxima)",
                            _max_share, V, X0, ANS, prec=PROD))),
    "logsumexp": _fixed(plus(Call("broadcast(v̄) · softmax({0})", _softmax_of, V, X0, ANS,
                                  prec=PROD))),
    "norm2": _fixed(plus(Call("broadcast(v̄) · {0} / {ans} (0 where {ans} = 0)", _norm_share,
                              V, X0, ANS, prec=PROD))),
}


# -- shapes and indexing -------------------------------------------------------------------

def _transpose(c):
    axes = tuple(c.attrs["axes"])
    back = tuple(int(a) for a in np.argsort(axes))
    text = "v̄ᵀ" if axes == (1, 0) else f"transpose(v̄, {back})"
    return plus(Call(text, lambda c, g: np.transpose(g, back), V, prec=POW))


def _reshape_back(c):
    shape = tuple("?" if s is None else s for s in c.shapes[0])
    return plus(Call(f"reshape(v̄, {shape})".replace("'", ""),
                     lambda c, g: np.reshape(g, np.shape(c.args[0])), V))


def _block(shapes, k, axis):
    """(start, stop) of argument ``k``'s block along the concatenation axis, or None
    while a length before it is known only at run time."""
    sizes = [s[axis] for s in shapes[:k + 1]]
    return None if None in sizes else (sum(sizes[:k]), sum(sizes))


def _concat(c):
    axis, k = c.attrs["axis"], c.argnum
    span = _block(c.shapes, k, axis)
    where = f"{':, ' * axis}{span[0]}:{span[1]}" if span else f"block {k}"

    def block(c, g):
        lo, hi = _block([np.shape(a) for a in c.args], k, axis)
        return np.take(g, np.arange(lo, hi), axis=axis)
    return plus(Call(f"v̄[{where}]", block, V))


def _part_slice(c, offsets):
    k, axis = c.attrs["index"], c.attrs["axis"]
    return (slice(None),) * axis + (slice(int(offsets[k]), int(offsets[k + 1])),)


def _unpart(c, g, offsets):
    out = np.zeros(np.shape(c.args[0]), dtype=np.result_type(g, float))
    out[_part_slice(c, offsets)] = g
    return out


SHAPES = {
    "transpose": _transpose,
    "reshape": _reshape_back,
    "reshape_like": lambda c: _reshape_back(c) if c.argnum == 0 else NoFlow("a shape reference"),
    "expand_dims": lambda c: plus(Call(f"squeeze(v̄, {c.attrs['axis']})",
                                       lambda c, g: np.squeeze(g, c.attrs["axis"]), V)),
    "squeeze": lambda c: plus(Call(f"expand_dims(v̄, {c.attrs['axis']})",
                                   lambda c, g: np.expand_dims(g, c.attrs["axis"]), V)),
    "broadcast_to": _fixed(plus(V)),
    "broadcast_like": _fixed(plus(V), NoFlow("a shape reference")),
    "sum_to": _fixed(plus(Call("broadcast(v̄)",
                               lambda c, g: np.broadcast_to(g, np.shape(c.args[0])), V))),
    "concatenate": _concat,
    "concat_part": _fixed(plus(Call("v̄ put back as block {index} among zeros", _unpart, V,
                                    Arg(1))), NoFlow("block offsets")),
    "concat_unpart": _fixed(plus(Call("v̄[block {index}]", lambda c, g, o: g[_part_slice(c, o)],
                                      V, Arg(1))), NoFlow("block offsets")),
}


def _index_text(c, first):
    """An index as numpy would write it: "1:, ::2", "[0 2 0]", "i" (a node's label)."""
    parts = []
    for it in c.attrs["index"]:
        kind = it[0]
        if kind == "i":
            parts.append(str(it[1]))
        elif kind == "s":
            lo, hi, step = ("" if v is None else str(v) for v in it[1:])
            parts.append(f"{lo}:{hi}" + (f":{step}" if step else ""))
        else:
            parts.append({"n": "None", "e": "…"}.get(kind) or (
                "{%d}" % (first + it[1]) if kind == "t" else   # the index node's label
                "[" + " ".join(map(str, np.asarray(it[1]).ravel())) + "]"))
    return ", ".join(parts)


def _index_key(c, first):
    key = []
    for it in c.attrs["index"]:
        kind = it[0]
        key.append(it[1] if kind == "i" else slice(*it[1:]) if kind == "s" else
                   None if kind == "n" else Ellipsis if kind == "e" else
                   np.asarray(it[1]) if kind == "a" else np.asarray(c.args[first + it[1]]))
    return tuple(key)


def _scatter(c, g):
    out = np.zeros(np.shape(c.args[0]), dtype=np.result_type(g, float))
    np.add.at(out, _index_key(c, 1), g)          # repeated indices add up
    return out


def _getitem(c):
    if c.argnum:
        return NoFlow("an index")
    return plus(Call(f"scatter(v̄ into [{_index_text(c, 1)}])", _scatter, V))


def _scatter_add(c):
    if c.argnum:
        return NoFlow("a shape reference" if c.argnum == 1 else "an index")
    return plus(Call(f"v̄[{_index_text(c, 2)}]", lambda c, g: g[_index_key(c, 2)], V))


INDEXING = {"getitem": _getitem, "scatter_add": _scatter_add}


# -- the table ---------------------------------------------------------------------------------

def _no_flow(why):
    return lambda c: NoFlow(why)

# remat_after(x, g): x's value read once g exists; v̄ passes to x, g is an ordering only
REMAT = {"remat_after": _fixed(plus(V), NoFlow("an ordering dependency")),
         # shaped_like(t, x): a derivative's seed t held to x's shape; x gives its shape
         "shaped_like": _fixed(plus(V), NoFlow("its shape only"))}

TABLE = {**REMAT, **ELEMENTWISE, **REDUCTIONS, **SHAPES, **INDEXING, **LINALG, **LOSSES, **CONV, **VOCAB,
         **{name: _no_flow(why) for name, why in NO_FLOW.items()}}

#: ops whose rule has no compact form: their caption says so in words (and is not
#: evaluated; tests/test_caption_values.py lists them with the reason)
IN_WORDS = {"basis_map": "the body's own reverse rule, mapped over the basis",
            "custom_call": "your own rule, fg.custom_vjp / fg.custom_jvp",
            # issue 20: a loop's derivative is another loop, not a formula of its inputs
            "loop": "the body's vjp, run backwards through time",
            "loop_out": "the body's own rule, run backwards through time",
            # complex parts (a node only for a complex x: the drawings' traces are real)
            "conj": "conj(v̄)", "real": "v̄, as a complex", "imag": "i·v̄",
            **VOCAB_IN_WORDS}

#: local derivatives whose textbook form reads better than the rule's own factor
LOCAL = {
    "sigmoid": _sig(X0).juxt(1 - _sig(X0)),
    "tanh": 1 - Call("tanh²({0})", lambda c, x: np.tanh(x) ** 2, X0, prec=POW,
                     shape=lambda c: c.shapes[0]),
    "exp": Fn("exp", np.exp, X0, paren=True),
}


def context(node, argnum, names, ans, shapes=None, out_shape=None) -> Ctx:
    """The context of ``node``'s rule for ``argnum``, printed with the labels ``names``
    (its inputs) and ``ans`` (itself); ``shapes``: traced shapes, else the static ones."""
    shapes = shapes if shapes is not None else [n.shape for n in node.inputs]
    return Ctx(names, ans, shapes, node.shape if out_shape is None else out_shape,
               node.attrs, argnum)


def rule(op_name, c):
    """The ``Rule`` op ``op_name`` carries v̄ back to argument ``c.argnum`` with."""
    make = TABLE.get(op_name)
    if make is not None:
        return make(c)
    words = IN_WORDS.get(op_name, "see docs/ops.md")
    return plus(Opaque(f"v̄ · ∂{c.ans}/∂{c.names[c.argnum]} ({words})"))


def local(op_name, c):
    """∂out/∂(argument ``c.argnum``) as an expression (the rule with its factor v̄ taken
    out), or None when the rule is not v̄ times a factor (matrix rules, scatters)."""
    if c.argnum == 0 and op_name in LOCAL:
        return LOCAL[op_name]
    r = rule(op_name, c)
    if isinstance(r, NoFlow):
        return Num(0)
    body = _without_g(r.expr)
    if body is None:
        return None
    return -body if r.sign == "−=" else body


def _without_g(e):
    """``e`` with the v̄ at the head of its chain of products and quotients replaced by
    1 (v̄ spread back over a reduction counts as v̄), or None when there is none."""
    path = []
    while isinstance(e, Bin) and e.op in ("·", " ", "/"):
        path.append(e)
        e = e.kids[0]
    if not (isinstance(e, G) or e is SPREAD):
        return None
    out = Num(1)
    for b in reversed(path):
        right = b.kids[1]
        one = isinstance(out, Num) and out.v == 1
        out = right if one and b.op != "/" else Bin(b.op, out, right)
    return out
