"""Derivatives as formulas: the expression a node computes, written for a human.

``formula(node)`` reads the *simplified* plan of ``node`` (the same pass ``fg.compile``
runs: CSE, folding, identities, zero adjoints pruned), turns it into a small expression
DAG and prints it with the user's names:

    ∂L/∂w = (y − t) · y(1 − y) · x + λ w   where y = σ(w x + b)

Display rewrites only (each an algebraic identity, never a numeric change): implicit
broadcasts are dropped (numpy algebra), ``sum_to`` (the adjoint of broadcasting) is a Σ,
scalar factors move out of matrix products (``Xᵀ(v / n) → Xᵀ v / n``), ``a + a → 2a``,
numeric coefficients merge, and a term that is just a coefficient times a name goes last.
A subexpression used more than once (and not trivial) is bound once in a ``where`` clause,
named by the user's node name when it has one. Every walk is a loop over ids or an
explicit stack: graphs of any depth print without recursion.
"""
from __future__ import annotations

import html
import itertools
import math
import re

import numpy as np

from flowgrad.autodiff import ancestors
from flowgrad.ops.base import REGISTRY
from flowgrad.engine.simplify import simplify

__all__ = ["formula", "Formula"]

# precedences: a child printed below its parent's level is parenthesised
ADD, MUL, NEG, POW, ATOM = 1, 2, 3, 4, 5

_SUP = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")
_GREEK = {"α": r"\alpha", "β": r"\beta", "γ": r"\gamma", "δ": r"\delta", "ε": r"\varepsilon",
          "η": r"\eta", "θ": r"\theta", "λ": r"\lambda", "μ": r"\mu", "σ": r"\sigma",
          "τ": r"\tau", "φ": r"\varphi", "ω": r"\omega", "ρ": r"\rho", "ν": r"\nu"}
_FUNCS = {"sigmoid": ("σ", r"\sigma"), "exp": ("exp", r"\exp"), "log": ("log", r"\log"),
          "log1p": ("log1p", r"\operatorname{log1p}"), "tanh": ("tanh", r"\tanh"),
          "sin": ("sin", r"\sin"), "cos": ("cos", r"\cos"),
          "softplus": ("softplus", r"\operatorname{softplus}"),
          "relu": ("relu", r"\operatorname{relu}"), "sign": ("sign", r"\operatorname{sign}"),
          "logsumexp": ("logsumexp", r"\operatorname{logsumexp}"),
          "softmax": ("softmax", r"\operatorname{softmax}"),
          "log_softmax": ("log softmax", r"\log\operatorname{softmax}"),
          "det": ("det", r"\det"), "logdet": ("log det", r"\log\det"),
          "inv": ("inv", r"\operatorname{inv}"), "trace": ("tr", r"\operatorname{tr}"),
          "eigvalsh": ("eigvalsh", r"\operatorname{eigvalsh}")}
_COMPARE = {"greater": ">", "greater_equal": "≥", "less": "<", "less_equal": "≤",
            "equal": "=", "not_equal": "≠"}
_COMPARE_TEX = {">": ">", "≥": r"\geq", "<": "<", "≤": r"\leq", "=": "=", "≠": r"\neq"}
_PASS = {"broadcast_to", "broadcast_like", "copy"}   # numpy algebra broadcasts implicitly
_AUTO_BASES = {"const", "seed", "variable"}
_FRESH = ["u", "v", "p", "q", "r", "s", "h", "k"]


# -- the expression DAG ---------------------------------------------------------------

class _E:
    """One expression node: ``kind`` with ``args`` (child _E), ``val`` (a number, a name,
    an op name or attributes), ``scalar`` (shape ()) and ``src`` (the graph id it came
    from, for naming its binding)."""
    __slots__ = ("kind", "args", "val", "scalar", "src", "uni")

    def __init__(self, kind, args=(), val=None, scalar=True, src=None):
        self.kind, self.args, self.val, self.src = kind, tuple(args), val, src
        # uniform: built from numbers and n only, so every entry is the same number and
        # it reads as a scalar whatever shape it was broadcast to (−1/n spread over a batch)
        self.uni = kind == "num" or (kind == "name" and val in ("n", "N") and src is None) or (
            kind in ("mul", "div", "neg") and all(a.uni for a in self.args))
        self.scalar = scalar or self.uni


