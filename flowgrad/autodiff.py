"""Reverse accumulation (adjoints, grad, vjp) and the forward sweep (jvp).

Both sweeps *build nodes*: the adjoint of every node is itself a node of the same
graph, made by the ops' rules, so derivatives can be differentiated again.

The reverse sweep is the lecture notes' backward pass: visit the nodes on a path from the
inputs asked for to the output in reverse topological order (= descending id) and
set v̄_i = Σ_{j ∈ children(i)} v̄_j ∂v_j/∂v_i, each term made by the child's rule
and summed back to v_i's shape. Nodes off every such path get no adjoint (no
materialised zeros). Both sweeps are loops over sorted ids: no recursion.
"""
from __future__ import annotations

import sys
import weakref
from array import array

import numpy as np

from .errors import DifferentiationError, UsageError, located
from .graph import Node, gc_paused, same_graph, sharing_graph, sharing_unary
from .leaves import constant_in

__all__ = ["adjoints", "grad", "vjp", "jvp", "vjp_above", "ancestors_above", "adjoint_mark"]

# {graph: {gradient node id: {(y id, x id), ...}}}: which nodes were built as ∂y/∂x, so an
# optimizer can check that a program's outputs are the loss's gradients (optim.py)
_GRADIENT_OF: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def record_gradient(g: Node, y: Node, x: Node) -> None:
    """Note that node ``g`` is ∂y/∂x (grad and adjoints call this; so may code that
    rebuilds gradient nodes, e.g. a graph loaded from a file)."""
    _GRADIENT_OF.setdefault(y.graph, {}).setdefault(g.id, set()).add((y.id, x.id))


def gradient_records(graph) -> dict:
    """{gradient node id: {(y id, x id), …}}: every node of ``graph`` that grad or
    adjoints returned as ∂y/∂x (a saved graph keeps them: flowgrad/io/graphfile.py)."""
    return _GRADIENT_OF.get(graph, {})


def is_gradient(g: Node, y: Node, x: Node) -> bool:
    """Whether ``g`` was returned by ``grad``/``adjoints`` as the gradient of ``y`` w.r.t. ``x``."""
    return (y.id, x.id) in _GRADIENT_OF.get(y.graph, {}).get(g.id, ())


def ancestors(outputs) -> list[int]:
    """Ids of every node the outputs depend on (themselves included), ascending."""
    return outputs[0].graph.ancestors([o.id for o in outputs])


def is_differentiable(dtype) -> bool:
    return dtype.kind in "fc"


def _on_path(graph, order, sources) -> set[int]:
    """The ids in ``order`` (ascending) that depend on any of ``sources``."""
    data = graph.handles
    active = set(sources)
    disjoint = active.isdisjoint   # (a C-level test of the inputs: no generator a node)
    for nid in order:
        if nid not in active and not disjoint(data[nid].input_ids):
            active.add(nid)
    return active


def node_list(x, fn="grad", what="wrt"):
    """``x`` (a node, or a list/tuple of nodes) as a list, and whether it was one node."""
    single = isinstance(x, Node)
    if single:
        return [x], True
    if not isinstance(x, (list, tuple)):
        raise located(UsageError, f"{fn}: {what} must be a node or a list of nodes, got "
                      f"{type(x).__name__} {x!r}")
    for item in x:
        if not isinstance(item, Node):
            raise located(UsageError, f"{fn}: {what} must be nodes, got "
                          f"{type(item).__name__} {item!r}")
    return list(x), False


def _require_node(y, fn):
    """The output differentiated must be a node of a graph, not a number or an array."""
    if not isinstance(y, Node):
        raise located(UsageError, f"{fn}: the output to differentiate must be a flowgrad "
                      f"node, got {type(y).__name__} {y!r}")


