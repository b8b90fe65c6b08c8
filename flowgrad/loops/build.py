"""Loops and branches as single nodes: ``scan``, ``fori_loop``, ``while_loop``, ``cond``.

Each traces its Python function(s) ONCE into a sub-graph (flowgrad/loops/body.py) and
adds one ``loop`` node to the enclosing graph, whose kernel runs the compiled body per
iteration; its results are ``loop_out`` nodes (flowgrad/loops/loop_op.py says why). The
graph does not grow with the trip count, and one compiled program serves every run-time
length. Nodes of the enclosing graph a body reads (an RNN's weights) become the loop's
inputs by themselves, and gradients reach them.

Derivatives (flowgrad/loops/grad.py): the vjp of a scan is a scan in the opposite
direction over the body's vjp, reading the carries the forward stacked; the jvp a scan
carrying tangents; a cond's are conds of its branches' rules; a while loop's are scans
over the carries it stacked, of the trip count it ran. All are ordinary flowgrad nodes,
so second order derivatives go through loops too. A body may draw random values (fresh
per iteration); once a derivative is built, the forward records them, and the derivative
loops read the records where the body would draw, so they see the forward's draws.
"""
from __future__ import annotations

import inspect
import numbers

import numpy as np

from .body import capture_args, same_spec, trace, tracing_graph, weak_cast
from .loop_op import LoopLimitError, LoopSpec, loop_op, loop_out_op
from ..errors import ShapeError, UsageError
from ..graph import Node, default_graph, same_graph
from ..ops.base import apply, as_node, fmt_shape, user_site
from ..pytree import flatten, unflatten

__all__ = ["scan", "cond", "while_loop", "fori_loop", "LoopLimitError"]


def _graph_of(leaves):
    """The graph a loop on ``leaves`` is built in. Inside a body being traced, leaves
    of the graphs around it (a nested loop over the outer loop's xs) make it the body's
    graph: the loop node's ``apply`` captures them, as any op's."""
    nodes = [v for v in leaves if isinstance(v, Node)]
    if any(n.graph is not nodes[0].graph for n in nodes) and \
            capture_args(nodes) is not None:
        return tracing_graph()
    if nodes:
        return same_graph(nodes)
    return tracing_graph() or default_graph()


def _where() -> str | None:
    site = user_site()
    return f"{site[0]}:{site[1]}" if site else None


def _traced(fn, specs, name, graph, weak=None):
    """``fn`` traced into a body of the loop ``name`` built in ``graph``; its graph is
    marked as a body, so that a node of it used outside (kept in a Python list from
    inside the body) is named as such (graph.mixed_graphs), not as two user graphs.
    ``weak``: body.trace's (the carries given as Python numbers)."""
    body = trace(fn, specs, name, outer=[graph], weak=weak)
    where = _where()
    body.graph.loop_body = f"a {name}" + (f" built at {where}" if where else "")
    return body


def _nodes(leaves, graph, what, name):
    out = []
    for k, v in enumerate(leaves):
        if v is None:
            raise UsageError(f"{name}: {what} entry {k} is None; give a node or a number")
        out.append(as_node(v, graph))
    return out


def _settle_weak(body, k, like):
    """Body output ``k`` in ``dtype`` where it is a Python number (a weak constant: the
    body returned ``0.5``) that this dtype holds, as ``c * 0.0 + 0.5`` would stay a
    float32 carry's dtype and as JAX's scan, while loop and cond take a weakly typed
    result. Numpy's rule decides (``weak_cast``): a float into an int carry, a number
    into a bool one, an int that overflows the dtype or a finite float that overflows
    it to inf keep theirs, and ``same_spec`` refuses them."""
    out, dtype = body.outs[k], like.dtype
    if out.kind != "constant" or not out.weak or out.dtype == dtype or like.shape != ():
        return
    cast = weak_cast(out.value, dtype)
    if cast is not None:
        body.outs[k] = as_node(cast, body.graph)


