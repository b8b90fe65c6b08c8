"""Write docs/ops.md from the op registry: every op's name, what it computes, and the
identity its rules implement, read from the op's own docstring (so the table cannot say
something the code does not). Run ``python docs/ops_table.py`` after changing an op;
tests/test_docs.py fails when a registered op is missing from the table."""
from __future__ import annotations

import pathlib
import re

import flowgrad as fg
from flowgrad import ops
from flowgrad.ops import REGISTRY

OUT = pathlib.Path(__file__).with_name("ops.md")
FAMILY = {"elementwise": "Elementwise", "nn": "Model", "reductions": "Reductions",
          "shape": "Shape", "indexing": "Indexing", "linalg": "Linear algebra",
          "creation": "Creation", "broadcast": "Broadcasting", "higher_order": "Higher order",
          "losses": "Losses", "classification": "Classification"}
FAMILY.update({"conv": "Convolution and pooling", "pooling": "Convolution and pooling"})
FAMILY.update({"special": "Elementwise", "activations": "Model", "statistics": "Reductions",
               "tensor": "Shape", "einsum": "Linear algebra"})   # issue 22
FAMILY.update({"gradient": "Derivatives you control"})   # issue 21: stop_gradient
FAMILY.update({"complex": "Elementwise"})   # conj, real, imag


def _split(doc: str) -> tuple[str, str]:
    """(what it computes, the derivative identity) from a docstring's first paragraph."""
    first = (doc or "").strip().split("\n\n")[0]
    # the two-space sentence break is looked for before the whitespace is collapsed
    what, _, rule = (" ".join(part.split()) for part in first.partition(".  "))
    if not rule:
        # a rule starts at ∂ or at an adjoint "x̄ =" (a barred letter, combining or
        # precomposed as ā); a trailing ":" or "," of the prose before it is dropped
        m = re.search(r"(∂|[A-Za-z]̄ =|ā =|Ā|X̄|S̄|B̄)", what)
        what, rule = (what[:m.start()].rstrip(" .;:,"), what[m.start():]) if m else (what, "")
    return what.rstrip("."), rule


def _cell(s: str) -> str:
    return s.replace("|", "\\|").replace("``", "`") or "—"


def _family(obj) -> str:
    mod = obj.forward.__module__ if isinstance(obj, ops.Op) else obj.__module__
    return FAMILY.get(mod.rsplit(".", 1)[-1], "Other")


def _fallback(op, what, rule):
    """A rule for ops whose docstring states none: piecewise constant or linear ops."""
    if rule or op is None:
        return what, rule
    if "Piecewise constant" in what:
        what = what.split(". Piecewise constant")[0].split(" Piecewise constant")[0]
        return what.rstrip("."), "0 (piecewise constant: no derivative flows)"
    if op.multilinear:
        return what, "linear: the reverse rule re-arranges Ḡ back, the forward rule is the op on the tangent"
    return what, rule


def public_rows():
    rows = []
    for name in ops.__all__:
        fn = getattr(ops, name)
        op = REGISTRY.get(name)
        what, rule = _split(fn.__doc__ if not isinstance(fn, ops.Op) else op.__doc__)
        if op is not None and fn is not op:           # a function in front of the op
            rule = _split(op.__doc__)[1] or rule   # the op's own rule, else the function's
        what, rule = _fallback(op, what, rule)
        kind = "op" if op is not None else "composite"
        if kind == "composite" and not rule:
            rule = "from the ops it is built of"
        rows.append((_family(fn), name, kind, what, rule))
    return rows


def library_ops() -> list[str]:
    """Names of the registered ops that flowgrad itself defines (tests register their own)."""
    return sorted(n for n, op in REGISTRY.items()
                  if getattr(op.forward, "__module__", "").startswith("flowgrad."))


def internal_rows():
    public = set(ops.__all__)
    rows = []
    for name in library_ops():
        if name in public:
            continue
        what, rule = _fallback(REGISTRY[name], *_split(REGISTRY[name].__doc__))
        rows.append((name, what, rule))
    return rows