def _check_scalar(y, fn="grad"):
    """``fn``'s output (grad, or adjoints seeded with 1) must be a scalar of a float or
    complex dtype."""
    if y.shape != ():
        raise located(
            DifferentiationError,
            f"{fn} needs a scalar output, but {y.name!r} has shape {y.shape}; "
            "reduce it (fg.sum, fg.mean) or use fg.vjp / fg.jacobian"
            + (" (or give adjoints a seed= of its shape)" if fn == "adjoints" else ""))
    if not is_differentiable(y.dtype):
        raise located(DifferentiationError, f"cannot differentiate {y.name!r} of dtype {y.dtype}")


def _seed(y):
    """v̄_N = 1 for a scalar output."""
    _check_scalar(y)
    return constant_in(y.graph, np.ones((), y.dtype), name="seed")


def adjoints(y: Node, wrt=None, seed=None) -> dict[Node, Node]:
    """{node: v̄ node} for every node on a path from ``wrt`` (default: all) to ``y``.

    ``seed`` is v̄_y, read as ``fg.vjp`` reads its cotangent (of y's shape; an int or
    bool seed in y's float dtype; a complex seed for a real ``y`` refused). Default 1,
    which needs a real scalar ``y``: a complex one is refused, as torch's ``backward()``
    refuses it without a grad_output and JAX's vjp needs a cotangent (``seed=1`` gives
    torch's ``backward(1)``).
    """
    _require_node(y, "adjoints")
    if wrt is not None:
        node_list(wrt, "adjoints")
    if seed is None:
        _check_scalar(y, "adjoints")
        _check_real_output(y, "adjoints")
    else:
        from flowgrad.seeds import seed_for
        if isinstance(seed, Node) and seed.graph is not y.graph:
            same_graph([y, seed])                        # raises, naming both
        seed = seed_for(seed, y, "adjoints", "seed")
    return _adjoints(y, wrt, seed)


def _adjoints(y, wrt=None, seed=None, keep=None) -> dict[Node, Node]:
    """adjoints; with ``keep`` (a set of ids), the result holds only those nodes' (grad
    and vjp need only wrt's: at 10^6 nodes the full map was ~100 MB)."""
    from flowgrad.ops import as_node  # ops import this package
    graph = y.graph
    seed_is_one = seed is None
    seed = _seed(y) if seed is None else as_node(seed, graph)
    order = ancestors([y])
    sources = order if wrt is None else [n.id for n in wrt]
    if wrt is not None:
        same_graph([y, *wrt])
    active = _on_path(graph, order, sources)
    with gc_paused():
        return _reverse_sweep(graph, y, order, active, seed, seed_is_one, keep)


def _reverse_sweep(graph, y, order, active, seed, seed_is_one, keep=None):
    """adjoints' sweep, in descending id order over the nodes on a path."""
    from flowgrad.ops.base import site_fixed_above
    with site_fixed_above(sys._getframe()), sharing_unary(graph):
        return _reverse_sweep_nodes(graph, y, order, active, seed, seed_is_one, keep)


def _summed(terms, add):
    """An adjoint's terms (a list of nodes) as one node: their sum, left to right."""
    vbar = terms[0]
    for term in terms[1:]:
        vbar = add(vbar, term)
    return vbar


def _rule_makers(graph):
    """A sweep's (PlainRules, NodeBuilder, builder forms): primitive rules take the
    sweep's site (ops.base.rule_site); the forms build straight onto ``graph``."""
    from flowgrad.ops.base import PlainRules, rule_site
    from flowgrad.ops.fast_rules import REVERSE, NodeBuilder
    return PlainRules(), NodeBuilder(graph, rule_site(), sharing_graph() is graph), REVERSE


def _op_rule_term(op, table, argnum, plain_of, vbar, node, inputs, attrs):
    """The term the op's own reverse rule for ``argnum`` builds (None: no derivative)."""
    from flowgrad.ops.base import walking_sites
    rule = table[argnum] if table is not None and argnum < len(table) \
        and callable(table[argnum]) else op.vjp_rule(argnum)
    if rule is None:
        return None
    return rule(vbar, node, *inputs, **attrs) if plain_of[rule] else \
        walking_sites(rule, vbar, node, *inputs, **attrs)


