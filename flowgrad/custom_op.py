"""The ``custom_call`` op: one call of a ``fg.custom_vjp``/``fg.custom_jvp`` function.

``custom_call(forward_out, *inputs, fn=f)`` has the value of ``forward_out`` (the last
node of the forward the function built on ``inputs``) and the user's rules: argument 0
gets no adjoint and no tangent, so nothing flows through the forward's own nodes, and
inputs 1… get what ``f``'s rule says (flowgrad/custom.py explains the transposition
that gives the other mode).
"""
from __future__ import annotations

import inspect

import numpy as np

from .autodiff import ancestors_above, vjp_above
from .composite import composite
from .errors import DifferentiationError, UsageError, located
from .graph import Node
from .seeds import shaped_like
from .ops.base import NONDIFF, REGISTRY, Op, apply, as_node, fmt_shape


def _forward(xp, out, *inputs, fn, lifted=0):
    return out


def _infer(out, *inputs, fn, lifted=0):
    return out.shape, out.dtype


def _float(node) -> bool:
    return node.dtype.kind in "fc"


def rule_error(call, message) -> DifferentiationError:
    """A DifferentiationError about a rule applied to ``call`` (its custom_call node):
    ending with the line that built the call and the user's line that asked for the
    derivative (fg.grad, fg.jvp …), where the rule ran."""
    where = call.where if isinstance(call, Node) else None
    return located(DifferentiationError,
                   message + (f"\n  the call was built at {where}" if where else ""))


def _no_rule(fn, mode, call):
    return rule_error(call, f"custom_{fn.kind} function {fn.name!r} has no rule yet, so "
                             f"its {mode} derivative is not defined: give one with "
                             f"@{fn.label}.def{fn.kind}")


def _same_shape(a, b) -> bool:
    return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b))


def _check_node(fn, term, like, what, incoming, call):
    """``term`` must be a float node of ``like``'s graph and shape (``what`` names it),
    of a dtype no wider than ``like``'s and the ``incoming`` cotangent's or tangents'.
    Returns the term, held to ``like``'s shape per call where either has a run-time
    length (a (1,) term for a (None,) input was broadcast into the gradient)."""
    if not isinstance(term, Node):
        raise rule_error(call, f"custom_{fn.kind} {fn.name!r}: its rule returned "
                                f"{type(term).__name__} for {what}; a rule returns flowgrad "
                                "nodes (built from fg ops)")
    if term.graph is not like.graph:
        raise rule_error(call, f"custom_{fn.kind} {fn.name!r}: the rule's node for "
                                f"{what} belongs to another graph")
    if not _same_shape(term.shape, like.shape) or not _float(term):
        raise rule_error(
            call, f"custom_{fn.kind} {fn.name!r}: the rule's node for {what} has shape "
            f"{fmt_shape(term.shape)} and dtype {term.dtype}, but it must have "
            f"{fmt_shape(like.shape)} (the shape of {like.name!r}) and a float dtype")
    if _float(like) and not getattr(fn, "builtin_rule", False):
        _check_dtype(fn, term, like, what, incoming, call)
    if term.shape != like.shape or None in like.shape:
        # a run-time length: the known lengths agree; the rest is checked per call (a
        # FeedError naming both nodes) instead of broadcasting the term into the gradient
        return apply(shaped_like, term, like)
    return term


def _check_dtype(fn, term, like, what, incoming, call):
    """Refuse a rule that widens the dtype: a float32 input must not get a float64
    gradient because the rule multiplied by a float64 constant (PyTorch refuses the
    same). The term may have ``like``'s dtype, or the dtype ``like`` promotes to with
    the cotangent (or tangents) the rule was given: a float64 cotangent reaching a
    float32 call (a float64 op after it) gives a float64 gradient, as a built-in op's
    rule would. (fg.remat's rule is the built-in sweep itself: it is not checked.)"""
    wider = np.result_type(like.dtype, *incoming)
    if term.dtype == like.dtype or term.dtype == wider:
        return
    given = ", ".join(sorted({str(np.dtype(d)) for d in incoming})) or "none"
    given = f"its cotangent is {given}" if fn.kind == "vjp" else f"its tangents are {given}"
    raise rule_error(
        call, f"custom_{fn.kind} {fn.name!r}: its rule {getattr(fn.rule, '__name__', '?')!r} "
        f"returned dtype {term.dtype} for {what}, but {like.name!r} has dtype {like.dtype} "
        f"and {given}: a rule must not change the dtype; a constant of "
        f"another dtype in the rule promotes it (make it with dtype={str(like.dtype)!r}, "
        f"or fg.astype the term)")