def _weak_numbers(init):
    """{position: Python number} of the initial carries given as Python numbers (weak
    constants), whose dtype the body settles (body.trace)."""
    return {k: n.value for k, n in enumerate(init) if n.op is None and n.weak}


def _settled(init, body, weak, graph):
    """``init`` with each Python-number carry made a constant of the dtype its body's
    trace settled (the number survives the cast: body.weak_cast checked it)."""
    return [as_node(weak_cast(weak[k], body.params[k].dtype), graph)
            if k in weak and body.params[k].dtype != n.dtype else n
            for k, n in enumerate(init)]


def _check_takes(fn, args, name, what):
    """Refuse, before tracing, a function that cannot be called with the parameters
    ``args`` (their names, in order) the loop will pass: Python's own TypeError would
    come from inside the loop's machinery and not say what the loop expects."""
    if not callable(fn):
        raise UsageError(f"{name}: the {what} must be a function, got {type(fn).__name__}")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return                                   # (a builtin without one: let it run)
    try:
        sig.bind(*args)
    except TypeError:
        raise UsageError(f"{name}: the {what} must take ({', '.join(args)}), but "
                         f"{getattr(fn, '__name__', 'it')}{sig} does not"
                         + (f"\n  at {_where()}" if _where() else "")) from None


def _split_step(out, name):
    if not isinstance(out, tuple) or len(out) != 2:
        raise UsageError(f"{name}: the step function must return a pair (carry, y), got "
                         f"{type(out).__name__}")
    return out


def _strong(nodes):
    """The loop's inputs with Python-number constants made ordinary constants of their
    dtype: ``apply`` folds an op whose inputs are all such numbers at once, and a loop
    must stay a node (its value is a Results object, not a number)."""
    return [as_node(np.asarray(n.value, dtype=n.dtype), n.graph)
            if n.kind == "constant" and n.weak else n for n in nodes]


def _outputs(loop, ins, spec):
    """The final carries' and the ys' result nodes. (The carry stacks' are built by a
    derivative, when it needs them: building one makes every run keep the carries.)"""
    return [apply(loop_out_op, loop, *ins, index=k)
            for k in range(spec.n_results)]


# -- scan ----------------------------------------------------------------------------------

# -- a loop's declared results: what its bodies give (the builders below, and the graph
# file loader's check of a loaded loop, flowgrad/io/loop_results.py) ----------------------

def scan_results(carry_shapes, carry_dtypes, ys, trips):
    """(shapes, dtypes) of a scan's results: the final carries, each y stacked over
    ``trips`` iterations (None: a run-time count), then each carry's stack."""
    return (list(carry_shapes) + [(trips, *y.shape) for y in ys] +
            [(trips, *s) for s in carry_shapes],
            list(carry_dtypes) + [y.dtype for y in ys] + list(carry_dtypes))


def while_results(carry_shapes, carry_dtypes):
    """(shapes, dtypes) of a while loop's results: the final carries, then each carry's
    stack over a run-time number of iterations."""
    return (list(carry_shapes) + [(None, *s) for s in carry_shapes],
            list(carry_dtypes) * 2)


def cond_results(then_outs, else_outs):
    """(shapes, dtypes) of a cond's results: the branches' outputs joined
    (``join_shapes``; None where they clash), the then branch's dtypes."""
    return ([join_shapes(a.shape, b.shape) for a, b in zip(then_outs, else_outs)],
            [a.dtype for a in then_outs])


