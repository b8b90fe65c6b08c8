"""Small formatters for drawings: numbers, arrays, names, colours, rules and node labels.

Each function formats one thing, so a drawing's look can be changed in one place
and the walkthrough reuses exactly the text the static drawing shows. Labels are
Graphviz HTML-like labels (a table per node, micrograd's "value | grad" rows).
"""
from __future__ import annotations

import html
import re
import weakref

import numpy as np

from . import rules as R
from .rule_expr import fmt_shape  # noqa: F401  ((3,) style, "?" for an open length)

#: PyTensor's colour code: inputs green, shared variables yellow-green, constants
#: spring green, outputs blue; op nodes pink like its Elemwise; derivative nodes peach.
COLOURS = {
    "placeholder": "limegreen",
    "variable": "yellowgreen",
    "constant": "springgreen",
    "op": "#FFAABB",
    "loss": "dodgerblue",
    "derivative": "#FDD0A2",
    "scope": "#EEEEEE",
    "adjoint_row": "#FFF2CC",
}
FONT = "DejaVu Sans"
#: arrays with more entries than this are summarised (mean, min/max, norm), in drawings and
#: walkthroughs alike; 12 shows a 4×3 matrix in full, so its v̄ can be checked by hand
MAX_ELEMS = 12
BAR = "\u0304"  # combining macron: "w" + BAR is w̄


def esc(text) -> str:
    """Escape text for an HTML-like label (only & < > " matter to Graphviz)."""
    return html.escape(str(text), quote=True)


def plain(text) -> str:
    """Text for a plain (quoted) DOT string: a label, a tooltip, a cluster's title.
    Graphviz reads a backslash there as an escape ("\\N" is the node's name, and a
    trailing one eats the closing quote: a syntax error), so a user's backslash is
    doubled; real newlines stay line breaks."""
    return str(text).replace("\\", "\\\\")


# -- numbers and arrays ----------------------------------------------------------------

def fmt_number(x, precision: int = 4) -> str:
    """One number to ``precision`` significant digits ("0.2689", "-1.5e-07", "nan")."""
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    text = f"{x:.{precision}g}"
    return "0" if text == "-0" else text  # −0.0 is just 0 to a reader




def shape_text(shape) -> str:
    """``fmt_shape`` for a box's header: nothing for a scalar (no bare "()")."""
    return fmt_shape(shape) if len(shape) else ""


def fmt_full(a, precision: int = 4) -> list[str]:
    """Every entry of a small array, one text line per row."""
    a = np.asarray(a)
    if a.ndim == 0:
        return [fmt_number(a.item(), precision)]
    text = np.array2string(a, separator=" ", max_line_width=10_000, threshold=10**9,
                           formatter={"all": lambda v: fmt_number(v, precision)})
    return [line.strip() for line in text.splitlines()]


def fmt_summary(a, precision: int = 4) -> list[str]:
    """A large array as mean, min/max and 2-norm (its shape is in the header)."""
    a = np.asarray(a)
    if a.size == 0:
        return ["(empty)"]
    if a.dtype.kind not in "iufc":
        return [f"{a.dtype} array"]
    f = lambda v: fmt_number(v, precision)  # noqa: E731
    mag = np.abs(a) if a.dtype.kind == "c" else a
    return [f"mean {f(a.mean())}",
            f"min {f(mag.min())}  max {f(mag.max())}",
            f"‖·‖ {f(np.linalg.norm(a.ravel()))}"]


def fmt_value(a, precision: int = 4, max_elems: int = MAX_ELEMS) -> list[str]:
    """Scalars and small arrays in full; larger ones as a summary."""
    a = np.asarray(a)
    if a.size <= max_elems and a.ndim <= 2:
        return fmt_full(a, precision)
    return fmt_summary(a, precision)


def one_line(a, precision: int = 4, max_elems: int = MAX_ELEMS) -> str:
    """``fmt_value`` on a single line, for captions and tooltips."""
    lines = fmt_value(a, precision, max_elems)
    return lines[0] if len(lines) == 1 else "; ".join(lines)


# -- names ------------------------------------------------------------------------------