def vjp_terms(fn, g, ans, xs):
    """The user's vjp rule applied and checked: one node or None per input."""
    if fn.rule is None:
        raise _no_rule(fn, "reverse-mode", ans)
    out = _apply_rule(fn, g, ans, xs)
    if isinstance(out, Node) and len(xs) == 1:
        out = (out,)
    if not isinstance(out, (tuple, list)) or len(out) != len(xs):
        got = f"{len(out)} values" if isinstance(out, (tuple, list)) else type(out).__name__
        raise rule_error(
            ans, f"custom_vjp {fn.name!r}: its rule {getattr(fn.rule, '__name__', '')!r} returned "
            f"{got}, but {fn.name} takes {len(xs)} input{'s' * (len(xs) != 1)}: return a tuple with one node "
            f"(or None) per input, in order ({', '.join(map(fn.arg_name, range(len(xs))))})")
    return [None if term is None else
            _check_node(fn, term, x, f"the gradient of {fn.arg_name(k)!r}", [g.dtype], ans)
            for k, (term, x) in enumerate(zip(out, xs))]


def jvp_out(fn, tangents, ans, xs):
    """The user's jvp rule applied and checked: the output's tangent node."""
    if fn.rule is None:
        raise _no_rule(fn, "forward-mode", ans)
    out = _apply_rule(fn, list(tangents), ans, xs)
    if isinstance(out, (tuple, list)):
        raise rule_error(
            ans, f"custom_jvp {fn.name!r}: its rule {getattr(fn.rule, '__name__', '?')!r} "
            f"returned a {type(out).__name__} of {len(out)} values, but a jvp rule returns "
            f"one node: the tangent of {fn.name}'s one output (not one per input)")
    return _check_node(fn, out, ans, "the output's tangent",
                       [t.dtype for t in tangents if t is not None], ans)


def _require_linear(fn, tdot, ts, call):
    """Refuse to transpose a jvp rule that is not linear in its tangents: the sweep
    would build a wrong reverse rule (0 for ``t*t``, v̄ for ``sin(t)``) without a word.
    Names the rule's node and line, as JAX refuses a rule it cannot transpose."""
    from .custom_linear import NotLinear, check_linear
    try:
        check_linear(tdot, ts)
    except NotLinear as e:
        where = e.node.where
        raise rule_error(
            call, f"custom_jvp {fn.name!r}: its rule {getattr(fn.rule, '__name__', '?')!r} "
            f"is not linear in the tangents, so flowgrad cannot transpose it into the "
            f"reverse-mode rule: at node {e.node.name!r}"
            + (f" (built at {where})" if where else "") + f", {e.why}. A jvp rule must be "
            "linear in the tangents (the derivative's map); for another reverse rule use "
            "fg.custom_vjp") from None