def _num(v):
    return _E("num", (), v, True)


def _is_num(e, v=None):
    return e.kind == "num" and (v is None or e.val == v)


def _simple(e):
    """A name, a number, or a number times a name: what reads well at the end of a sum."""
    if e.kind in ("name", "num"):
        return True
    return e.kind == "mul" and _is_num(e.args[0]) and e.args[1].kind == "name"


def _mul(a, b, scalar):
    if _is_num(a) and _is_num(b):
        return _num(a.val * b.val)
    if _is_num(b) and b.scalar and not _is_num(a):      # coefficient first
        a, b = b, a
    if _is_num(a, 1) and b.scalar == scalar:
        return b
    if _is_num(a, -1) and b.scalar == scalar:
        return _E("neg", (b,), scalar=scalar)
    if _is_num(a) and b.kind == "neg":                          # c (−x) → (−c) x
        return _mul(_num(-a.val), b.args[0], scalar)
    if _is_num(a) and b.kind == "mul" and _is_num(b.args[0]):   # c (d x) → (cd) x
        return _mul(_num(a.val * b.args[0].val), b.args[1], scalar)
    if a is b:                                          # x · x → x²
        return _E("pow", (a, _num(2)), scalar=scalar)
    for k, (one, other) in enumerate(((a, b), (b, a))):
        if one.kind == "div" and one.args[1].scalar and not one.scalar or \
                one.kind == "div" and one.args[1].scalar and other.kind != "num":
            # (x / d) · y → (x y) / d: a scalar denominator goes outermost
            num = one.args[0]
            inner = other if _is_num(num, 1) else \
                _mul(*((num, other) if k == 0 else (other, num)), scalar)
            return _E("div", (inner, one.args[1]), scalar=scalar)
        if one.kind == "mul" and _is_num(one.args[0]) and not _is_num(other):
            # (c x) · y → c (x y): a coefficient goes outermost
            inner = _mul(*((one.args[1], other) if k == 0 else (other, one.args[1])), scalar)
            return _mul(one.args[0], inner, scalar)
    return _E("mul", (a, b), scalar=scalar)


def _add(a, b, scalar):
    if a is b:
        return _mul(_num(2), a, scalar)
    if _is_num(a, 0):
        return b
    if _is_num(b, 0):
        return a
    if _simple(a) and not _simple(b) or a.kind == "neg" and b.kind != "neg":
        a, b = b, a                                      # X w + b, … + λ w, b − a
    if b.kind == "neg":
        return _E("sub", (a, b.args[0]), scalar=scalar)
    if b.kind == "mul" and _is_num(b.args[0]) and b.args[0].val < 0:
        return _E("sub", (a, _mul(_num(-b.args[0].val), b.args[1], b.scalar)), scalar=scalar)
    if _is_num(b) and b.val < 0:
        return _E("sub", (a, _num(-b.val)), scalar=scalar)
    return _E("add", (a, b), scalar=scalar)


def _matmul(a, b, scalar):
    # scalars commute out of a matrix product: Xᵀ(v / n) → Xᵀ v / n, A(c v) → c A v
    if b.kind == "div" and b.args[1].scalar and not b.scalar:
        return _E("div", (_matmul(a, b.args[0], scalar), b.args[1]), scalar=scalar)
    if b.kind == "mul" and _is_num(b.args[0]):
        return _mul(b.args[0], _matmul(a, b.args[1], scalar), scalar)
    if a.kind == "div" and a.args[1].scalar and not a.scalar:      # (A / n) B → A B / n
        return _E("div", (_matmul(a.args[0], b, scalar), a.args[1]), scalar=scalar)
    if a.kind == "mul" and _is_num(a.args[0]):                      # (c A) B → c A B
        return _mul(a.args[0], _matmul(a.args[1], b, scalar), scalar)
    return _E("matmul", (a, b), scalar=scalar)