def base_name(node) -> str:
    """The node's name without its scope prefix ("layer1/W" → "W")."""
    return node.name.rsplit("/", 1)[-1]


def _auto_pattern(node) -> re.Pattern:
    head = node.op.name if node.op is not None else node.kind
    alts = {re.escape(head), "const", "variable", "seed"}
    return re.compile(rf"(?:{'|'.join(alts)})(?:_\d+)*")


def user_name(node) -> str | None:
    """The name a user gave (``.named("z")``, ``variable(..., name="w")``), else None.

    Generated names ("mul_12", "const", "variable_3") are not worth a row of their own.
    """
    base = base_name(node)
    return None if _auto_pattern(node).fullmatch(base) else base


def is_scalar_constant(node) -> bool:
    return node.kind == "constant" and node.shape == ()


_SUB = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")


def short_label(node) -> str:
    """A generated name made readable: "mul_12" → "mul₁₂", "const_3" → "const₃"."""
    head, sep, tail = base_name(node).rpartition("_")
    if sep and tail.isdigit() and head:
        return head + tail.translate(_SUB)
    return base_name(node)


def display_name(node, precision: int = 4) -> str:
    """How a node is referred to everywhere (box title, rules, captions, edges): its user
    name — scoped ("hidden/W") where another node's would read the same ("out/W") —
    the value of a scalar constant, else its short label ("mul₄")."""
    if is_scalar_constant(node) and user_name(node) is None:
        return fmt_number(np.asarray(node.value).item(), precision)
    if node.op is not None and node.op.name == "loop" and user_name(node) is None:
        return node.attrs["spec"].label()      # issue 20: "scan × T", "while_loop", "cond"
    name = user_name(node)
    if name is not None and name in _ambiguous(node.graph):
        return node.name
    return name or short_label(node)


#: graph -> (its node count when looked at, the base names two scoped names share)
_SHARED = weakref.WeakKeyDictionary()


def _ambiguous(graph) -> set:
    """Base names ("W") that two nodes of ``graph`` have in different scopes (computed
    once per size of the graph: graphs only grow)."""
    known = _SHARED.get(graph)
    if known is None or known[0] != len(graph):
        full = {}
        for node in graph.nodes:
            full.setdefault(base_name(node), set()).add(node.name)
        known = (len(graph), {b for b, names in full.items() if len(names) > 1})
        _SHARED[graph] = known
    return known[1]


def bar(name: str) -> str:
    """The adjoint's symbol: "w" → "w̄"; longer names as "v̄[name]" (a macron over
    one letter of a long name would be misleading)."""
    return name + BAR if len(name) == 1 else f"v̄[{name}]"


def op_text(node) -> str:
    return node.op.name if node.op is not None else node.kind


# -- the rule that carries v̄ back along an edge -------------------------------------------
# Each op's rule is declared once, in ``rules`` (an expression that prints the caption and
# evaluates to the number beside it); these functions print it with the boxes' labels.

def drawn_rule(child, argnum, names, ans, shapes=None, out_shape=None):
    """(the ``Rule`` carrying v̄ from ``child`` back to its argument ``argnum``, the
    context it is printed and evaluated in); ``shapes``/``out_shape``: traced shapes."""
    c = R.context(child, argnum, [_operand(n) for n in names], _operand(ans), shapes,
                  out_shape)
    return R.rule(op_text(child), c), c


def _operand(name):
    """A label as an operand: a scoped name in parentheses, "(hidden/W)ᵀ", not "hidden/Wᵀ"."""
    return f"({name})" if "/" in name else name


def rule_text(child, argnum: int, precision: int = 4, names=None, shapes=None,
              out_shape=None) -> str:
    """The reverse rule of ``child``'s argument ``argnum`` as text, e.g. "W̄ += v̄ xᵀ";
    ``names`` overrides the inputs' labels (an input drawn inside a composite's box)."""
    names = names or [display_name(n, precision) for n in child.inputs]
    rule, c = drawn_rule(child, argnum, names, display_name(child, precision), shapes,
                         out_shape)
    return f"{bar(names[argnum])} {rule.rhs(c)}"