def _reverse_sweep_nodes(graph, y, order, active, seed, seed_is_one, keep):
    from flowgrad.ops import add, sum_to_like
    plain_of, build, fast_forms = _rule_makers(graph)
    handles, marks = graph.handles, _marks_of(graph)
    add_mark = marks.add
    # {id: its adjoint's terms so far}: a node, or a list once several (memory, on a chain)
    pending: dict[int, object] = {y.id: seed}
    # results' adjoints for their node's rule (Op.vjp_results): see _gather
    gathered: dict[int, dict] = {}
    result: dict[Node, Node] = {}
    for nid in reversed(order):
        if gathered and nid in gathered:
            _gathered_terms(gathered.pop(nid), handles, active, pending, marks, y)
        terms = pending.pop(nid, None)
        if terms is None:
            continue
        vbar = _summed(terms, add) if type(terms) is list else terms
        node = handles[nid]
        if keep is None or nid in keep:
            result[node] = vbar
        op = node.op
        if op is None:   # a leaf
            if seed_is_one and node.kind == "variable":
                record_gradient(vbar, y, node)
            continue
        attrs, ids = node.attrs, node.input_ids
        if op.reads_results:     # one result of argument 0: its rule takes all of them
            _gather(gathered, ids, node, vbar, active)
            continue
        inputs = (handles[ids[0]],) if len(ids) == 1 else tuple([handles[i] for i in ids])
        if op.vjp_all is not None:   # every argument's term from one call: O(N), not O(N²)
            _all_terms(op.vjp_all, vbar, node, inputs, attrs, active, pending, marks, y)
            continue
        table, fast = op.vjp_rules, fast_forms.get(op)
        for argnum, inp in enumerate(inputs):
            iid = inp.id
            if iid not in active or (kind := inp.dtype.kind) not in "fc":   # differentiable
                continue
            if "c" in (kind, vbar.dtype.kind) and not complex_rule_ok(op, argnum, inputs):
                raise _complex_refused(node, inp)   # (a real input's term may be complex)
            first_new = len(handles)
            if fast is not None and kind == "f" and (form := fast[argnum]) is not None \
                    and not attrs and node.dtype.kind == "f" and vbar.dtype.kind == "f":
                term = form(build, vbar, node, *inputs)   # the rule, built straight on
            else:
                term = _op_rule_term(op, table, argnum, plain_of, vbar, node, inputs, attrs)
            if term is not None:
                if term.shape != inp.shape:
                    term = sum_to_like(term, inp)
                if term.dtype is not inp.dtype:   # (one pointer test on the usual path)
                    term = as_input_dtype(term, inp)
                if iid in pending:   # (a first term, the common case, without a call)
                    _add_term(pending, iid, term)
                else:
                    pending[iid] = term
            add_mark(first_new, len(handles), iid, y.id)
    return result


#: ops whose rules give PyTorch's derivatives for complex values (the conjugate Wirtinger
#: convention: a real loss's gradient is 2 ∂L/∂z̄; forward rules f′(z)·ż): maps linear over
#: the reals with real coefficients, abs, the complex parts, and (HOLOMORPHIC) the ops
#: whose reverse rule conjugates its derivative factor when it is complex (ops/complex.py)
COMPLEX_SAFE = frozenset({
    "add", "sub", "neg", "sum", "mean", "sum_to", "broadcast_to", "broadcast_like",
    "reshape", "reshape_like", "transpose", "squeeze", "expand_dims", "getitem",
    "concatenate", "concat_part", "concat_unpart", "pad", "cumsum", "trace", "scatter_add",
    "where", "stop_gradient", "abs", "loop", "loop_out", "custom_call", "custom_input",
    "remat_after", "basis_map", "conj", "real", "imag", "astype",
    "shaped_like",   # a seed held to a run-time shape: the identity in its value
    # no derivative at all, which is right for complex values too (bool results, values
    # read for their shape only); sign is not among them: z/|z| varies with z
    "equal", "not_equal", "greater", "greater_equal", "less", "less_equal", "zeros_like",
    "ones_like"})