def build_scan(fn_flat, init, xs, reverse=False, length=None, name="scan", graph=None,
               trees=None, shapes=None, weak=False):
    """The flat scan every other loop is built from: ``fn_flat(carry, x)`` takes and
    returns flat lists (``(carry, ys)``); ``init``/``xs`` are lists of nodes. Returns
    ``(loop node, results)``: the final carries, then the ys. ``shapes``: the carries'
    declared shapes, where they are to be less static than ``init``'s (a derivative
    loop's carry, seeded with a tangent of shape (3,), takes its primal carry's (None,):
    the body's ops on the primal give (None,), so (3,) would not stay a carry's shape).
    ``weak``: a carry given as a Python number takes the dtype the body settles for it
    (body.trace; the user's loops), not its default float64/int64/complex128."""
    graph = graph or _graph_of(init + xs)
    nc, nx = len(init), len(xs)
    for x in xs:
        if x.ndim == 0:
            raise ShapeError(f"{name}: xs entry {x.name!r} is 0-d; xs are stacked along "
                             "axis 0" + (f"\n  at {_where()}" if _where() else ""))
    lengths = {x.shape[0] for x in xs if x.shape[0] is not None}
    if length is not None:
        lengths.add(length)
    if len(lengths) > 1:
        raise ShapeError(f"{name}: xs (and length=) disagree on the number of iterations: "
                         f"{sorted(lengths)}" + (f"\n  at {_where()}" if _where() else ""))
    T = lengths.pop() if lengths else None
    shapes = [n.shape for n in init] if shapes is None else [tuple(s) for s in shapes]
    specs = [(s, n.dtype) for s, n in zip(shapes, init)] + \
        [(x.shape[1:], x.dtype) for x in xs]
    ny_box = []

    def traced(params):
        carry, ys = fn_flat(params[:nc], params[nc:])
        ny_box.append(len(ys))
        return list(carry) + list(ys)

    numbers_in = _weak_numbers(init) if weak else None
    body = _traced(traced, specs, name, graph, numbers_in)
    if numbers_in:
        init = _settled(init, body, numbers_in, graph)
    for k in range(nc):
        _settle_weak(body, k, init[k])
        same_spec(name, f"carry entry {k}", body.outs[k], init[k], shapes[k])
    outs = body.outs
    ny = ny_box[0]
    ys = outs[nc:nc + ny]
    spec = LoopSpec("scan", name, [body], [list(range(len(body.captured)))], nc, nx, ny,
                    *scan_results(shapes, [n.dtype for n in init], ys, T),
                    reverse=reverse, length=length, where=_where())
    with graph:
        loop = apply(loop_op, *_strong([*init, *xs, *body.captured]), spec=spec)
        return loop, _outputs(loop, list(loop.inputs), spec)


def scan(step, init, xs=None, length=None, reverse=False):
    """Loop ``step(carry, x) -> (carry, y)`` over ``xs`` (stacked on axis 0): returns
    ``(final carry, ys stacked on axis 0)``. ``reverse=True`` runs from the last slice to
    the first (ys stay in xs's order). ``xs=None`` with ``length=T`` runs T steps with
    ``x=None``. Carries and xs may be nodes, numbers or tuples/lists/dicts of them; a
    carry must keep its shape and dtype; an initial carry given as a Python number is
    weakly typed and takes the dtype the step gives it (``0.0`` over float32 ``xs`` is a
    float32 carry), as in JAX (docs/howto-loops.md). The step is traced once (twice
    for such a carry: first on the number): the loop is one node.
    Its vjp is a scan backwards over the step's vjp, reading the T carries the forward
    keeps; its jvp a scan carrying tangents."""
    name = "scan"
    _check_takes(step, ("carry", "x"), name, "step function")
    init_leaves, init_def = flatten(init)
    xs_leaves, xs_def = flatten(xs) if xs is not None else ([], None)
    if xs is None and length is None:
        raise UsageError("scan: give xs, or length= when there is nothing to scan over")
    if length is not None and (not isinstance(length, numbers.Integral) or
                               isinstance(length, bool) or length < 0):
        raise UsageError(f"scan: length must be a non-negative int, got {length!r}")
    graph = _graph_of(init_leaves + xs_leaves)
    init_nodes = _nodes(init_leaves, graph, "init", name)
    xs_nodes = _nodes(xs_leaves, graph, "xs", name)
    y_def = []

    def fn_flat(carry, x):
        c = unflatten(init_def, carry)
        xv = unflatten(xs_def, x) if xs_def is not None else None
        new_c, y = _split_step(step(c, xv), name)
        c_leaves, c_def = flatten(new_c)
        if c_def != init_def:
            raise UsageError(f"{name}: the step returned a carry of structure "
                             f"{c_def.describe()}, but it entered as {init_def.describe()}")
        y_leaves, d = flatten(y) if y is not None else ([], None)
        y_def.append(d)
        return c_leaves, y_leaves

    _, outs = build_scan(fn_flat, init_nodes, xs_nodes, reverse,
                         None if length is None else int(length), name, graph, weak=True)
    nc = len(init_nodes)
    ny = len(outs) - nc
    final = unflatten(init_def, outs[:nc])
    ys = unflatten(y_def[0], outs[nc:nc + ny]) if y_def[0] is not None else None
    return final, ys