def _is_auto(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    if base in _AUTO_BASES:
        return True
    m = re.fullmatch(r"(.+?)_\d+(?:_\d+)?", base)
    return bool(m) and (m.group(1) in REGISTRY or m.group(1) in _AUTO_BASES)


def _uniform(value):
    arr = np.asarray(value)
    if arr.size == 0 or arr.dtype.kind not in "biuf":
        return None
    first = arr.flat[0]
    return first.item() if np.all(arr == first) else None


def _convert(graph, node, rename=None):
    """The simplified plan of ``node`` as an _E DAG (one loop over ascending ids).
    ``rename``: {leaf id: the name to print} (a loop body's placeholders)."""
    order = ancestors([node])
    simp = simplify(graph, order, [node.id])
    data = graph.nx.nodes
    rename = rename or {}
    expr = {}
    for nid in simp.leaves:
        expr[nid] = _E("name", (), rename.get(nid, data[nid]["name"]),
                       data[nid]["shape"] == (), nid)
    for nid, value in simp.consts.items():
        name = data[nid]["name"]
        c = _uniform(value)
        if c is not None:
            expr[nid] = _num(c)
        elif not _is_auto(name):
            expr[nid] = _E("name", (), name, np.ndim(value) == 0, nid)
        else:
            expr[nid] = _E("array", (), np.asarray(value), np.ndim(value) == 0, nid)
    for nid, op, attrs, ins in simp.steps:
        args = [expr[i] for i in ins]
        e = _loop_result(graph, attrs, args, ins) if op.name == "loop_out" else None
        if e is None:
            e = _from_op(op.name, attrs, args, data[nid]["shape"] == (), data, ins)
        if e.src is None and e.kind not in ("name", "num"):
            e.src = nid
        expr[nid] = e
    return expr[simp.rep.get(node.id, node.id)]   # (rep holds merged ids only)


def _loop_result(graph, attrs, args, ins):
    """A scan's or while loop's result as its recurrence (viz/loop_formula.py): a
    "loop" expression printed as its name (h_T), its recurrence added to the bindings."""
    from .loop_formula import recurrence
    spec = graph.node(ins[0]).attrs["spec"]
    rec = recurrence(spec, attrs["index"], [graph.node(i) for i in ins[1:]])
    if rec is None:
        return None
    shape = spec.out_shapes[attrs["index"]]
    return _E("loop", tuple(args[1:]), rec, shape == ())


def _from_op(name, attrs, args, scalar, data, ins):
    """One plan step as an expression, with the display rewrites of the module docstring."""
    a = args[0] if args else None
    if name in _PASS:
        return a
    if name in ("expand_dims", "squeeze", "reshape") and a.uni:
        return a          # a re-shaped scalar (−1/n spread back over a batch) is a scalar
    if name == "full":
        return _num(attrs["value"])
    if name == "zeros_like":
        return _num(0)
    if name == "ones_like":
        return _num(1)
    if name in ("sum_to", "sum", "mean"):
        return _reduction("mean" if name == "mean" else "sum", a,
                          _axes_note(name, attrs, data, ins), scalar)
    if name == "reduced_size":       # how many entries a mean averaged: rows n, or all N
        return _E("name", (), "n" if len(attrs["axis"]) == 1 else "N", True)
    if name in _COMPARE:
        return _E("cmp", args, _COMPARE[name], scalar)
    if name in _FUNCS:
        return _E("func", args, name, scalar)
    if name == "abs":
        return _E("abs", args, None, scalar)
    if name == "sqrt":
        return _E("sqrt", args, None, scalar)
    for part in (_from_arith, _from_model, _from_call):
        e = part(name, attrs, args, scalar, data, ins)
        if e is not _NOT_MINE:
            return e
    extra = ", ".join(f"{k}={v!r}" for k, v in attrs.items())
    return _E("call", args, (name, extra), scalar)


#: what a part of _from_op returns for an op it does not write
_NOT_MINE = object()


def _from_arith(name, attrs, args, scalar, data, ins):
    """Arithmetic, matmul and transposes, with the display rewrites."""
    a = args[0] if args else None
    if name == "add":
        return _add(a, args[1], scalar)
    if name == "sub":
        b = args[1]
        if b.kind == "neg":
            return _add(a, b.args[0], scalar)
        return _E("sub", (a, b), scalar=scalar)
    if name == "mul":
        return _mul(a, args[1], scalar)
    if name == "div":
        b = args[1]
        if a.kind == "div" and _is_num(a.args[0], 1):
            return _E("div", (_num(1), _mul(a.args[1], b, scalar)), scalar=scalar)
        return _E("div", (a, b), scalar=scalar)
    if name == "neg":
        if _is_num(a):
            return _num(-a.val)
        if a.kind == "neg":
            return a.args[0]
        if a.kind == "mul" and _is_num(a.args[0]):                  # −(c x) → (−c) x
            return _mul(_num(-a.args[0].val), a.args[1], scalar)
        if a.kind == "div" and a.args[0].kind in ("num", "neg"):     # −(c / d) → (−c) / d
            return _E("div", (_from_op("neg", {}, [a.args[0]], a.args[0].scalar, data, ins),
                              a.args[1]), scalar=scalar)
        return _E("neg", (a,), scalar=scalar)
    if name == "pow":
        return _E("pow", (a, args[1]), scalar=scalar)
    if name == "matmul":
        return _matmul(a, args[1], scalar)
    if name == "transpose":
        ndim = len(data[ins[0]]["shape"])
        axes = tuple(attrs["axes"])
        if axes == tuple(range(ndim - 2)) + (ndim - 1, ndim - 2):
            if a.kind == "T":
                return a.args[0]
            if a.kind == "mul" and _is_num(a.args[0]):             # (c X)ᵀ → c Xᵀ
                inner = _from_op(name, attrs, [a.args[1]], scalar, data, ins)
                return _mul(a.args[0], inner, scalar)
            return _E("T", (a,), scalar=scalar)
        return _E("call", (a,), ("transpose", f"axes={axes}"), scalar)
    return _NOT_MINE


def _from_model(name, attrs, args, scalar, data, ins):
    """The model ops, once they are single op nodes (their formulas, same algebra)."""
    a = args[0] if args else None
    if name == "linear":
        z = _matmul(a, args[1], scalar if len(args) == 2 else False)
        return z if len(args) == 2 else _add(z, args[2], scalar)
    if name == "mse":
        d = _E("sub", (a, args[1]), scalar=a.scalar and args[1].scalar)
        return _reduce(_E("pow", (d, _num(2)), scalar=d.scalar), attrs, scalar)
    if name == "l2":
        return _mul(_num(0.5), _E("norm2", (a,), scalar=True), True)
    if name == "bce_with_logits":
        z, t = a, args[1]
        el = a.scalar and t.scalar
        loss = _E("sub", (_E("func", (z,), "softplus", z.scalar), _mul(t, z, el)), scalar=el)
        return _reduce(loss, attrs, scalar)
    if name == "softmax_cross_entropy":
        z, t = a, args[1]
        ls = _E("func", (z,), "log_softmax", False)
        if attrs.get("labels"):        # t holds class indices: each row's entry at its label
            return _reduce(_E("neg", (_E("pick", (ls, t), scalar=False),), scalar=False),
                           attrs, scalar)
        per = _E("neg", (_E("sum", (_E("mul", (t, ls), scalar=False),), "class", False),),
                 scalar=False)
        return _reduce(per, attrs, scalar)
    return _NOT_MINE


def _from_call(name, attrs, args, scalar, data, ins):
    """Custom functions and loops: a call on their inputs."""
    a = args[0] if args else None
    if name == "custom_call":   # issue 21: a custom function reads as its call, f(x, y)
        return _E("call", tuple(args[1:]), (attrs["fn"].label, ""), scalar)
    if name == "custom_input":  # (its forward reads its inputs through these)
        return a
    if name == "loop":          # issue 20: a loop reads as its call on its inputs,
        return _E("call", tuple(args), (attrs["spec"].name, ""), scalar)   # scan(h₀, xs, W)
    if name == "loop_out":      # and its result k as scan[k](h₀, xs, W)
        spec = data[ins[0]]["attrs"]["spec"]
        return _E("call", tuple(args[1:]), (f"{spec.name}[{attrs['index']}]", ""), scalar)
    return _NOT_MINE


def _reduction(kind, a, note, scalar):
    """Σ or mean of ``a``, scalar factors pulled out: Σ(v / n) → Σ v / n, Σ c v → c Σ v."""
    if a.kind == "div" and a.args[1].scalar and not a.scalar:
        return _E("div", (_reduction(kind, a.args[0], note, scalar), a.args[1]), scalar=scalar)
    if a.kind == "mul" and _is_num(a.args[0]) and not a.args[1].scalar:
        return _mul(a.args[0], _reduction(kind, a.args[1], note, scalar), scalar)
    return _E(kind, (a,), note, scalar)


def _reduce(loss, attrs, scalar):
    red = attrs.get("reduction", "none" if not scalar else "mean")
    if red == "none" or (loss.scalar and scalar):
        return loss
    return _E("mean" if red == "mean" else "sum", (loss,), None, scalar)


def _axes_note(name, attrs, data, ins):
    """None for a full reduction (or the batch sum of sum_to), else an axes note."""
    if name == "sum_to":               # leading axes only: the batch sum Σ, no note
        src, dst = data[ins[0]]["shape"], attrs["shape"]
        lead = len(src) - len(dst)
        kept = tuple(lead + i for i, d in enumerate(dst) if d == 1 and src[lead + i] != 1)
        return kept or None
    axes = tuple(attrs.get("axis", ()))
    ndim = len(data[ins[0]]["shape"])
    return None if axes == tuple(range(ndim)) or attrs.get("keepdims") is None and not axes \
        else axes


# -- choosing bindings ----------------------------------------------------------------------

def _trivial(e):
    return e.kind in ("name", "num", "array") or (
        e.kind in ("T", "neg") and e.args[0].kind in ("name", "num"))


def _bindings(root, names_in_use, graph_names):
    """Shared, non-trivial subexpressions in evaluation order, each with a name."""
    uses, order, stack, seen = {}, [], [root], {id(root)}
    while stack:                       # count parents over distinct nodes
        e = stack.pop()
        order.append(e)
        for c in e.args:
            uses[id(c)] = uses.get(id(c), 0) + 1
            if id(c) not in seen:
                seen.add(id(c))
                stack.append(c)
    shared = [e for e in order if e is not root and uses.get(id(e), 0) > 1 and not _trivial(e)]
    shared.sort(key=lambda e: (e.src is None, e.src or 0))
    bound, taken = {}, set(names_in_use)
    fresh = itertools.chain(_FRESH, (f"u{k}" for k in itertools.count(1)))
    for e in shared:
        name = graph_names.get(e.src)
        if name is None or name in taken:
            name = next(n for n in fresh if n not in taken)
        taken.add(name)
        bound[id(e)] = name
    return [(bound[id(e)], e) for e in shared], bound


def _leaf_names(root):
    names, stack, seen = set(), [root], set()
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if e.kind == "name":
            names.add(e.val)
        stack.extend(e.args)
    return names


# -- printing ---------------------------------------------------------------------------

class _P:
    """A printed child: Unicode text and LaTeX as ropes (tuples of strings and child _P, so
    deep expressions print in linear time), its precedence, and its form (for spacing)."""
    __slots__ = ("text", "tex", "prec", "form", "first")

    def __init__(self, text, tex, prec, form):
        self.text, self.tex, self.prec, self.form = text, tex, prec, form
        head = text[0] if isinstance(text, tuple) else text
        self.first = head[:1] if isinstance(head, str) else head.first


def _flat(p, which):
    """The rope of ``p`` (``"text"`` or ``"tex"``) as one string, with an explicit stack."""
    out, stack = [], [getattr(p, which)]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, _P):
            stack.append(getattr(item, which))
        else:
            stack.extend(reversed(item))
    return "".join(out)