HOLOMORPHIC = frozenset({
    "mul", "div", "pow", "exp", "log", "log1p", "sqrt", "sin", "cos", "tan", "tanh",
    "matmul", "einsum", "linear"})


def complex_rule_ok(op, argnum, inputs) -> bool:
    """Whether ``op``'s rules for argument ``argnum`` give PyTorch's derivatives where
    complex values meet it (the argument, or another: a real x of x·z gets re(v̄·conj z)).
    Other ops' rules were written for real values only (a real argument's rule is still
    right when every argument is real: its factors are real, and the sweep keeps the real
    part of its term); the sweeps refuse them rather than hand back a wrong derivative."""
    name = op.name
    if name in COMPLEX_SAFE or name in HOLOMORPHIC:
        return True
    return all(x.dtype.kind != "c" for x in inputs)


def _complex_refused(node, inp, mode="reverse") -> DifferentiationError:
    which = "complex input" if inp.dtype.kind == "c" else "input"
    return located(
        DifferentiationError,
        f"cannot differentiate {node.name!r} ({node.op.name}) with respect to its {which} "
        f"{inp.name!r} in {mode} mode: flowgrad's complex derivatives follow PyTorch's "
        f"convention, and the {node.op.name} rule is written for real values only. "
        "Supported with complex values: linear maps (sums, differences, reshapes, "
        "indexing, where), abs, conj, real, imag, astype and the holomorphic ops "
        f"{', '.join(sorted(HOLOMORPHIC))}; write the rest through those, or in real "
        "and imaginary parts as real nodes")


def _gather(gathered, ids, node, vbar, active):
    """File result ``node``'s adjoint for its node's (argument 0's) ``vjp_results``, under
    the highest id it reads: {that id: {its input ids: {result node: adjoint}}}. Every
    result's id is above the ids it reads, so all the adjoints filed there are complete
    when the sweep reaches that id, and the terms go to ids not yet visited."""
    if any(i in active for i in ids[1:]):
        at = gathered.setdefault(max(ids), {})
        at.setdefault(tuple(ids), {})[node] = vbar


def _gathered_terms(groups, handles, active, pending, marks, y):
    """The terms of results gathered for their node's ``vjp_results``: one call per
    node and arguments (results normally read their node's own inputs; a replay, as
    remat's, may give a copy of a result other arguments: a group of its own)."""
    for ids, cotangents in groups.items():
        owner = handles[ids[0]]
        inputs = tuple([handles[i] for i in ids[1:]])
        _all_terms(owner.op.vjp_results, cotangents, owner, inputs, owner.attrs, active,
                   pending, marks, y)


def _all_terms(rule, g, node, inputs, attrs, active, pending, marks, y):
    """Every argument's term from one call ``rule(needed, g, node, *inputs, **attrs)``
    (an op's ``vjp_all``, or a node's ``vjp_results`` with ``g`` its results'
    adjoints), added to ``pending`` and marked as part of that argument's adjoint."""
    from flowgrad.ops import sum_to_like
    graph = node.graph
    needed = [inp.id in active and is_differentiable(inp.dtype) for inp in inputs]
    first_new, since = len(graph.handles), len(marks.start)
    terms = _call_rule(rule, needed, g, node, *inputs, **attrs)
    nested, done = (since, len(marks.start)), set()
    data = graph.handles
    for inp, term, need in zip(inputs, terms, needed):
        if need and term is not None:
            term = sum_to_like(term, inp)
            if term.dtype is not inp.dtype:
                term = as_input_dtype(term, inp)
            _add_term(pending, inp.id, term)
            _mark_built(marks, data, first_new, term.id, inp.id, y.id, nested, done)


