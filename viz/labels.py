"""Small formatters for drawings: numbers, arrays, names, colours, rules and node labels.

Each function formats one thing, so a drawing's look can be changed in one place
and the walkthrough reuses exactly the text the static drawing shows. Labels are
Graphviz HTML-like labels (a table per node, micrograd's "value | grad" rows).
"""
from __future__ import annotations

import html
import re

import numpy as np

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
BAR = "\u0304"  # combining macron: "w" + BAR is w̄


def esc(text) -> str:
    """Escape text for an HTML-like label (only & < > " matter to Graphviz)."""
    return html.escape(str(text), quote=True)


# -- numbers and arrays ----------------------------------------------------------------

def fmt_number(x, precision: int = 4) -> str:
    """One number to ``precision`` significant digits ("0.2689", "-1.5e-07", "nan")."""
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    text = f"{x:.{precision}g}"
    return "0" if text == "-0" else text  # −0.0 is just 0 to a reader


def fmt_shape(shape) -> str:
    """(3,) style, with "?" for a length known only at run time."""
    inner = ", ".join("?" if s is None else str(s) for s in shape)
    return f"({inner}{',' if len(shape) == 1 else ''})"


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


def fmt_value(a, precision: int = 4, max_elems: int = 12) -> list[str]:
    """Scalars and small arrays in full; larger ones as a summary."""
    a = np.asarray(a)
    if a.size <= max_elems and a.ndim <= 2:
        return fmt_full(a, precision)
    return fmt_summary(a, precision)


def one_line(a, precision: int = 4, max_elems: int = 12) -> str:
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
    name, the value of a scalar constant, else its short label ("mul₄")."""
    if is_scalar_constant(node) and user_name(node) is None:
        return fmt_number(np.asarray(node.value).item(), precision)
    return user_name(node) or short_label(node)


def bar(name: str) -> str:
    """The adjoint's symbol: "w" → "w̄"; longer names as "v̄[name]" (a macron over
    one letter of a long name would be misleading)."""
    return name + BAR if len(name) == 1 else f"v̄[{name}]"


def op_text(node) -> str:
    return node.op.name if node.op is not None else node.kind


# -- the rule that carries v̄ back along an edge -------------------------------------------

#: op name -> one template per argument: "{0}", "{1}" are the operands, "{ans}" the output,
#: and v̄ the output's adjoint. Ops missing here fall back to a generic "vjp" text.
RULES = {
    "add": ("+= v̄", "+= v̄"),
    "sub": ("+= v̄", "−= v̄"),
    "mul": ("+= v̄ · {1}", "+= v̄ · {0}"),
    "div": ("+= v̄ / {1}", "−= v̄ · {ans} / {1}"),
    "neg": ("−= v̄",),
    "pow": ("+= v̄ · {1} {0}^({1}−1)", "+= v̄ · {ans} log {0}"),
    "exp": ("+= v̄ · {ans}",),
    "log": ("+= v̄ / {0}",),
    "log1p": ("+= v̄ / (1 + {0})",),
    "sqrt": ("+= v̄ / (2 {ans})",),
    "tanh": ("+= v̄ · (1 − {ans}²)",),
    "sin": ("+= v̄ · cos {0}",),
    "cos": ("−= v̄ · sin {0}",),
    "abs": ("+= v̄ · sign {0}",),
    "relu": ("+= v̄ · [{0} > 0]",),
    "sigmoid": ("+= v̄ · {ans}(1 − {ans})",),
    "softplus": ("+= v̄ · σ({0})",),
    "bce_with_logits": ("+= v̄ · (σ({0}) − {1})", "−= v̄ · {0}"),
    "maximum": ("+= v̄ · [{0} ≥ {1}]", "+= v̄ · [{1} > {0}]"),
    "minimum": ("+= v̄ · [{0} ≤ {1}]", "+= v̄ · [{1} < {0}]"),
    "matmul": ("+= v̄ {1}ᵀ", "+= {0}ᵀ v̄"),
    "sum": ("+= broadcast(v̄)",),
    "mean": ("+= broadcast(v̄) / n",),
    "transpose": ("+= v̄ᵀ",),
    "reshape": ("+= reshape(v̄)",),
    "broadcast_to": ("+= Σ v̄ to {0}'s shape",),
    "expand_dims": ("+= squeeze(v̄)",),
    "squeeze": ("+= expand_dims(v̄)",),
    "sum_to": ("+= broadcast(v̄)",),
    "broadcast_like": ("+= Σ v̄ to {0}'s shape", ""),
    "getitem": ("+= scatter(v̄)",),
    "logsumexp": ("+= v̄ · softmax({0})",),
    # the model ops (primitives, or composite groups of the same name)
    "linear": ("+= v̄ {1}ᵀ", "+= {0}ᵀ v̄", "+= Σ v̄"),
    "mse": ("+= v̄ · 2({0} − {1}) / n", "−= v̄ · 2({0} − {1}) / n"),
    "l2": ("+= v̄ · {0}",),
    "softmax_cross_entropy": ("+= v̄ · (softmax({0}) − {1}) / n", "−= v̄ · log softmax({0}) / n"),
    # issue 21: nothing flows back through stop_gradient; remat_after passes v̄ to x only
    "stop_gradient": ("+= 0 (stop_gradient)",),
    "remat_after": ("+= v̄", ""),
}

#: local derivatives whose textbook form reads better than the rule's own text
LOCAL = {
    "sigmoid": ("σ({0})(1 − σ({0}))",),
    "tanh": ("1 − tanh²({0})",),
    "exp": ("exp({0})",),
    "softplus": ("σ({0})",),
}


def local_formula(op, names, ans, argnum, scalar=True) -> str | None:
    """∂ans/∂(argument ``argnum``) as a formula over the box labels ``names``, read off the
    rule that carries v̄ back ("+= v̄ · {1}" → "x"); None when the rule is not a product
    with v̄ (matrix rules, scatters). ``scalar``: a mean's "/ n" is 1 and left out."""
    local = LOCAL.get(op, ())
    if argnum < len(local) and local[argnum]:
        return local[argnum].format(*names, ans=ans)
    table = RULES.get(op)
    if table is None or argnum >= len(table) or not table[argnum]:
        return None
    sign, rest = table[argnum][:2], table[argnum][3:].strip()
    if rest == "v̄":
        body = "1"
    elif rest.startswith("v̄ · "):
        body = rest[len("v̄ · "):]
    elif rest.startswith("v̄ / "):
        body = "1 / " + rest[len("v̄ / "):]
    else:
        return None
    body = body.format(*names, ans=ans)
    if scalar:
        body = body.replace(" / n", "")
    return body if sign == "+=" else "−" + body