def _atom(text, tex, form="atom"):
    return _P(text, tex, ATOM, form)


def _fmt_number(v, symbols):
    for sym, val in symbols.items():
        if isinstance(v, (int, float)) and math.isclose(v, val, rel_tol=1e-12, abs_tol=0.0):
            return _atom(sym, _tex_name(sym))
    if isinstance(v, bool):
        v = int(v)
    if v == 0.5:
        return _atom("½", r"\tfrac{1}{2}", "num")
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        v = int(v)
    text = str(v) if isinstance(v, int) else repr(float(v))
    if len(text) > 9:
        text = f"{v:.6g}"
    prec = NEG if text.startswith("-") else ATOM
    return _P(text.replace("-", "−"), text, prec, "num")


#: LaTeX's special characters, as each is written to print itself in math mode
_TEX_SPECIAL = {"\\": r"\backslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&",
                "#": r"\#", "%": r"\%", "_": r"\_", "^": r"\hat{}", "~": r"\sim{}"}
_TEX_SPECIAL_RE = re.compile("[" + re.escape("".join(_TEX_SPECIAL)) + "]")


def _tex_escape(text):
    """A user's text as LaTeX that prints it: "50%" must not start a comment, "x&y" is
    no alignment tab, and "$" or a lone brace must not end the formula early."""
    return _TEX_SPECIAL_RE.sub(lambda m: _TEX_SPECIAL[m.group(0)], text)