def as_input_dtype(term, inp):
    """A float input's adjoint term in the input's own dtype: a forward that promoted a
    float32 x (x·c with c float64) gives float64 terms, and x̄ is float32 as x is (as
    PyTorch's and JAX's gradients). A complex term of a real input is its real part, and
    a complex input's term is of its complex dtype (PyTorch's: a gradient has its
    tensor's dtype). Other terms stay as the rule built them."""
    kind, term_kind = inp.dtype.kind, term.dtype.kind
    if kind not in "fc" or term_kind not in "fc":
        return term
    from flowgrad.ops import astype, real
    if kind == "f" and term_kind == "c":
        term = real(term)
    return term if term.dtype == inp.dtype else astype(term, inp.dtype)


def _call_rule(rule, /, *args, **attrs):
    """``rule(*args, **attrs)`` in a sweep: a rule that may run user code with the
    sweep's site shortcut lifted (ops.base.walking_sites), so its nodes name their lines."""
    from flowgrad.ops.base import plain_rule, walking_sites
    return rule(*args, **attrs) if plain_rule(rule) else walking_sites(rule, *args, **attrs)


def _add_term(pending, nid, term):
    terms = pending.get(nid)
    if terms is None:
        pending[nid] = term
    elif type(terms) is list:
        terms.append(term)
    else:
        pending[nid] = [terms, term]


class AdjointMarks:
    """Which nodes a reverse sweep built as part of whose adjoint, for one graph: runs of
    ids ``[start, stop)`` with ``(of, y)`` — "part of v̄ of node ``of`` (∂y/∂of)" — in
    the order they were recorded, so that an error at a derivative node (a NaN, say) can
    say whose adjoint it was computing. Owned by this module (a side table, not a key in
    every node's attributes): one run per rule call, four 8-byte ints, where a mark on
    each node cost a tuple and a dict slot. A node's mark is the *first* run recorded
    that covers it: a nested sweep (a rule that differentiates) records its runs before
    the enclosing rule call records its own, so the innermost mark wins."""

    __slots__ = ("start", "stop", "of", "y")

    def __init__(self):
        self.start, self.stop, self.of, self.y = (array("q"), array("q"), array("q"),
                                                  array("q"))

    def add(self, start, stop, of, y):
        if stop > start:
            self.start.append(start)
            self.stop.append(stop)
            self.of.append(of)
            self.y.append(y)

    def covered(self, nid, first, last) -> bool:
        """Whether a run recorded at a position in ``[first, last)`` covers ``nid``."""
        start, stop = self.start, self.stop
        return any(start[k] <= nid < stop[k] for k in range(first, last))

    def mark(self, nid) -> tuple[int, int] | None:
        """(of, y) of the first run recorded that covers ``nid``, or None (errors only:
        a vectorised scan of copies of the runs — a view would export the arrays'
        buffers, and a sweep in another thread appending to them would then fail)."""
        if not self.start:
            return None
        start = np.frombuffer(self.start.tobytes(), np.int64)
        stop = np.frombuffer(self.stop.tobytes(), np.int64)[:len(start)]
        hit = np.flatnonzero((start <= nid) & (nid < stop))
        if not hit.size:
            return None
        k = int(hit[0])
        return self.of[k], self.y[k]


# {graph: AdjointMarks}
_MARKS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _marks_of(graph) -> AdjointMarks:
    marks = _MARKS.get(graph)
    if marks is None:
        marks = _MARKS.setdefault(graph, AdjointMarks())
    return marks


def adjoint_mark(node) -> tuple[int, int] | None:
    """``(of, y)`` ids when ``node`` was built by a reverse sweep as part of v̄ of node
    ``of`` (∂y/∂of); None for any other node."""
    marks = _MARKS.get(node.graph)
    return None if marks is None else marks.mark(node.id)


def _mark_built(marks, data, start, top, of, y, nested, done):
    """The marks of one term of a rule that built several at once (vjp_all): the nodes
    from ``start`` on that ``top`` depends on, each a run of one, except those a nested
    sweep inside the call marked (runs ``nested``, a range of positions) and those an
    earlier term took (``done``, the ids marked so far in this call)."""
    stack = [top]
    while stack:
        nid = stack.pop()
        if nid < start or nid in done:
            continue
        done.add(nid)
        if not marks.covered(nid, *nested):
            marks.add(nid, nid + 1, of, y)
        stack.extend(data[nid].input_ids)