#: how derivatives of complex values work, and which ops give them (flowgrad/autodiff.py's
#: COMPLEX_SAFE and HOLOMORPHIC)
COMPLEX = [
    "**Complex values** follow PyTorch's convention: the gradient of a real loss L with",
    "respect to a complex z is 2 ∂L/∂z̄ (the conjugate Wirtinger derivative, torch's `.grad`;",
    "−∇ is the direction of steepest descent). So a holomorphic op's reverse rule passes",
    "v̄·conj(f′(z)) back (the identities below are written for real values: for complex",
    "ones the derivative factor is conjugated, x̄ = Ḡ·conj(y) for x·y, Ā = Ḡ Bᴴ for A @ B)",
    "and its forward rule is f′(z)·ż, not conjugated (torch.func.jvp). A real input next to",
    "a complex one gets the real part of its term, in its own dtype. Supported: sums,",
    "differences, means, reshapes, indexing, concatenation, `where`, `abs` (z̄ = v̄·z/|z|),",
    "`conj`, `real`, `imag`, `astype`, and the holomorphic `mul`, `div`, `pow`, `exp`, `log`,",
    "`log1p`, `sqrt`, `sin`, `cos`, `tan`, `tanh`, `matmul`, `einsum`, `linear`, to any",
    "order. Any other op's derivative where a complex value meets it (`sigmoid`, `prod`,",
    "`solve` …) is a `DifferentiationError` naming the op, in both modes. Loops (`scan`,",
    "`fori_loop`, `while_loop`, `cond`) carry complex values through the same rules.",
    "`fg.jacobian` and `fg.hessian` of a complex input or output are refused too (a",
    "forward Jacobian would hold f′, a reverse one conj f′): use `fg.jvp`/`fg.vjp`. So is",
    "`fg.grad` of a complex scalar output, as torch's `backward()` and `jax.grad` refuse it",
    "(which of re y, im y?): differentiate a real loss, or give `fg.vjp` a cotangent;",
    "`fg.adjoints` of one takes an explicit `seed=` (`seed=1` is torch's `backward(1)`),",
    "and a trace of a program whose first output is complex records no adjoints.",
    "",
]


def render() -> str:
    lines = [
        "# Op table",
        "",
        "Every op is `fg.NAME` and follows numpy's name, signature and broadcasting. An",
        "**op** is one node of the graph with its own reverse rule (vjp) and forward rule",
        "(jvp), both written in flowgrad ops, so every derivative can be differentiated",
        "again; a **composite** builds a few op nodes. Ḡ (or g) is the adjoint arriving at",
        "the op's output, `ans` its output value. Broadcasting is undone once, by the sweep",
        "(`sum_to`), never inside a rule. `help(fg.NAME)` shows the same text, and",
        "`inspect.signature(fg.NAME)` the call: inputs may be given by those names",
        "(`fg.pow(x, p=2.0)`); a keyword that names no input or option of the op, or an",
        "input given twice, is a `UsageError` when the node is built.",
        "",
        "*Generated by `python docs/ops_table.py` from the op registry; do not edit by hand.*",
        "",
    ] + COMPLEX
    rows = public_rows()
    for fam in dict.fromkeys(r[0] for r in rows):
        lines += [f"## {fam}", "", "| op | kind | computes | derivative (rule identity) |",
                  "|---|---|---|---|"]
        for _, name, kind, what, rule in (r for r in rows if r[0] == fam):
            lines.append(f"| `{name}` | {kind} | {_cell(what)} | {_cell(rule)} |")
        lines.append("")
    lines += ["## Ops the rules use", "",
              "Nodes that derivative rules, broadcasting and the higher-order helpers build; they",
              "show up in drawings of `backward=True` graphs.", "",
              "| op | computes | derivative (rule identity) |", "|---|---|---|"]
    for name, what, rule in internal_rows():
        lines.append(f"| `{name}` | {_cell(what)} | {_cell(rule)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    assert fg  # every op module is imported (and so registered) by importing flowgrad
    OUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUT} ({len(REGISTRY)} registered ops)")
