"""A loop's result written as its recurrence (``fg.viz.formula`` of a scan's result).

``formula(hT)`` of ``hT, ys = fg.scan(lambda h, x: (fg.tanh(h @ W + x), ...), h0, xs)``
reads ``h_T   where h_0 = 0, h_t = tanh(h_{t−1} W + x_t), x_t = xs[t − 1]``: the result
named as the textbook does (t = 1 … T), then the recurrence — the body's own formula with
its placeholders named for what they stand for (the carry entering, the x slice, the
captured nodes of the graph around). A while loop's final carry reads ``c_n`` where
``c_k`` is the body on ``c_{k−1}`` and n the first k whose condition is false. Other
loop results (a cond's, the stacked carries a derivative reads) keep the call form.
"""
from __future__ import annotations

from . import labels as L
from .unroll import carry_names, x_name, y_name

__all__ = ["Recurrence", "recurrence"]


class Recurrence:
    """``result`` (text, tex) names the loop's result; ``inits`` [(name, input
    position)]: bindings to the loop's inputs, printed by the caller; ``lines``
    [(name, text, tex)]: the recurrence itself."""

    def __init__(self, result, inits, lines):
        self.result, self.inits, self.lines = result, inits, lines


def _tex(text):
    return text.replace("−", "-").replace("…", r"\ldots")


def _line(lines, name, body_out, rename):
    """Append ``name = `` the body output's formula, then its where-bindings."""
    text, tex, binds = _body(body_out, rename)
    lines.append((name, text, tex))
    lines += [(n, b, _tex(b)) for n, b in binds]


def _body(body_out, rename):
    """The body output's (text, tex, its where-bindings) with the placeholders renamed."""
    from .formula import formula
    f = formula(body_out, names=rename)
    return f.body, f.latex.split(r" \quad")[0], list(f.bindings)


def _captures(spec, k, body, loop_inputs, rename, inits):
    """Name each captured placeholder of body k as its outer node (W), or a fresh name
    bound to the outer expression."""
    for i, p in enumerate(body.cap_params):
        pos = spec.n_lead + spec.caps_of[k][i]
        outer = loop_inputs[pos]
        name = L.user_name(outer)
        if name is None:
            name = f"w{pos - spec.n_lead + 1}"
            inits.append((name, pos))
        rename[p.id] = name


def recurrence(spec, index, loop_inputs):
    """The Recurrence of result ``index`` of the loop ``spec`` (inputs ``loop_inputs``,
    its nodes), or None where the call form stays (cond, stacked carries)."""
    role, which = spec.role(index)
    if spec.kind == "scan" and role in ("final", "ys"):
        return _scan(spec, role, which, loop_inputs)
    if spec.kind == "while" and role == "final":
        return _while(spec, which, loop_inputs)
    return None


def _symbols(ins, pairs):
    """The first pair of (index, count) letters no input of the loop is named (a
    target named t would read as the step)."""
    taken = {L.user_name(n) for n in ins}
    return next((i, c) for i, c in pairs if i not in taken and c not in taken)


def _scan(spec, role, which, ins):
    nc, nx = spec.n_carry, spec.n_xs
    body = spec.bodies[0]
    names = carry_names(spec, ins[:nc])
    t, T = _symbols(ins, [("t", "T"), ("s", "S"), ("τ", "T_τ")])
    prev, first, last = (f"{t}+1", f"{T}+1", "1") if spec.reverse else (f"{t}−1", "0", T)
    rename, inits = {}, []
    for k in range(nc):
        rename[body.params[k].id] = f"{names[k]}_{{{prev}}}"
        inits.append((f"{names[k]}_{{{first}}}" if len(first) > 1 else
                      f"{names[k]}_{first}", k))
    xn = [x_name(ins[nc + j], j, nx) for j in range(nx)]
    for j in range(nx):
        rename[body.params[nc + j].id] = f"{xn[j]}_{t}"
    _captures(spec, 0, body, ins, rename, inits)
    lines = []
    for k in range(nc):
        _line(lines, f"{names[k]}_{t}", body.outs[k], rename)
    if role == "final":
        result = f"{names[which]}_{last}"
    else:
        y = y_name(which, spec.n_ys)
        _line(lines, f"{y}_{t}", body.outs[nc + which], rename)
        result = f"({y}_1, …, {y}_{T})"
    for j in range(nx):
        src = L.display_name(ins[nc + j])
        lines.append((f"{xn[j]}_{t}", f"{src}[{t} − 1]", _tex(f"{src}[{t} - 1]")))
    if spec.length is not None:
        lines.append((T, str(spec.length), str(spec.length)))
    return Recurrence((result, _tex(result)), inits, lines)


def _while(spec, which, ins):
    nc = spec.n_carry
    body, test = spec.bodies
    names = carry_names(spec, ins[:nc])
    rename, inits = {}, []
    for k in range(nc):
        rename[body.params[k].id] = f"{names[k]}_{{k−1}}"
        inits.append((f"{names[k]}_0", k))
    _captures(spec, 0, body, ins, rename, inits)
    lines = []
    for k in range(nc):
        _line(lines, f"{names[k]}_k", body.outs[k], rename)
    at_k = {test.params[k].id: f"{names[k]}_k" for k in range(nc)}
    _captures(spec, 1, test, ins, at_k, inits)
    cond, _, _ = _body(test.outs[0], at_k)
    taken = set(rename.values()) | set(at_k.values()) | {n for n, _ in inits}
    n = next(c for c in ("n", "N", "m", "K", "n_it") if c not in taken)   # (not a leaf's)
    lines.append((n, f"the first k ≥ 0 where not ({cond})",
                  r"\min\{k \geq 0 : \lnot(" + _tex(cond) + r")\}"))
    result = f"{names[which]}_{n}"
    return Recurrence((result, result), inits, lines)
