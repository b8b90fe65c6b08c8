"""``fg.precision_audit``: where does a lower precision lose the digits of a graph?

The graph of ``outputs`` is rebuilt with every float (and complex) dtype lowered, e.g.
float64 → float32, and both copies run on the same feed. Each node's error is the
norm-wise relative error of its low-precision value against the reference,
``max|v₃₂ − v₆₄| / max|v₆₄|``. Error that merely flows from an input is not the node's
fault; a node is **marked** where its error exceeds ``factor`` times the largest error of
its inputs (with the unit roundoff of the low dtype as a floor, so an exact input still
allows the rounding of one operation). That is where digits are lost: cancellation in
``(1 + x) − 1``, ``exp`` of a large argument, ``1 − σ(z)`` near 1. The report names the
node, its op, the user's line, the digits lost, and the stable form where one exists.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from .backends import to_numpy
from .errors import NodeLookupError, UsageError, located
from .graph import Graph, Node, same_graph

_LOWER = {np.dtype(np.float64): np.dtype(np.float32), np.dtype(np.complex128): np.dtype(np.complex64)}


@dataclass(frozen=True)
class AuditRow:
    """One node of the audit: its relative ``error``, the ``digits`` lost beyond one
    rounding, whether it ``created`` the error (it grew past ``factor`` × its inputs'),
    and a stable ``suggestion`` (or None)."""
    node: Node
    error: float
    digits: float
    created: bool
    suggestion: str | None

    @property
    def op(self) -> str:
        return self.node.op.name if self.node.op is not None else self.node.kind


class PrecisionAudit:
    """The result of ``fg.precision_audit``: ``rows`` (one per node, in evaluation order),
    ``error(node)``, ``worst`` (the node that created the most error), ``marked`` (the rows
    that created error), ``table()``; ``fg.viz.draw(audit)`` shades the graph by it."""

    def __init__(self, outputs, rows, dtype, reference):
        self.outputs, self.rows, self.dtype, self.reference = outputs, rows, dtype, reference
        self._by_id = {r.node.id: r for r in rows}

    def error(self, node) -> float:
        """``node``'s norm-wise relative error in the low dtype against the reference.
        A node the audit did not cover (not an ancestor of its outputs, or a node of
        another graph, whose id would name another node here) is a NodeLookupError
        (a KeyError too); something that is not a node is a UsageError."""
        if not isinstance(node, Node):
            raise located(UsageError, f"audit.error takes a node of the audited graph, "
                                      f"got {type(node).__name__} {node!r:.60}")
        row = self._by_id.get(node.id)
        if row is None or row.node.graph is not node.graph:
            why = "is not an ancestor of the audited outputs" if row is None else \
                "belongs to another graph than the audited outputs"
            raise located(NodeLookupError, f"{node.name!r} is not part of this audit: it "
                                           f"{why}")
        return row.error

    @property
    def marked(self) -> list[AuditRow]:
        return [r for r in self.rows if r.created]

    @property
    def worst(self) -> Node | None:
        """The node that created the most error (the most digits lost where it arose)."""
        rows = self.marked or self.rows
        return max(rows, key=lambda r: (r.digits, r.error)).node if rows else None

    def table(self) -> str:
        """The marked nodes, most digits lost first, as text."""
        lines = [f"precision audit: {self.dtype} against {self.reference}; "
                 f"{len(self.marked)} node(s) lose digits"]
        for r in sorted(self.marked, key=lambda r: -r.digits):
            at = f" at {r.node.where}" if r.node.where else ""
            lines.append(f"  {r.node.name!r} ({r.op}){at}: relative error {r.error:.3g}, "
                         f"{r.digits:.1f} digits lost")
            if r.suggestion:
                lines.append(f"      try: {r.suggestion}")
        return "\n".join(lines)

    def __repr__(self):
        return self.table()

    def shading(self) -> tuple[dict, dict]:
        """({node: fill colour}, {node: caption}) for ``fg.viz.draw(audit)``: a node that
        created error is drawn red-orange with "digits lost here"; one that carries error
        from its inputs is shaded by its digits lost, lighter for fewer."""
        colours, captions = {}, {}
        for r in self.rows:
            if r.created:
                colours[r.node], captions[r.node] = "#F08A5D", f"{r.digits:.1f} digits lost here"
            elif r.digits >= 1:
                colours[r.node] = "#FDE3CF" if r.digits < 3 else "#F9C29D"
                captions[r.node] = f"{r.digits:.1f} digits lost (inherited)"
        return colours, captions


def precision_audit(outputs, feed=None, dtype="float32", factor: float = 10.0) -> PrecisionAudit:
    """Run ``outputs`` (a node or a list) in ``dtype`` and in the graph's own precision on
    ``feed``, side by side, and report where the lower precision loses digits."""
    from .dtypes import as_dtype
    from .engine.program import as_outputs
    outs, _ = as_outputs(outputs)
    graph = same_graph(outs)   # ids of another graph's nodes would name this one's
    low = as_dtype(dtype, "precision_audit")
    if low.kind not in "fc":
        raise located(UsageError, f"precision_audit: dtype must be a float dtype, got {low}")
    if isinstance(factor, bool) or not isinstance(factor, numbers.Real) or \
            not math.isfinite(factor) or factor <= 0:
        # NaN marked nothing, a negative factor every node, a string raised a TypeError
        raise located(UsageError, f"precision_audit: factor= takes a finite number > 0, "
                                  f"got {factor!r}")
    ids = graph.ancestors([o.id for o in outs])
    twin = lowered_copy(graph, ids, low)
    # the reference runs on a plain copy too: its random nodes draw from copies of
    # the streams, as the lowered ones do (the same draws, and the graph's streams stay)
    same = lowered_copy(graph, ids, None)
    feed = _resolve_feed(graph, feed or {})
    ref, lowered = _run(same, outs, feed), _run(twin, outs, feed)
    values = {nid: (_host(ref[nid]), _host(lowered[nid]))
              for nid in ids if nid in ref and nid in lowered}
    return _report(outs, ids, values, low, factor)


def _run(copy, outs, feed) -> dict:
    """{original id: value} of every node of the copy ``copy`` ({old id: new node}) of
    the graph of ``outs``, run on ``feed`` (keyed by original nodes)."""
    from .engine.program import Program
    values = Program([copy[o.id] for o in outs], keep_all=True).values(
        {copy[k.id]: v for k, v in feed.items() if k.id in copy})
    return {nid: values[n.id] for nid, n in copy.items() if n.id in values}


def _resolve_feed(graph, feed) -> dict:
    from .engine.binding import resolve
    return {graph.node(nid): value for nid, value in resolve(graph, feed).items()}


def _host(value):
    return np.asarray(to_numpy(value))


def lowered_copy(graph, ids, low) -> dict:
    """{old id: new node}: the nodes ``ids`` of ``graph`` rebuilt in a fresh graph with
    every float64 (complex128) dtype lowered to ``low`` (and its complex partner); ``low``
    None keeps every dtype (a plain copy). Weak Python scalars stay weak; integer and
    bool values are unchanged. A loop's bodies are lowered too (its body ran in the
    graph's precision before: the audit saw no digit a loop lost), and each random
    node draws from a copy of its stream: both runs see the same draws, and the
    graph's own streams do not move. A loop over ids; one call per level of nesting."""
    lower = {}
    if low is not None:
        lower = {k: (low if v.kind == low.kind else v) for k, v in _LOWER.items()}
        if low.kind == "f":
            lower[np.dtype(np.complex128)] = np.result_type(low, np.complex64)
    return _copy(graph, ids, lower)[1]


def copy_with_values(graph, ids, values) -> dict:
    """{old id: new node}: the nodes ``ids`` of ``graph`` rebuilt in a fresh graph as
    ``lowered_copy(graph, ids, None)`` does, except that each id of ``values`` ({id: a
    value}, recorded by a run) becomes a constant of that value. Running the copy
    recomputes the rest from those values: random nodes draw from copies of their
    streams (the graph's do not move), variables are read as they are now, and the
    fresh graph declares no state, so no run of it writes a state variable
    (fg.NumericsError.explain: flowgrad/explain.py)."""
    return _copy(graph, ids, {}, values)[1]


def _copy(graph, ids, lower, given=None):
    """(the new graph, {old id: new node}): ``lowered_copy``'s rebuild with ``lower``,
    the {dtype: lowered dtype} map; the ids of ``given`` ({id: value}) as constants."""
    from .leaves import constant_in, placeholder, variable
    from .ops.base import apply
    new, twin = Graph(), {}
    data = graph.nx.nodes
    with new:
        for nid in ids:
            n, d = graph.node(nid), data[nid]
            dt = lower.get(n.dtype, n.dtype)
            if given and nid in given:
                twin[nid] = constant_in(new, _host(given[nid]).astype(n.dtype, copy=False))
            elif d["kind"] == "placeholder":
                twin[nid] = placeholder(n.name, n.shape, dt)
            elif d["kind"] == "variable":
                twin[nid] = variable(_host(n.value).astype(dt), name=n.name)
            elif d["kind"] == "constant":
                value = d["value"] if d["weak"] else _host(d["value"]).astype(dt)
                twin[nid] = constant_in(new, value)
            else:
                attrs = {k: _copied_attr(v, lower) for k, v in n.attrs.items()}
                twin[nid] = apply(n.op, *[twin[i.id] for i in n.inputs], **attrs)
    return new, twin


def _copied_attr(value, lower):
    """An op's attribute for the copy: a dtype lowered, a random stream copied (its
    position kept), a loop's spec rebuilt on lowered bodies; anything else as is."""
    from .loops.loop_op import LoopSpec
    from .random import Stream
    if isinstance(value, np.dtype):
        return lower.get(value, value)
    if isinstance(value, Stream):
        return value.copy()
    if isinstance(value, LoopSpec):
        return _copied_spec(value, lower)
    return value


def _copied_spec(spec, lower):
    """``spec`` on copies of its bodies, its declared result dtypes lowered."""
    from .loops.loop_op import LoopSpec
    n = spec.n_declared
    new = LoopSpec(spec.kind, spec.name, [_copied_body(b, lower) for b in spec.bodies],
                   spec.caps_of, spec.n_carry, spec.n_xs, spec.n_ys, spec.out_shapes[:n],
                   [lower.get(t, t) for t in spec.out_dtypes[:n]], reverse=spec.reverse,
                   length=spec.length, max_iters=spec.max_iters, where=spec.where)
    new.keeps_carries, new.keeps_draws = spec.keeps_carries, spec.keeps_draws
    return new


def _copied_body(body, lower):
    from .loops.body import Body
    every = [*body.params, *body.cap_params, *body.outs]
    graph = body.graph
    new, twin = _copy(graph, graph.ancestors([x.id for x in every]) if every else [], lower)
    return Body(body.name, new, [twin[p.id] for p in body.params],
                [twin[o.id] for o in body.outs], body.out_def, [],
                [twin[p.id] for p in body.cap_params])


def _relative_error(ref, low) -> float:
    if ref.dtype.kind not in "fc" or ref.size == 0:
        return 0.0
    ref64 = ref.astype(np.complex128 if ref.dtype.kind == "c" else np.float64)
    low64 = low.astype(ref64.dtype)
    diff = np.abs(low64 - ref64)
    # the same ±Inf, or NaN in both, is agreement: the low dtype lost nothing there
    # (NaN != NaN, so a NaN in both once counted as an infinite error, all digits lost)
    both_bad = ~np.isfinite(ref64) & ((low64 == ref64) | (np.isnan(ref64) & np.isnan(low64)))
    diff = np.where(both_bad, 0.0, diff)
    scale = float(np.max(np.abs(np.where(np.isfinite(ref64), ref64, 0.0)), initial=0.0))
    worst = float(np.max(diff, initial=0.0))
    if worst == 0.0:
        return 0.0
    return math.inf if scale == 0.0 or not math.isfinite(worst) else worst / scale


def _report(outs, ids, values, low, factor) -> PrecisionAudit:
    graph = outs[0].graph
    unit = float(np.finfo(low).eps) / 2
    errors, rows = {}, []
    for nid in ids:
        if nid not in values:
            continue
        n = graph.node(nid)
        err = _relative_error(*values[nid])
        errors[nid] = err
        inherited = max([errors.get(i.id, 0.0) for i in n.inputs], default=0.0)
        created = n.op is not None and err > factor * max(inherited, unit)
        digits = math.log10(err / unit) if err > unit else 0.0
        if not math.isfinite(digits):
            digits = -math.log10(unit)
        rows.append(AuditRow(n, err, digits, created, suggest(n) if created else None))
    return PrecisionAudit(outs, rows, low, outs[0].dtype)


def _op(node) -> str | None:
    return node.op.name if node is not None and node.op is not None else None


def _is_one(node) -> bool:
    d = node.record
    if d.get("kind") != "constant" or node.shape != ():
        return False
    return float(np.asarray(to_numpy(d["value"]))) == 1.0


def suggest(node) -> str | None:
    """The stable form of a pattern known to lose digits at ``node``, or None."""
    op, ins = _op(node), node.inputs
    if op == "sub" and any(_op(i) == "add" and any(_is_one(j) for j in i.inputs) for i in ins):
        return "(1 + x) − 1 cancels: use x itself, or fg.log1p / expm1-style forms"
    if op == "log" and _op(ins[0]) == "add" and any(_is_one(j) for j in ins[0].inputs):
        inner = [j for j in ins[0].inputs if not _is_one(j)]
        if inner and _op(inner[0]) == "exp":
            return "log(1 + exp(z)): use fg.softplus(z)"
        return "log(1 + x): use fg.log1p(x)"
    if op == "log" and _op(ins[0]) == "sum" and _op(ins[0].inputs[0]) == "exp":
        return "log(sum(exp(z))): use fg.logsumexp(z)"
    if op == "log" and _op(ins[0]) == "sigmoid":
        return "log(σ(z)): use −fg.softplus(−z), or fg.bce_with_logits for a loss"
    if op == "sub" and _is_one(ins[0]) and _op(ins[1]) == "sigmoid":
        return "1 − σ(z): use fg.sigmoid(−z)"
    if op in ("sub", "add"):
        return "cancellation of nearly equal terms: rewrite the difference algebraically"
    if op == "exp":
        return "exp magnifies its input's error by |z|: stay in log space (fg.logsumexp)"
    return None