def _apply_rule(fn, first, ans, xs):
    """``fn.rule(first, ans, *xs)``, refusing first a rule that cannot take those
    arguments: Python's TypeError named neither the function nor what it expects."""
    args = (first, ans, *xs)
    try:
        signature = inspect.signature(fn.rule)
    except (TypeError, ValueError):          # no signature to read (a builtin): just call
        return fn.rule(*args)
    try:
        signature.bind(*args)
    except TypeError:
        head = "g" if fn.kind == "vjp" else "tangents"
        names = ", ".join([head, "ans"] + [fn.arg_name(k) for k in range(len(xs))])
        head = "the cotangent g" if fn.kind == "vjp" else "the list of tangents"
        code = getattr(fn.rule, "__code__", None)
        where = f" (defined at {code.co_filename}:{code.co_firstlineno})" if code else ""
        raise rule_error(
            ans, f"custom_{fn.kind} {fn.name!r}: its rule "
            f"{getattr(fn.rule, '__name__', '?')!r}{where} takes {_arity(signature)}, "
            f"but is called with {len(args)}: rule({names}), {head}, the output node "
            f"ans, then {fn.name}'s {len(xs)} input{'s' if len(xs) != 1 else ''}") from None
    return fn.rule(*args)


def _arity(signature) -> str:
    """How many positional arguments a signature takes, in words."""
    kinds = [p.kind for p in signature.parameters.values()]
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    top = sum(k in positional for k in kinds)
    low = sum(k in positional and p.default is p.empty
              for k, p in zip(kinds, signature.parameters.values()))
    if inspect.Parameter.VAR_POSITIONAL in kinds:
        return f"at least {low} positional arguments"
    return f"{low} positional argument{'s' if low != 1 else ''}" if low == top else \
        f"{low} to {top} positional arguments"


def _zero_tangents(xs, given):
    from flowgrad.ops import zeros_like
    return [t if t is not None else (zeros_like(x) if _float(x) else None)
            for t, x in zip(given, xs)]


def _held(seed, node):
    """``seed`` for a transposing sweep from ``node`` (a rule's term), held to its shape
    per call where it has a run-time length: the term's own check (_check_node) is not
    on the path the transposed sweep computes."""
    return apply(shaped_like, seed, node) if None in seed.shape else seed


def _vjp_all(needed, g, ans, out, *xs, fn, lifted=0):
    """Every input's reverse term: the vjp rule, or the jvp rule transposed."""
    need = needed[1:]
    if fn.kind == "vjp":
        terms = vjp_terms(fn, g, ans, xs)
        return [None] + [t if n else None for t, n in zip(terms, need)]
    ts = _zero_tangents(xs, [None] * len(xs))   # stand-ins: the rule is linear in them
    tdot = jvp_out(fn, ts, ans, xs)
    _require_linear(fn, tdot, ts, ans)
    wrt = [k for k, x in enumerate(xs) if need[k] and ts[k] is not None]
    bars = vjp_above(tdot, [ts[k] for k in wrt], _held(g, tdot)) if wrt else []
    terms = [None] * len(xs)
    for k, b in zip(wrt, bars):
        terms[k] = b
    return [None] + terms


def _jvp_all(tangents, ans, out, *xs, fn, lifted=0):
    """The output's tangent: the jvp rule, or the vjp rule transposed."""
    given = list(tangents[1:])
    if all(t is None for t in given):
        return None
    if fn.kind == "jvp":
        return jvp_out(fn, _zero_tangents(xs, given), ans, xs)
    from flowgrad.ops import add, astype, zeros_like
    z = zeros_like(ans)                          # a stand-in cotangent: the rule is linear
    wide = np.result_type(ans.dtype, *[t.dtype for t in given if t is not None])
    if getattr(fn, "builtin_rule", False) and _float(ans) and wide != ans.dtype:
        # a remat block's tangent is its block's, as wide as the tangents (a float64
        # tangent of a float32 block came back float32 from the sweep through z). A
        # user's custom_vjp keeps y's dtype (tests/test_custom_api.py pins that choice)
        z = astype(z, wide)
    total = None
    for t, term in zip(given, vjp_terms(fn, z, ans, xs)):
        if t is None or term is None:
            continue
        part, = vjp_above(term, [z], _held(t, term))   # (J_iᵀ)ᵀ ṫ_i = J_i ṫ_i
        total = part if total is None else add(total, part)
    return total