def _tex_name(name):
    if name in _GREEK:
        return _GREEK[name]
    if len(name) == 1:
        return _tex_escape(name)
    m = re.fullmatch(r"([A-Za-z]\w*?)_\{?([^{}_]+)\}?", name)   # h_t, h_{t−1} (loops)
    if m and not m.group(2).isdigit():
        return f"{m.group(1)}_{{{_tex_escape(m.group(2).replace('−', '-'))}}}"
    m = re.fullmatch(r"([A-Za-z])_?(\d+)", name)
    if m:
        return f"{m.group(1)}_{{{m.group(2)}}}"
    return r"\mathrm{" + _tex_escape(name) + "}"


def _paren(p, below):
    if p.prec < below:
        return _P(("(", p, ")"), (r"\left(", p, r"\right)"), ATOM, "paren")
    return p


def _array_literal(arr):
    if arr.size <= 6 and arr.ndim == 1:
        inner = ", ".join(_flat(_fmt_number(v.item(), {}), "text") for v in arr)
        return _atom(f"[{inner}]", r"\left[" + inner.replace("−", "-") + r"\right]")
    return _atom(f"‹array {arr.shape}›", rf"\langle\text{{array }}{arr.shape}\rangle")


def _left(p):
    """A Σ on the left of a product is closed off: Σ x · y would read as Σ (x · y)."""
    return _P(("(", p, ")"), (r"\left(", p, r"\right)"), ATOM, "paren") \
        if p.form == "sigma" else p


