"""einsum: sums of products over labelled axes, as numpy.einsum.

The spec is parsed and checked when the node is built (one letter per axis; lengths of
one letter agree; output letters appear in some input, once), and stored in explicit
form, ``"ij,jk->ik"``. Einsum is linear in each operand, so its forward rule is einsum
with the tangent in that operand's place, and its reverse rule is another einsum: the
adjoint of operand k is ``einsum("<out>,<others>-><k>", Ḡ, *others)``, broadcast over
the letters only operand k has (axes it sums on its own).

Not supported (refused with the reason): ``...``, a letter repeated within one
operand (a diagonal: use ``fg.trace`` or ``getitem``), and numpy's broadcasting of a
length-1 axis against a longer one of the same letter (``fg.broadcast_to`` it first).
"""
from __future__ import annotations

import string

from flowgrad.errors import ArgumentError, UsageError
from .base import Op, apply, as_node, at_user_line, half_widened, result_dtype, shape_error
from .complex import conj_of

LETTERS = set(string.ascii_letters)


def parse(spec, nodes):
    """(input terms, output term) of an einsum spec over ``nodes``, checked."""
    if not isinstance(spec, str):
        raise UsageError(f"einsum: the spec must be a string, got {spec!r}" + at_user_line())
    text = spec.replace(" ", "")
    if "." in text:
        raise shape_error("einsum", nodes, f"spec {spec!r}: '...' is not supported; "
                          "name every axis with a letter")
    lhs, arrow, rhs = text.partition("->")
    terms = lhs.split(",")
    bad = set(text.replace("->", "").replace(",", "")) - LETTERS
    if bad or "->" in rhs or "-" in lhs or ">" in lhs:
        raise shape_error("einsum", nodes, f"spec {spec!r}: axes are named by letters "
                          "a–z, A–Z, operands separated by ',' and the output after '->'")
    if len(terms) != len(nodes):
        raise shape_error("einsum", nodes, f"spec {spec!r} names {len(terms)} operands, "
                          f"but {len(nodes)} were given")
    if not arrow:   # implicit output: the letters used once, in alphabetical order
        counts = {c: lhs.count(c) for c in set(lhs) - {","}}
        rhs = "".join(sorted(c for c, k in counts.items() if k == 1))
    _check_terms(spec, terms, rhs, nodes)
    return tuple(terms), rhs


def _check_terms(spec, terms, out, nodes):
    sizes = {}
    for term, node in zip(terms, nodes):
        if len(term) != len(node.shape):
            raise shape_error("einsum", nodes, f"spec {spec!r}: term {term!r} has "
                              f"{len(term)} letters for {node.name!r} with "
                              f"{len(node.shape)} axes")
        if len(set(term)) != len(term):
            raise shape_error("einsum", nodes, f"spec {spec!r}: a letter repeated within "
                              f"{term!r} (a diagonal) is not supported")
        for c, n in zip(term, node.shape):
            if n is not None and sizes.setdefault(c, n) != n:
                raise shape_error("einsum", nodes, f"spec {spec!r}: letter {c!r} has "
                                  f"lengths {sizes[c]} and {n} (a length 1 is not "
                                  "broadcast here: fg.broadcast_to the operand first)")
    used = set("".join(terms))
    if len(set(out)) != len(out) or not set(out) <= used:
        raise shape_error("einsum", nodes, f"spec {spec!r}: the output {out!r} must name "
                          "letters of the inputs, each once")


def _einsum_infer(*xs, spec):
    lhs, out = spec.split("->")
    sizes = {}
    for term, x in zip(lhs.split(","), xs):
        for c, n in zip(term, x.shape):
            if sizes.get(c) is None:
                sizes[c] = n
    return tuple(sizes[c] for c in out), result_dtype(*xs)


def _einsum_vjp(argnum, g, ans, *xs, spec):
    from .broadcast import broadcast_to_like
    from .shape import expand_dims
    lhs, out = spec.split("->")
    terms = lhs.split(",")
    others = [t for k, t in enumerate(terms) if k != argnum]
    seen = set(out).union(*others)
    mine = terms[argnum]
    kept = "".join(c for c in mine if c in seen)
    # the other operands conjugated when complex (PyTorch's convention, ops/complex.py)
    rest = [conj_of(x) for k, x in enumerate(xs) if k != argnum]
    part = apply(_einsum, g, *rest, spec=",".join([out, *others]) + "->" + kept)
    if kept == mine:
        return part
    # letters only this operand has were summed away: the adjoint is constant along them
    missing = tuple(i for i, c in enumerate(mine) if c not in seen)
    return broadcast_to_like(expand_dims(part, missing), xs[argnum])


_einsum = Op("einsum", lambda xp, *xs, spec: half_widened(lambda *v: xp.einsum(spec, *v), *xs),
             _einsum_infer,
             vjp=_einsum_vjp, variadic=True, multilinear=True,
             doc="Sum of products over labelled axes, linear in each operand: its x̄ = "
                 "einsum(\"out,others->k\", Ḡ, others) for operand k (broadcast over the "
                 "letters only it has); the forward rule is einsum with the tangent in "
                 "its place.")


def _check_spec(*xs, spec):
    """einsum's spec as einsum() hands it over: checked by :func:`parse` against the
    operands, and already in the written-out form "terms->out". Its ``check_attrs``: a
    graph file (io/opsig.py) must give what einsum() would have built."""
    terms, out = parse(spec, xs)
    if spec != ",".join(terms) + "->" + out:
        raise ArgumentError(f"einsum: the spec {spec!r:.60} is not in the form einsum() "
                            f"stores ({','.join(terms)}->{out})")


_einsum.check_attrs = _check_spec


def einsum(spec, *xs):
    """numpy.einsum over nodes, e.g. ``einsum("ij,jk->ik", a, b)``; without ``->`` the
    output is the letters used once, alphabetically. Every operand's adjoint is an
    einsum too: x̄ₖ = einsum("out,others->k", v̄, others).

    Refused, with the reason: ``...``, a letter repeated within one operand (a diagonal)
    and a length-1 axis broadcast against a longer one of the same letter."""
    xs = [as_node(x) for x in xs]
    if not xs:
        raise ArgumentError("einsum needs at least one operand" + at_user_line())
    terms, out = parse(spec, xs)
    return apply(_einsum, *xs, spec=",".join(terms) + "->" + out)