def node_local_formula(child, argnum, precision=4, names=None) -> str | None:
    """∂child/∂(argument ``argnum``) as a formula over the labels the boxes show (the
    factor of v̄ in the rule, or its textbook form: "σ(z)(1 − σ(z))"); None when the rule
    is no such product (matrix rules, scatters)."""
    if child.op is None:
        return None
    names = names or [display_name(n, precision) for n in child.inputs]
    expr, c = drawn_local(child, argnum, names, display_name(child, precision))
    return None if expr is None else expr.text(c)[0]


def drawn_local(child, argnum, names, ans):
    """(∂child/∂argument ``argnum`` as an expression or None, its context): the formula
    a scalar edge is drawn with, beside its number."""
    c = R.context(child, argnum, [_operand(n) for n in names], _operand(ans))
    return R.local(op_text(child), c), c


# -- node labels ------------------------------------------------------------------------------

def text_row(text_lines, *, bgcolor=None, cell_id=None, size=None) -> str:
    """One table row; ``cell_id`` (walkthrough only) tags the cell in the SVG."""
    attrs = ' ALIGN="LEFT" BALIGN="LEFT" BORDER="1" SIDES="T"'
    if bgcolor:
        attrs += f' BGCOLOR="{bgcolor}"'
    if cell_id:
        # Graphviz only emits a cell's ID in SVG when the cell is a link; the
        # walkthrough strips the link again and keeps the <g id=...>.
        attrs += f' ID="{cell_id}" HREF="#"'
    body = "<BR/>".join(esc(t) for t in text_lines)
    if size:
        body = f'<FONT POINT-SIZE="{size}">{body}</FONT>'
    return f"<TR><TD{attrs}>{body}</TD></TR>"


def header(node, colour: str, marks=(), precision: int = 4, shape=None, op=None) -> str:
    """The bold label (a user's name, else "mul₄"), then the op when the label does not
    already say it, the shape unless scalar, and any marks, in small grey. ``shape`` is
    the traced value's shape (it knows the lengths a graph leaves open); ``op`` replaces
    the op's name (a formula with folded constants, "pow(·, 2)")."""
    parts = []
    op = op_text(node) if op is None else op
    if user_name(node) is not None or op != op_text(node) or node.op is None:
        parts.append(op)
    shape_s = shape_text(node.shape if shape is None else shape)
    if shape_s:
        parts.append(shape_s)
    detail = " ".join(parts)
    if marks:
        detail = " · ".join(([detail] if detail else []) + list(marks))
    return header_row(display_name(node, precision), detail, colour)


def header_row(title, detail, colour) -> str:
    """A box's first row: the bold title, then ``detail`` in small grey (if any)."""
    small = f' <FONT POINT-SIZE="10" COLOR="gray20">{esc(detail)}</FONT>' if detail else ""
    return f'<TR><TD ALIGN="LEFT" BGCOLOR="{colour}"><B>{esc(title)}</B>{small}</TD></TR>'


def node_label(node, colour, *, value=None, adjoint=None, marks=(), precision=4,
               max_elems=MAX_ELEMS, rounded=False, border=1, border_colour="black",
               cell_ids=False, op=None) -> str:
    """micrograd's record: name | value | v̄, as an HTML-like label. A rounded (op) label
    is a borderless table: the node's own rounded outline frames it with a margin, so the
    coloured header never pokes out of the round corners (``frame_attrs``)."""
    rows = [header(node, colour, marks, precision,
                   None if value is None else np.shape(value), op)]
    nid = f"n{node.id}"
    rows += value_rows(nid, value, adjoint, precision, max_elems, cell_ids)
    if rounded:
        border = 0
    # No cell borders: rows are divided by a rule on their top side only.
    return (f'<<TABLE BORDER="{border}" COLOR="{border_colour}" CELLBORDER="0" '
            f'CELLSPACING="0" CELLPADDING="3">' + "".join(rows) + "</TABLE>>")