def _gap(b):
    return "" if b.first == "(" else " "


def _print_one(e, kids, symbols):
    k = e.kind
    if k == "num":
        return _fmt_number(e.val, symbols)
    if k == "name":
        return _atom(e.val, _tex_name(e.val))
    if k == "array":
        return _array_literal(e.val)
    if k == "loop":                              # its recurrence is in the where clause
        return _atom(*e.val.result)
    if k in ("add", "sub"):
        a = _paren(kids[0], ADD)
        b = _paren(kids[1], ADD + (k == "sub"))
        op, top = (" + ", " + ") if k == "add" else (" − ", " - ")
        return _P((a, op, b), (a, top, b), ADD, "sum")
    if k == "mul":
        a, b = kids
        if not e.args[0].scalar and not e.args[1].scalar:        # entrywise product
            a, b = (p if p.form == "had" else _paren(p, POW) for p in (_left(a), b))
            return _P((a, " ⊙ ", b), (a, r" \odot ", b), MUL, "had")
        a, b = _paren(_left(a), MUL), _paren(b, MUL)
        if (a.prec >= POW or a.form == "num") and b.form != "num" and (
                b.prec >= POW or a.form == "num" and b.form in ("juxt", "had", "sigma")):
            return _P((a, _gap(b), b), (a, " ", b), MUL, "juxt")
        return _P((a, " · ", b), (a, r" \cdot ", b), MUL, "dot")
    if k == "matmul":
        a, b = kids
        a = _paren(_left(a), POW) if a.form in ("dot", "div", "had") else _paren(_left(a), MUL)
        b = _paren(b, POW) if b.prec <= MUL else b
        return _P((a, _gap(b), b), (a, " ", b), MUL, "juxt")
    if k == "div":
        a, b = _paren(kids[0], MUL), _paren(kids[1], POW)
        return _P((a, " / ", b), (r"\frac{", kids[0], "}{", kids[1], "}"), MUL, "div")
    if k == "neg":
        a = _paren(kids[0], MUL)
        if a.first == "−":                       # never "−−x"
            a = _P(("(", a, ")"), (r"\left(", a, r"\right)"), ATOM, "paren")
        return _P(("−", a), ("-", a), NEG, "neg")
    if k == "pow":
        base = kids[0] if kids[0].form == "atom" and kids[0].prec == ATOM \
            else _P(("(", kids[0], ")"), (r"\left(", kids[0], r"\right)"), ATOM, "paren")
        ex = e.args[1]
        if _is_num(ex) and float(ex.val).is_integer() and not _symbol_for(ex.val, symbols):
            n = int(ex.val)
            return _P((base, str(n).translate(_SUP)), (base, f"^{{{n}}}"), POW, "atom")
        p = _paren(kids[1], ATOM)
        return _P((base, "^", p), (base, "^{", kids[1], "}"), POW, "atom")
    if k == "T":
        a = _paren(kids[0], ATOM)
        return _P((a, "ᵀ"), (a, r"^\top"), POW, "atom")
    return _print_other(e, kids, symbols)