# -- while and fori ---------------------------------------------------------------------

def build_while(cond_flat, body_flat, init, max_iters, name="while_loop", graph=None,
                weak=False):
    """The flat while loop: ``cond_flat(carry) -> 0-d bool node``, ``body_flat(carry) ->
    carry``. Returns ``(loop node, the final carries)``. ``weak``: build_scan's."""
    graph = graph or _graph_of(init)
    nc = len(init)
    numbers_in = _weak_numbers(init) if weak else None
    body = _traced(lambda p: list(body_flat(p)), [(n.shape, n.dtype) for n in init],
                   name, graph, numbers_in)
    if numbers_in:
        init = _settled(init, body, numbers_in, graph)
    specs = [(n.shape, n.dtype) for n in init]
    for k in range(nc):
        _settle_weak(body, k, init[k])
        same_spec(name, f"carry entry {k}", body.outs[k], init[k])
    test = _traced(lambda p: [cond_flat(p)], specs, name + " condition", graph)
    pred = test.outs[0]
    if pred.shape != () or pred.dtype != np.bool_:
        raise ShapeError(f"{name}: the condition must be a 0-d bool node, got shape "
                         f"{fmt_shape(pred.shape)} and dtype {pred.dtype}" +
                         (f"\n  at {_where()}" if _where() else ""))
    caps, caps_of = _union_captures([body, test])
    spec = LoopSpec("while", name, [body, test], caps_of, nc, 0, 0,
                    *while_results([n.shape for n in init], [n.dtype for n in init]),
                    max_iters=max_iters, where=_where())
    with graph:
        loop = apply(loop_op, *_strong([*init, *caps]), spec=spec)
        return loop, _outputs(loop, list(loop.inputs), spec)


def _union_captures(bodies):
    """The captures of several bodies, each once, and each body's positions in them."""
    caps, pos, caps_of = [], {}, []
    for b in bodies:
        mine = []
        for n in b.captured:
            key = (id(n.graph), n.id)
            if key not in pos:
                pos[key] = len(caps)
                caps.append(n)
            mine.append(pos[key])
        caps_of.append(mine)
    return caps, caps_of


def while_loop(cond_fn, body_fn, init, max_iters=1000):
    """``while cond_fn(c): c = body_fn(c)``, as one node; returns the final carry.
    ``cond_fn`` returns a 0-d bool node. Reaching ``max_iters`` iterations with the
    condition still true raises ``fg.LoopLimitError`` naming the loop, never a silent
    stop. Reverse mode works: the forward keeps every carry it saw (at most
    ``max_iters``), and the vjp is a scan backwards over them. A carry given as a
    Python number takes the dtype the body gives it, as ``scan``'s."""
    name = "while_loop"
    if not isinstance(max_iters, numbers.Integral) or isinstance(max_iters, bool) \
            or max_iters < 0:
        raise UsageError(f"{name}: max_iters must be a non-negative int, got {max_iters!r}")
    _check_takes(cond_fn, ("carry",), name, "condition")
    _check_takes(body_fn, ("carry",), name, "body")
    leaves, tdef = flatten(init)
    graph = _graph_of(leaves)
    nodes = _nodes(leaves, graph, "init", name)

    def body_flat(carry):
        new_leaves, new_def = flatten(body_fn(unflatten(tdef, carry)))
        if new_def != tdef:
            raise UsageError(f"{name}: the body returned a carry of structure "
                             f"{new_def.describe()}, but it entered as {tdef.describe()}")
        return new_leaves

    def cond_flat(carry):
        return as_node(cond_fn(unflatten(tdef, carry)))

    _, outs = build_while(cond_flat, body_flat, nodes, int(max_iters), name, graph,
                          weak=True)
    return unflatten(tdef, outs[:len(nodes)])