def node_local_formula(child, argnum, precision=4, names=None) -> str | None:
    """``local_formula`` for an op node's argument, in the labels the boxes show."""
    if child.op is None:
        return None
    names = names or [display_name(n, precision) for n in child.inputs]
    return local_formula(op_text(child), names, display_name(child, precision), argnum,
                         all(n.shape == () for n in child.inputs))


def rule_rhs(op, names, ans, argnum) -> str:
    """The right-hand side of a reverse rule over the labels ``names``: "+= v̄ · x"."""
    table = RULES.get(op)
    if table is not None and argnum < len(table) and table[argnum]:
        return table[argnum].format(*names, ans=ans)
    return f"+= vjp_{op}[{argnum}](v̄)"


def rule_text(child, argnum: int, precision: int = 4, names=None) -> str:
    """The reverse rule of ``child``'s argument ``argnum`` as text, e.g. "W̄ += v̄ xᵀ";
    ``names`` overrides the inputs' labels (an input drawn inside a composite's box)."""
    inputs = child.inputs
    names = names or [display_name(n, precision) for n in inputs]
    rhs = rule_rhs(op_text(child), names, display_name(child, precision), argnum)
    if inputs[argnum].shape != child.shape and op_text(child) not in RULES_RESHAPING:
        rhs += f" summed to {fmt_shape(inputs[argnum].shape)}"
    return f"{bar(names[argnum])} {rhs}"


#: ops whose rules already produce the input's shape (no broadcasting to undo)
RULES_RESHAPING = {"matmul", "sum", "mean", "transpose", "reshape", "broadcast_to",
                   "expand_dims", "squeeze", "sum_to", "broadcast_like", "getitem",
                   "logsumexp", "concatenate", "stack", "trace", "det", "logdet", "inv",
                   "solve", "norm", "eigvalsh", "dot", "outer", "reduced_size",
                   "linear", "mse", "l2", "softmax_cross_entropy"}


# -- node labels ------------------------------------------------------------------------------

def _row(text_lines, *, bgcolor=None, cell_id=None, size=None) -> str:
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
               max_elems=12, rounded=False, border=1, border_colour="black",
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
        rows.append(_row(fmt_value(value, precision, max_elems),
                         cell_id=f"{key}_val" if cell_ids else None))
    if adjoint is not None:
        rows.append(_row(["v̄ " + line for line in fmt_value(adjoint, precision, max_elems)],
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


def constant_label(node, value, precision=4, max_elems=12) -> str:
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