def value_rows(key, value, adjoint, precision, max_elems, cell_ids) -> list:
    """The value row and the v̄ row of a box (either may be None); ``key`` names their
    cells for the walkthrough."""
    rows = []
    if value is not None:
        rows.append(text_row(fmt_value(value, precision, max_elems),
                             cell_id=f"{key}_val" if cell_ids else None))
    if adjoint is not None:
        rows.append(text_row(["v̄ " + line for line in fmt_value(adjoint, precision, max_elems)],
                             bgcolor=COLOURS["adjoint_row"],
                             cell_id=f"{key}_adj" if cell_ids else None))
    return rows


def frame_attrs(border=1, border_colour="black") -> dict:
    """Graphviz attributes of the rounded outline drawn around an op's label."""
    return {"shape": "box", "style": "rounded,filled", "fillcolor": "white",
            "margin": "0.03,0.03", "penwidth": str(border), "color": border_colour}


# -- constants folded into the ops that use them --------------------------------------------

_INFIX = {"add": "+", "sub": "−", "div": "/"}


def constant_text(node, precision=4) -> str:
    """A constant as an operand: its name or value ("0.5", "[1 2]", "const₃ (3, 4)")."""
    name = user_name(node)
    if name:
        return name
    value = np.asarray(node.value)
    if value.size <= 4 and value.ndim <= 1:
        return one_line(value, precision)
    return f"{short_label(node)} {fmt_shape(value.shape)}"


def folded_op_text(node, hidden, precision=4) -> str:
    """The op with the hidden constants it uses written in and "·" for each drawn
    operand: "0.5 ·", "· + 1", "pow(·, 2)", "sum(·)" when nothing is folded."""
    op = op_text(node)
    ins = node.inputs
    if not any(i.id in hidden for i in ins):
        return op
    args = [constant_text(i, precision) if i.id in hidden else "·" for i in ins]
    if op == "mul" and len(args) == 2:
        a, b = args if args[0] != "·" else args[::-1]  # the constant first: "0.5 ·"
        return f"{a} {b}" if b == "·" else f"{a} · {b}"
    if op in _INFIX and len(args) == 2:
        return f"{args[0]} {_INFIX[op]} {args[1]}"
    return f"{op}({', '.join(args)})"


def constant_label(node, value, precision=4, max_elems=MAX_ELEMS) -> str:
    """A constant is small: just its value (and its name, if a user gave one)."""
    name = user_name(node)
    lines = fmt_value(value, precision, max_elems)
    if name:
        lines = [name + " = " + lines[0]] + lines[1:]
    return "\n".join(lines)


def scope_label(path, n_nodes, op_counts, outputs, precision=4) -> str:
    """A collapsed name scope: its path, size, commonest ops and its outputs' numbers."""
    ops = ", ".join(f"{op}×{k}" for op, k in op_counts[:4])
    rows = [f'<TR><TD BGCOLOR="{COLOURS["scope"]}"><B>{esc(path)}</B> '
            f'<FONT POINT-SIZE="10">({n_nodes} nodes)</FONT></TD></TR>',
            f'<TR><TD ALIGN="LEFT"><FONT POINT-SIZE="10">{esc(ops)}</FONT></TD></TR>']
    for text in outputs:
        rows.append(f'<TR><TD ALIGN="LEFT" BALIGN="LEFT"><FONT POINT-SIZE="10">'
                    f'{esc(text)}</FONT></TD></TR>')
    return ('<<TABLE BORDER="2" CELLBORDER="0" CELLSPACING="0" CELLPADDING="3" '
            'STYLE="ROUNDED">' + "".join(rows) + "</TABLE>>")


def scope_output_text(node, value, adjoint, precision=4) -> str:
    """One line per scope output: "h (32, 16): mean 0.1 | v̄ ‖·‖ 0.3"."""
    shape = node.shape if value is None else np.shape(value)
    text = " ".join(filter(None, ["→", display_name(node, precision), shape_text(shape)]))
    if value is not None:
        text += f": {_brief(value, precision)}"
    if adjoint is not None:
        text += f" | v̄ {_brief(adjoint, precision)}"
    return text


def _brief(a, precision) -> str:
    a = np.asarray(a)
    if a.size == 1:
        return fmt_number(a.item(), precision)
    if a.dtype.kind not in "iufc":
        return str(a.dtype)
    return f"‖·‖ {fmt_number(np.linalg.norm(a.ravel()), precision)}"