def fori_loop(lower, upper, body_fn, init):
    """``for i in range(lower, upper): c = body_fn(i, c)``; returns the final carry.
    ``i`` is a 0-d int64 node. The bounds are ints (Python or numpy) or 0-d integer
    nodes; a float or bool bound is refused, as ``range`` refuses it. Int bounds make a
    scan of ``upper - lower`` steps; node bounds a while loop (up to 2**31 steps). A
    carry given as a Python number takes the dtype the body gives it, as ``scan``'s."""
    name = "fori_loop"
    _check_takes(body_fn, ("i", "carry"), name, "body")
    lower, upper = _bound(lower, "lower"), _bound(upper, "upper")
    leaves, tdef = flatten(init)
    static = not isinstance(lower, Node) and not isinstance(upper, Node)
    graph = _graph_of(leaves + [b for b in (lower, upper) if isinstance(b, Node)])
    nodes = _nodes(leaves, graph, "init", name)
    i0 = as_node(np.asarray(lower, np.int64), graph) if static else \
        _as_int(as_node(lower, graph))

    def body_flat(carry, x=None):
        i, rest = carry[0], carry[1:]
        new_leaves, new_def = flatten(body_fn(i, unflatten(tdef, rest)))
        if new_def != tdef:
            raise UsageError(f"{name}: the body returned a carry of structure "
                             f"{new_def.describe()}, but it entered as {tdef.describe()}")
        return [i + np.int64(1), *new_leaves]

    if static:
        _, outs = build_scan(lambda c, x: (body_flat(c), []), [i0, *nodes], [],
                             length=max(0, upper - lower), name=name, graph=graph,
                             weak=True)
    else:
        hi = as_node(upper, graph)
        _, outs = build_while(lambda c: c[0] < hi, body_flat, [i0, *nodes], 2 ** 31,
                              name, graph, weak=True)
    return unflatten(tdef, outs[1:1 + len(nodes)])


def _bound(b, which):
    """A fori_loop bound as a Python int or a 0-d integer node. A float or bool is
    refused: lowering it to an int64 counter while the other bound is compared as a
    float counted trips no ``range`` would (fori_loop(0, 2.5) ran 3)."""
    where = f"\n  at {_where()}" if _where() else ""
    if isinstance(b, Node):
        if b.dtype.kind not in "iu":
            raise UsageError(f"fori_loop: the {which} bound {b.name!r} has dtype {b.dtype}; "
                             f"a node bound must have an integer dtype (fg.astype it to "
                             f"'int64' if you mean to truncate){where}")
        if b.shape != ():
            raise ShapeError(f"fori_loop: the {which} bound {b.name!r} has shape "
                             f"{fmt_shape(b.shape)}; a node bound is 0-d{where}")
        return b
    if isinstance(b, np.ndarray) and b.shape == () and b.dtype.kind in "iu":
        return int(b)
    if isinstance(b, numbers.Integral) and not isinstance(b, (bool, np.bool_)):
        return int(b)
    raise UsageError(f"fori_loop: the {which} bound must be an int or a 0-d integer node, "
                     f"got {type(b).__name__} {b!r:.40}{where}")


def _as_int(node):
    from ..ops import astype
    return node if node.dtype == np.int64 else astype(node, "int64")


# -- cond --------------------------------------------------------------------------------

def join_shapes(a, b):
    """The shape both branches' outputs have: a length one branch knows and the other
    does not (an empty constant against a run-time length) is a run-time length; None
    where they disagree otherwise."""
    if len(a) != len(b) or any(x != y and x is not None and y is not None
                               for x, y in zip(a, b)):
        return None
    return tuple(x if x == y else None for x, y in zip(a, b))