def _print_other(e, kids, symbols):
    """_print_one for reductions, functions, comparisons and any other op's call."""
    k = e.kind
    if k in ("sum", "mean"):
        a = kids[0]
        sym, tsym = ("Σ", r"\sum") if k == "sum" else ("mean", r"\operatorname{mean}")
        if e.val:
            note = "class" if e.val == "class" else "axis " + ",".join(map(str, e.val))
            sym, tsym = f"{sym}[{note}]", tsym + r"_{\text{" + note + "}}"
        if k == "mean" or a.prec < POW:
            a = _P(("(", a, ")"), (r"\left(", a, r"\right)"), ATOM, "paren")
        return _P((sym, _gap(a), a), (tsym, " ", a), MUL, "sigma")
    if k == "func":
        name, tex = _FUNCS[e.val]
        return _atom((name, "(", kids[0], ")"), (tex, r"\left(", kids[0], r"\right)"))
    if k == "pick":                              # a row's entry at its class index
        a = _paren(kids[0], ATOM)
        return _P((a, "[", kids[1], "]"), (a, "_{", kids[1], "}"), POW, "atom")
    if k == "abs":
        return _atom(("|", kids[0], "|"), (r"\left|", kids[0], r"\right|"))
    if k == "norm2":
        return _P(("‖", kids[0], "‖²"), (r"\|", kids[0], r"\|^{2}"), POW, "atom")
    if k == "sqrt":
        a = _paren(kids[0], ATOM)
        return _P(("√", a), (r"\sqrt{", kids[0], "}"), POW, "atom")
    if k == "cmp":
        a, b = _paren(kids[0], MUL), _paren(kids[1], MUL)
        return _P((a, f" {e.val} ", b), (a, f" {_COMPARE_TEX[e.val]} ", b), 0, "cmp")
    # any other op: name(args)
    name, extra = e.val
    text, tex = [name, "("], [r"\operatorname{" + name.replace("_", r"\_") + r"}\left("]
    for j, c in enumerate(kids):
        text += [", "] * bool(j) + [c]
        tex += [", "] * bool(j) + [c]
    if extra:
        text += [", " * bool(kids), extra]
        tex += [", " * bool(kids), r"\text{" + extra.replace("_", r"\_") + "}"]
    return _atom(tuple(text + [")"]), tuple(tex + [r"\right)"]))


def _symbol_for(v, symbols):
    return any(math.isclose(v, s, rel_tol=1e-12) for s in symbols.values())


def _print(root, bound, symbols, top_is_binding=False):
    """Print ``root`` bottom-up with an explicit stack; bound subexpressions by name."""
    done = {}
    stack = [(root, False)]
    while stack:
        e, expanded = stack.pop()
        if id(e) in done:
            continue
        if id(e) in bound and not (e is root and top_is_binding):
            name = bound[id(e)]
            done[id(e)] = _atom(name, _tex_name(name))
            continue
        if not expanded:
            stack.append((e, True))
            stack.extend((c, False) for c in e.args if id(c) not in done)
            continue
        done[id(e)] = _print_one(e, [done[id(c)] for c in e.args], symbols)
    p = done[id(root)]
    return _flat(p, "text"), _flat(p, "tex")


# -- the public object -----------------------------------------------------------------------