def _zeros(x):
    from flowgrad.ops import zeros_like
    return zeros_like(x)


def grad(y: Node, wrt):
    """∂y/∂wrt as nodes; ``y`` must be a real scalar node (a complex one is refused, as
    torch's backward() and jax.grad refuse it: use ``fg.vjp`` with a cotangent). A list
    in gives a list out.

    A node that ``y`` does not depend on gets a zeros node of its shape.
    """
    _require_node(y, "grad")
    wrt, single = node_list(wrt)
    _check_scalar(y)  # fail early, naming y (building no seed node that nothing uses)
    _check_real_output(y)
    _check_wrt(wrt)
    adj = _adjoints(y, wrt, keep={x.id for x in wrt})
    out = [adj.get(x) if x in adj else _zeros(x) for x in wrt]
    for x, g in zip(wrt, out):
        record_gradient(g, y, x)
    return out[0] if single else out


def _check_real_output(y, fn="grad"):
    """grad's scalar output (and adjoints' without a seed) must be real, as torch's
    backward() ("grad can be implicitly created only for real scalar outputs") and
    jax.grad require: a complex output has no one gradient (which of re y, im y?), and
    a seed of 1 would pick one silently. fg.vjp with an explicit cotangent (adjoints
    with a seed) says which."""
    if y.dtype.kind == "c":
        how = ("give seed= (the cotangent: seed=1 gives torch's backward(1))"
               if fn == "adjoints" else "use fg.vjp(y, x, cotangent) with an explicit "
               "cotangent (1 gives torch's backward(1))")
        raise located(
            DifferentiationError,
            f"{fn} needs a real scalar output, but {y.name!r} is {y.dtype}"
            + (f" (built at {y.where})" if y.where else "") + "; differentiate a real "
            f"loss of it (fg.real, fg.abs(...) ** 2) or {how}")


def _check_wrt(xs):
    """A derivative with respect to an integer or bool node is not defined: say so, rather
    than hand back zeros that look like an answer."""
    for x in xs:
        if not isinstance(x, Node):
            raise located(UsageError, f"grad: wrt must be nodes, got {type(x).__name__} {x!r}")
        if not is_differentiable(x.dtype):
            raise located(
                DifferentiationError,
                f"cannot differentiate with respect to {x.name!r} of dtype {x.dtype}: only "
                "float and complex nodes have derivatives (cast it with a float placeholder)")


def vjp(y: Node, x, ybar):
    """ȳᵀ J: the reverse-mode product of the cotangent ``ybar`` (shape of y) with ∂y/∂x."""
    _require_node(y, "vjp")
    xs, single = node_list(x, "vjp", "x")
    _check_wrt(xs)
    from flowgrad.seeds import seed_for
    if isinstance(ybar, Node) and ybar.graph is not y.graph:
        same_graph([y, ybar])                        # raises, naming both
    ybar = seed_for(ybar, y, "vjp", "cotangent")
    adj = _adjoints(y, xs, seed=ybar, keep={x.id for x in xs})
    out = [adj[n] if n in adj else _zeros(n) for n in xs]
    return out[0] if single else out


def ancestors_above(node: Node, lo: int) -> list[int]:
    """The ids ≥ ``lo`` among ``node``'s ancestors (itself included), ascending: a walk up
    the inputs that never goes below ``lo``, so it costs what it finds, not the graph."""
    data = node.graph.handles
    seen = {node.id}
    stack = [node.id]
    while stack:
        for i in data[stack.pop()].input_ids:
            if i >= lo and i not in seen:
                seen.add(i)
                stack.append(i)
    return sorted(seen)