def reverse_terms(fn, g, ans, xs):
    """Every input's reverse term of a call of ``fn`` (None where it has none) for the
    cotangent ``g`` of its output ``ans``: ``fn``'s vjp rule, or its jvp rule transposed
    (what the reverse sweep asks of a call; flowgrad/batching_calls.py applies it to one
    example's stand-ins)."""
    return _vjp_all([False] + [True] * len(xs), g, ans, None, *xs, fn=fn)[1:]


def _rule(argnum, g, ans, out, *xs, fn, lifted=0):
    """One argument's reverse term (drawings ask per argument; the sweeps use _vjp_all)."""
    if argnum == 0:
        return None
    needed = [k == argnum for k in range(len(xs) + 1)]
    return _vjp_all(needed, g, ans, out, *xs, fn=fn)[argnum]


def _tangent_rule(argnum, t, ans, out, *xs, fn, lifted=0):
    if argnum == 0:
        return None
    given = [None] * (len(xs) + 1)
    given[argnum] = t
    return _jvp_all(given, ans, out, *xs, fn=fn)


def _make_op():
    if "custom_call" in REGISTRY:
        return REGISTRY["custom_call"]
    op = Op("custom_call", _forward, _infer, vjp=_rule, jvp=_tangent_rule, variadic=True,
            doc="One call of an fg.custom_vjp / fg.custom_jvp function: the value of its "
                "forward (argument 0).  x̄ and ẋ are the user's rule's (nothing flows into "
                "argument 0); the other mode is the rule transposed.")
    op.vjp_all = _vjp_all
    op.jvp_all = _jvp_all
    return op


custom_call = _make_op()


def _input_infer(x, index):
    return x.shape, x.dtype


#: how a forward reads its k-th input: a stand-in of its own op (never the user's
#: stop_gradient), so that a call's stand-ins are found exactly, by op and index
custom_input = REGISTRY.get("custom_input") or Op(
    "custom_input", lambda xp, x, index: x, _input_infer, vjp=(NONDIFF,), jvp=(NONDIFF,),
    doc="Input `index` of a custom function (or remat block) as its forward reads it: x's "
        "value.  ∂/∂x = 0 here: the function's rule carries the derivatives across it.")


# -- building a call --------------------------------------------------------------------

def build_call(fn, args, forward=None, label=None, lift=False):
    """Build ``fn``'s forward on ``args`` inside a composite group, then its custom_call.
    ``forward``/``label``: another forward function and box name than ``fn``'s own
    (fg.remat: one registered rule for every block). ``lift``: float nodes the forward
    reads without taking them (a layer's weights) become the call's last inputs, counted
    by the attribute ``lifted``, instead of being refused (fg.remat, whose rule replays
    the block and so differentiates them too; a user's rule could not)."""
    from .custom import call_inputs
    graph, args = call_inputs(args)       # (a loop body captures outer nodes)
    xs = tuple(as_node(a, graph) for a in args)
    start = len(graph)
    forward = forward or fn.fn
    with composite(label or fn.label):
        # the forward reads its inputs through stand-ins that pass no derivative, so that
        # neither sweep walks into its nodes (the rule alone carries derivatives across
        # them): forward mode would otherwise build their unused tangents, and fail at an
        # op without a forward rule, which is when a custom rule is most needed
        out = forward(*(apply(custom_input, x, index=k) for k, x in enumerate(xs)))
        if not isinstance(out, Node) or out.graph is not graph:
            who = caller(fn, label)
            remat = who.startswith("fg.remat")
            several = isinstance(out, (tuple, list, dict))
            raise located(
                DifferentiationError,
                f"{who}: the {'block' if remat else 'forward'} must return one flowgrad "
                f"node of its inputs' graph, got {type(out).__name__}" +
                ("; for several results, fg.remat one block per result, or concatenate "
                 "them" if remat and several else ""))
        free = _closures(graph, start, xs, out)
        if free and not lift:
            from .loops.body import captured_outer   # a body's capture: the user's node
            read = captured_outer(free[0])
            read = free[0] if read is None else read
            raise located(
                DifferentiationError,
                f"custom_{fn.kind} {fn.name!r}: its forward reads {read.name!r}, which "
                "is not one of its inputs, so no gradient could reach it through the "
                "rule; pass it as an argument (and give its rule a term for it)")
        if free:
            return apply(custom_call, out, *xs, *free, fn=fn, lifted=len(free))
        return apply(custom_call, out, *xs, fn=fn)