class Formula:
    """What a node computes, for people: ``.text`` (Unicode), ``.latex``, ``.body`` (the
    expression), ``.bindings`` [(name, text)] (the ``where`` clause). Displays inline in
    a notebook (HTML with Unicode math, or LaTeX where a front end prefers it)."""

    def __init__(self, lhs, body, bindings, body_tex, bindings_tex):
        self.lhs, self.body, self.bindings = lhs, body, bindings
        self._body_tex, self._bindings_tex = body_tex, bindings_tex

    @property
    def text(self) -> str:
        head = f"{self.lhs} = {self.body}" if self.lhs else self.body
        if self.bindings:
            head += "   where " + ", ".join(f"{n} = {t}" for n, t in self.bindings)
        return head

    @property
    def latex(self) -> str:
        head = f"{_tex_lhs(self.lhs)} = {self._body_tex}" if self.lhs else self._body_tex
        if self._bindings_tex:
            head += r" \quad\text{where}\quad " + r",\; ".join(
                f"{_tex_name(n)} = {t}" for n, t in self._bindings_tex)
        return head

    def _repr_latex_(self):
        return f"${self.latex}$"

    def _repr_html_(self):
        lines = [html.escape(f"{self.lhs} = {self.body}" if self.lhs else self.body)]
        lines += [f'<span class="where" style="font-style: italic">where</span> '
                  f'{html.escape(n)} = {html.escape(t)}' for n, t in self.bindings]
        indent = ' style="padding-left: 2em"'
        body = "\n".join(f'<div class="line"{indent * (k > 0)}>{ln}</div>'
                         for k, ln in enumerate(lines))
        return ('<div class="flowgrad-formula" style="display: inline-block; font-family: '
                '\'STIX Two Math\', \'Cambria Math\', \'DejaVu Serif\', serif; '
                'font-size: 1.25em; line-height: 1.5; padding: 0.3em 0.5em">\n' + body +
                "\n</div>")

    def __str__(self):
        return self.text

    def __repr__(self):
        return self.text

    def __eq__(self, other):
        return self.text == (other.text if isinstance(other, Formula) else other)

    __hash__ = None


def _tex_lhs(lhs):
    m = re.fullmatch(r"∂(.+)/∂(.+)", lhs)
    if m:
        return rf"\frac{{\partial {_tex_name(m.group(1))}}}{{\partial {_tex_name(m.group(2))}}}"
    return _tex_name(lhs)


def _loop_bindings(root, bound, symbols) -> list:
    """The recurrences of the loops in ``root``: [(name, text, tex)], each once."""
    out, seen, stack, done = [], set(), [root], set()
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        stack.extend(e.args)
        if e.kind != "loop":
            continue
        for name, pos in e.val.inits:
            if name not in done:
                done.add(name)
                out.append((name, *_print(e.args[pos], bound, symbols)))
        for name, text, tex in e.val.lines:
            if (name, text) not in done:
                done.add((name, text))
                out.append((name, text, tex))
    return out


def formula(node, *, lhs=None, symbols=None, names=None) -> Formula:
    """The expression ``node`` computes after the plan's simplification, with the user's names.

    ``lhs`` is written before an ``=`` (e.g. ``"∂L/∂w"``); ``symbols`` maps a symbol to a
    number it should stand for (``{"λ": 0.1}``): Python numbers have no names in the
    graph, so a folded coefficient is printed as its value unless named here.
    ``names`` ({node or id: text}) prints those input nodes under other names (a loop
    body's placeholders as h_{t−1}, x_t). A scan's result reads as its recurrence:
    ``h_T   where h_0 = 0, h_t = tanh(h_{t−1} W + x_t), x_t = xs[t − 1]``
    (viz/loop_formula.py).
    """
    symbols = dict(symbols or {})
    rename = {getattr(n, "id", n): text for n, text in (names or {}).items()}
    root = _convert(node.graph, node, rename)
    data = node.graph.nx.nodes
    names = {}                     # (from here: the user names of bound subexpressions)
    stack, seen = [root], set()
    while stack:                                   # user names of the sources, if not auto
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if e.src is not None and e.kind != "name":
            nm = data[e.src]["name"]
            if not _is_auto(nm):
                names[e.src] = nm
        stack.extend(e.args)
    shared, bound = _bindings(root, _leaf_names(root) | set(symbols), names)
    body, body_tex = _print(root, bound, symbols)
    binds = [(n, _print(e, bound, symbols, top_is_binding=True)) for n, e in shared]
    binds += [(n, (t, x)) for n, t, x in _loop_bindings(root, bound, symbols)]
    return Formula(lhs, body, [(n, t) for n, (t, _) in binds], body_tex,
                   [(n, x) for n, (_, x) in binds])