def build_cond(pred, then_flat, else_flat, operands, name="cond", graph=None):
    """The flat cond: branches take and return flat lists of nodes. Returns
    ``(loop node, results)``."""
    graph = graph or _graph_of([pred, *operands])
    specs = [(n.shape, n.dtype) for n in operands]
    then_b = _traced(lambda p: list(then_flat(p)), specs, name + " (then)", graph)
    else_b = _traced(lambda p: list(else_flat(p)), specs, name + " (else)", graph)
    if len(then_b.outs) != len(else_b.outs):
        raise UsageError(f"{name}: the branches return {len(then_b.outs)} and "
                         f"{len(else_b.outs)} values; they must return the same structure")
    for k, (a, b) in enumerate(zip(then_b.outs, else_b.outs)):
        _settle_weak(then_b, k, b)     # a number in one branch takes the other's
        _settle_weak(else_b, k, a)     # dtype (both numbers: as they are)
    shapes, dtypes = cond_results(then_b.outs, else_b.outs)
    for k, (a, b) in enumerate(zip(then_b.outs, else_b.outs)):
        if a.dtype != b.dtype or shapes[k] is None:
            raise ShapeError(f"{name}: output {k} has shape {fmt_shape(a.shape)} and dtype "
                             f"{a.dtype} in the then branch but {fmt_shape(b.shape)} and "
                             f"{b.dtype} in the else branch; both must agree" +
                             (f"\n  at {_where()}" if _where() else ""))
    caps, caps_of = _union_captures([then_b, else_b])
    spec = LoopSpec("cond", name, [then_b, else_b], caps_of, len(operands), 0,
                    len(then_b.outs), shapes, dtypes, where=_where())
    with graph:
        loop = apply(loop_op, *_strong([pred, *operands, *caps]), spec=spec)
        return loop, _outputs(loop, list(loop.inputs), spec)


def cond(pred, then_fn, else_fn, *operands):
    """``then_fn(*operands)`` if ``pred`` else ``else_fn(*operands)``, as one node: only
    the taken branch runs, forward and backward (an untaken ``log(x)`` at x ≤ 0 never
    reaches the gradient, unlike ``fg.where``). ``pred`` is a 0-d bool node; both
    branches return the same structure of nodes, shapes and dtypes (a length one branch
    knows and the other only at run time is a run-time length of the result). An
    operand given as a Python number reaches the branches as that number, weakly typed
    (``a + x`` of a float32 ``x`` is float32), as in JAX."""
    name = "cond"
    leaves, tdef = flatten(list(operands))
    graph = _graph_of([pred, *leaves])
    p = as_node(pred, graph)
    if p.shape != () or p.dtype != np.bool_:
        raise ShapeError(f"{name}: pred must be a 0-d bool node, got shape "
                         f"{fmt_shape(p.shape)} and dtype {p.dtype}" +
                         (f"\n  at {_where()}" if _where() else ""))
    nodes = _nodes(leaves, graph, "operand", name)
    numbers_in = _weak_numbers(nodes)
    out_def = []

    def branch(fn):
        def flat(params):
            # an operand given as a Python number reaches the branches as that number
            # (weakly typed: ``a + x`` of a float32 ``x`` is float32, as in JAX's cond)
            params = [as_node(numbers_in[k], tracing_graph()) if k in numbers_in else p
                      for k, p in enumerate(params)]
            res_leaves, d = flatten(fn(*unflatten(tdef, params)))
            out_def.append(d)
            return res_leaves
        return flat

    _, outs = build_cond(p, branch(then_fn), branch(else_fn), nodes, name, graph)
    if out_def[0] != out_def[1]:
        raise UsageError(f"{name}: the branches return {out_def[0].describe()} and "
                         f"{out_def[1].describe()}; they must return the same structure")
    return unflatten(out_def[0], outs)