def caller(fn, label=None) -> str:
    """How errors name a call of ``fn``: fg.remat(block) for a remat block (one
    registered function serves them all), else the custom function itself."""
    if getattr(fn, "builtin_rule", False):
        return f"fg.remat({label})"
    return f"custom_{fn.kind} {fn.name!r}"


def check_arguments(fn, args, label=None):
    """Refuse a tuple, list or dict holding nodes as one argument, by name: a custom
    function (or remat block) takes each input as its own node (the rule gives one term
    per input), and making a constant of the container failed deep in leaves.py with a
    TypeError about constants."""
    from .pytree import flatten
    for k, a in enumerate(args):
        if not isinstance(a, (tuple, list, dict)):
            continue
        try:
            leaves = flatten(a)[0]
        except Exception:                 # not a pytree we know: as_node says what it is
            continue
        if any(isinstance(v, Node) for v in leaves):
            raise located(
                UsageError,
                f"{caller(fn, label)}: argument {k} ({fn.arg_name(k)!r}) is a "
                f"{type(a).__name__} of nodes; a custom function takes nodes (or arrays, "
                f"numbers) as separate arguments, not tuples, lists or dicts of them: pass "
                f"its entries one by one")


def _closures(graph, start, xs, out) -> list:
    """The float nodes (not constants) the forward built from id ``start`` on reads
    without taking them as inputs: outer nodes it closes over, and placeholders or
    variables it made itself; and ``out`` itself when the forward returned an outer node
    it did not build (``return w``). A rule would give them no gradient."""
    data = graph.handles
    allowed = {x.id for x in xs}
    found = {}
    if out.id < start and data[out.id].kind != "constant" and out.dtype.kind in "fc":
        found[out.id] = out
    for nid in range(start, len(graph)):
        d = data[nid]
        reads = [nid] if d.kind in ("placeholder", "variable") else \
            [i for i in d.input_ids if i < start and i not in allowed]
        for i in reads:
            if data[i].kind != "constant" and data[i].dtype.kind in "fc":
                found.setdefault(i, graph.node(i))
    return list(found.values())


def stand_ins(call):
    """{stand-in id: input position} of a call: the custom_input nodes its forward read
    its explicit inputs through (lifted inputs are read directly). Found by op, index
    and input, so a call re-built without its composite group (jacobian's closing of a
    body) is read the same."""
    data = call.graph.handles
    ins = call.input_ids
    xs = ins[1:len(ins) - call.attrs.get("lifted", 0)]
    lo = min(xs) if xs else call.id
    found = {}
    for nid in ancestors_above(call.inputs[0], lo + 1):
        d = data[nid]
        if d.op is custom_input:
            k = d.attrs["index"]
            if k < len(xs) and d.input_ids[0] == xs[k]:
                found[nid] = k
    return found


def forward_ids(call) -> set:
    """The ids of a call's forward nodes, from its stand-ins to its argument 0 (empty
    when it reads no input through a stand-in)."""
    stand = stand_ins(call)
    return set(ancestors_above(call.inputs[0], min(stand))) if stand else set()


def is_custom(node) -> bool:
    return node.op is custom_call


def function_of(node):
    """The CustomFunction a custom_call node calls."""
    return node.attrs["fn"]


def caption(node, src_id):
    """What a drawing writes on the edge from node ``src_id`` into a custom_call ``node``:
    the user's rule (its docstring's first line, else its name); "" on the edge from the
    forward's own output, which carries nothing back. None when ``node`` is not a call."""
    if node.op is custom_input:
        return ""                               # a stand-in: nothing flows back here
    if node.op is not custom_call:
        return None
    ids = node.input_ids
    if src_id == ids[0] and src_id not in ids[1:]:
        return ""
    return function_of(node).caption