def vjp_above(y: Node, xs: list, ybar: Node) -> list:
    """``vjp(y, xs, ybar)`` for inputs ``xs`` built after most of y's graph (the stand-in
    nodes a custom rule is transposed over, flowgrad/custom_op.py): a path from them can
    only pass through ids ≥ min(xs), so the sweep visits only those. A network of N
    custom calls is then differentiated in O(N), where vjp's whole-graph walk per call
    made it O(N²)."""
    lo = min(x.id for x in xs)
    if y.id < lo:
        return [_zeros(x) for x in xs]
    graph = y.graph
    order = ancestors_above(y, lo)
    active = _on_path(graph, order, [x.id for x in xs])
    with gc_paused():
        adj = _reverse_sweep(graph, y, order, active, ybar, False, {x.id for x in xs})
    return [adj[x] if x in adj else _zeros(x) for x in xs]


def jvp(y: Node, x, xdot):
    """J ẋ: the forward-mode product of ∂y/∂x with the tangent ``xdot`` (shape of x).

    One forward sweep in topological order, each node's tangent the sum of its
    ops' forward rules applied to its inputs' tangents; J is never formed.
    ``x`` and ``xdot`` may be lists of equal length (a node listed twice moves by the
    sum of its tangents).
    """
    _require_node(y, "jvp")
    xs, single = node_list(x, "jvp", "x")
    xdots = [xdot] if single else list(xdot)
    if len(xs) != len(xdots):
        raise located(DifferentiationError, f"jvp: {len(xs)} inputs but {len(xdots)} tangents")
    graph = same_graph([y, *xs])
    tangents = {}
    from flowgrad.ops import add
    from flowgrad.seeds import seed_for
    for n, t in zip(xs, xdots):
        if isinstance(t, Node) and t.graph is not graph:
            same_graph([n, t])                       # raises, naming both
        seed = seed_for(t, n, "jvp", "tangent")
        if seed is None:                             # an integer input's (absent) tangent
            continue
        # an input listed twice moves by the sum of its tangents, J (ṫ₁ + ṫ₂): the dual of
        # vjp, which gives it its gradient twice (the last tangent alone was J ṫ₂)
        tangents[n.id] = add(tangents[n.id], seed) if n.id in tangents else seed
    with gc_paused():
        return _forward_sweep(graph, y, tangents)


def _forward_sweep(graph, y, tangents):
    """jvp's sweep, in ascending id order over y's ancestors."""
    from flowgrad.ops.base import site_fixed_above
    with site_fixed_above(sys._getframe()), sharing_unary(graph):
        return _forward_sweep_nodes(graph, y, tangents)


def _forward_sweep_nodes(graph, y, tangents):
    from flowgrad.ops import add, broadcast_to_like
    data = graph.handles
    handles = graph.handles
    for nid in ancestors([y]):
        if nid in tangents:
            continue
        d = data[nid]
        op = d.op
        if op is None or not any(i in tangents for i in d.input_ids):
            continue
        node = handles[nid]
        inputs = tuple(handles[i] for i in d.input_ids)
        attrs = d.attrs
        if op.jvp_all is not None:   # the whole tangent in one call: O(N) nodes, not O(N²)
            ts = [tangents.get(i.id) if is_differentiable(i.dtype) else None for i in inputs]
            total = _call_rule(op.jvp_all, ts, node, *inputs, **attrs)
            if total is not None:
                tangents[nid] = broadcast_to_like(total, node)
            continue
        total = None
        complex_out = node.dtype.kind == "c"
        for argnum, inp in enumerate(inputs):
            t = tangents.get(inp.id)
            if t is None or not is_differentiable(inp.dtype):
                continue
            if (complex_out or inp.dtype.kind == "c") and not complex_rule_ok(op, argnum,
                                                                              inputs):
                raise _complex_refused(node, inp, "forward")
            rule = op.jvp_rule(argnum)
            if rule is None:
                continue
            term = _call_rule(rule, t, node, *inputs, **attrs)
            if term is None:
                continue
            term = broadcast_to_like(term, node)
            total = term if total is None else add(total, term)
        if total is not None:
            tangents[nid] = total
    out = tangents.get(y.id)
    return _zeros(y) if out is None else out
