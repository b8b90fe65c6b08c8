"""Hessian-vector products, Jacobians and Hessians — all of them graph nodes.

``hvp(f, x, v)`` is built entirely from the two sweeps and never forms H:

* ``mode="fwd-rev"`` (default) — forward over reverse: the forward sweep (jvp) of
  the gradient node, H v = ∂/∂ε ∇f(x + εv). It costs about one gradient more.
* ``mode="rev-rev"`` — reverse over reverse, the lecture notes' identity
  H v = ∇ₓ⟨∇f(x), v⟩: the reverse sweep of the gradient node seeded with v
  (``vjp(∇f, x, v)`` is exactly the gradient of ⟨∇f, v⟩, without building the dot).

**How a Jacobian is a node.** ``jacobian(y, x)`` needs one product per basis
vector: reverse mode, J = [eₖᵀJ]ₖ (one vjp per output entry), or forward mode,
J = [J eₖ]ₖ (one jvp per input entry), whichever needs fewer (``size(x) < size(y)``
picks forward). Building one vjp graph per row would grow the graph with the size
of J, so instead the product is built **once**, with a placeholder ``u`` standing
for the basis vector — the *body*, ``vjp(y, x, u)`` or ``jvp(y, x, u)``. By default
(``method=None`` or ``"vectorize"``) the body is batched by ``fg.vectorize`` over
the identity, an array holding every basis vector: each op runs once on the whole
batch, and J is an ordinary node (exportable, drawable). When an op on the path has
no batching rule, a shape has a run-time length, or a batched intermediate would
exceed ``MAX_BATCHED_ENTRIES`` (a batched loop's per-iteration values and stacked
results count too), J is instead (``method="map"``) one node of the op
``basis_map``, whose kernel runs the body's one compiled program once per basis
vector and stacks the results; the rest of this docstring is about that op.

A body reads values computed outside it (the forward pass, the gradient). When
the map is built, the body is *closed*: every node that does not depend on ``u``
but feeds one that does (the boundary) becomes an input of the ``basis_map``
node — computed once by the enclosing program — and, inside the body, a fresh
placeholder standing for it; the part of the body that depends on ``u`` is
re-built over those placeholders. So the work per basis vector is only the part
that varies with it, and the body is a pure function of its placeholders.

That purity is what makes J differentiable again (``hessian`` of a gradient,
``check_grads`` of a Jacobian, third derivatives): with the map
M(p) = stack_k B(p, eₖ) (or Σ_k), both rules are again maps —

* forward rule for input p with tangent ṗ:  stack_k jvp(B, p, q)(eₖ), q bound to ṗ;
* reverse rule with cotangent G:            Σ_k vjp(B, p, r)(eₖ), r bound to G[k].

so a map may also bind placeholders to *slices* ``S[k]`` of an input and may sum
instead of stack. When the basis has a length known only at run time (``x`` of shape
``(None, 3)``), the map takes one more input of the basis's shape and reads the number
of basis vectors from its value; the rules pass that reference on unchanged. ``hessian(f, x)`` is ``jacobian(grad(f, x), x)``, forward over
reverse by default (its columns are H eₖ = hvp(f, x, eₖ)).
"""
from __future__ import annotations

import math

import numpy as np

from .autodiff import node_list, is_differentiable, ancestors, grad, jvp, vjp
from .batching import BatchingError
from .errors import ArgumentError, DifferentiationError, UsageError, located
from .graph import Node, same_graph

__all__ = ["hvp", "jacobian", "hessian"]


# -- hvp --------------------------------------------------------------------------------

def hvp(f: Node, x, v, mode: str = "fwd-rev"):
    """H v, the Hessian of the scalar ``f`` with respect to ``x`` times ``v``, as a node.

    ``x`` and ``v`` may be lists of equal length (the blocks of H v). H is never formed.
    """
    from flowgrad.ops import sum
    xs, single = node_list(x)
    vs = [v] if single else list(v)
    if len(xs) != len(vs):
        raise located(DifferentiationError, f"hvp: {len(xs)} inputs but {len(vs)} vectors")
    same_graph([f, *xs])                             # raises on nodes of two graphs
    from flowgrad.seeds import seed_for
    for t in vs:
        if isinstance(t, Node):
            same_graph([f, t])                       # raises, naming both
    vs = [seed_for(t, n, "hvp", "vector") for n, t in zip(xs, vs)]
    gs = grad(f, xs)
    if mode == "fwd-rev":
        out = [jvp(g, xs, vs) for g in gs]
    elif mode == "rev-rev":
        if single:
            out = [vjp(gs[0], xs[0], vs[0])]
        else:
            # ⟨∇f, v⟩ as a real number: re Σ g·conj(v) for complex blocks, whose gradient
            # is each block's vjp with cotangent v (PyTorch's convention); a complex Σ g·v
            # was differentiated as if real. Real blocks build the same nodes (no conj/real).
            from flowgrad.ops import conj, real
            dot = sum(real(gs[0] * conj(vs[0])))
            for g, t in zip(gs[1:], vs[1:]):
                dot = dot + sum(real(g * conj(t)))
            out = grad(dot, xs)
    else:
        raise ValueError(f"hvp: mode must be 'fwd-rev' or 'rev-rev', got {mode!r}")
    return out[0] if single else out


# -- jacobian / hessian ---------------------------------------------------------------------

def _size(node):
    """The number of entries of ``node``, or None when a length is known only at run time."""
    return None if None in node.shape else math.prod(node.shape)


def _one_node(v, fn, what):
    """A UsageError at the user's line unless ``v`` is one flowgrad node."""
    if not isinstance(v, Node):
        raise located(UsageError, f"{fn}: {what} must be a flowgrad node, got "
                      f"{type(v).__name__} {v!r:.80}")


def jacobian(y: Node, x: Node, mode: str | None = None, method: str | None = None) -> Node:
    """∂y/∂x as one node of shape ``y.shape + x.shape``.

    ``mode`` is "fwd" (one jvp per entry of x), "rev" (one vjp per entry of y) or
    None: forward when x has fewer entries than y (a length known only at run time
    counts as more). ``method`` is "vectorize" (the product batched over an identity
    batch of basis vectors, see fg.vectorize), "map" (one compiled body run once per
    basis vector, see the module docstring) or None: vectorize when every op on the
    path has a batching rule and the shapes are static, else map. A complex x or y is a
    DifferentiationError (use fg.jvp / fg.vjp), as JAX's without holomorphic=True; complex
    values between a real x and a real y are fine.
    """
    _one_node(y, "jacobian", "y (the output)")
    _one_node(x, "jacobian", "x")
    graph = same_graph([y, x])
    ny, nx_ = _size(y), _size(x)
    if mode is None:
        mode = "fwd" if nx_ is not None and (ny is None or nx_ < ny) else "rev"
    if not is_differentiable(y.dtype):
        raise located(DifferentiationError, f"cannot differentiate {y.name!r} of dtype {y.dtype}")
    if not is_differentiable(x.dtype):   # both modes, as grad's (fwd handed back zeros)
        raise located(DifferentiationError, f"cannot differentiate with respect to {x.name!r} "
                      f"of dtype {x.dtype}: only float and complex nodes have derivatives")
    _refuse_complex(y, x)
    if mode not in ("fwd", "rev"):
        raise located(ArgumentError, f"jacobian: mode must be 'fwd', 'rev' or None, got {mode!r}")
    if method not in (None, "vectorize", "map"):
        raise located(ArgumentError, "jacobian: method must be 'vectorize', 'map' or None, "
                      f"got {method!r}")
    if method != "map":
        if ny is not None and nx_ is not None:
            try:
                return _vectorized_jacobian(graph, y, x, mode)
            except BatchingError:
                if method == "vectorize":
                    raise
        elif method == "vectorize":
            raise located(DifferentiationError, "jacobian: method='vectorize' needs static "
                          f"shapes, but {y.name!r} is {y.shape} and {x.name!r} {x.shape}")
    return _mapped_jacobian(graph, y, x, mode)


def _refuse_complex(y, x):
    """A complex x or y has no one Jacobian matrix in PyTorch's convention: the forward
    mode's columns hold f′ and the reverse mode's rows conj f′ (for a real x, only the
    real part of each term), and a map that is not holomorphic (|z|²) has no complex
    matrix at all. Refused in both modes, as JAX's jacfwd/jacrev refuse complex values
    without holomorphic=True, rather than an answer that depends on the mode picked."""
    for node, what in ((x, "input"), (y, "output")):
        if node.dtype.kind == "c":
            raise located(
                DifferentiationError,
                f"jacobian: the {what} {node.name!r} is complex ({node.dtype}); a forward "
                "Jacobian would hold f′(z) and a reverse one conj f′(z), so flowgrad builds "
                "neither: use fg.jvp or fg.vjp (PyTorch's convention) or differentiate the "
                "real and imaginary parts (fg.real, fg.imag) as real nodes")


def _identity_batch(graph, shape, dtype):
    """The standard basis of arrays of ``shape``, stacked: shape (n,) + shape."""
    from flowgrad.ops import as_node
    n = math.prod(shape)
    return as_node(np.eye(n, dtype=dtype).reshape((n,) + tuple(shape)), graph)


#: The most entries a batched intermediate of a vectorized Jacobian may have (512 MiB of
#: float64), a loop's results and its bodies' per-iteration values included; beyond it
#: the loop over basis vectors, whose memory does not grow with J's size, is used instead.
MAX_BATCHED_ENTRIES = 2 ** 26


def _vectorized_jacobian(graph, y, x, mode):
    """J from one vjp (rows) or jvp (columns), batched over the identity."""
    start = len(graph)
    J = _batched_products(graph, y, x, mode)
    largest, where = _largest_batched(graph, J, start)
    if largest > MAX_BATCHED_ENTRIES:
        where = f" ({where})" if where else ""
        raise BatchingError(f"jacobian: a batched intermediate{where} would hold "
                            f"{largest} entries (more than {MAX_BATCHED_ENTRIES}); "
                            f"method='map' loops over the basis vectors instead")
    return J


def _largest_batched(graph, J, start):
    """(the most entries one value computed for ``J`` holds, where it is: None for a node
    of ``graph``). Counted: the nodes built after ``start``; every result of a loop among
    them (a scan's stacked ys and carries: length × batch × an entry; made by the loop
    when no node reads them, the carries as soon as a derivative, maybe a later one,
    asks for them: counted either way); and every node its bodies compute per iteration
    (a batched body's intermediates carry the batch too), nested loops' bodies included
    (a stack of graphs, never a recursion). A shape with a run-time length is skipped."""
    from .loops.loop_op import is_loop
    todo = [(graph, [i for i in graph.ancestors([J.id]) if i >= start], None)]
    best, where = 0, None
    while todo:
        g, ids, here = todo.pop()
        for i in ids:
            node = g.node(i)
            sized = [(node.shape, here)]
            if is_loop(node):
                spec = node.attrs["spec"]
                sized += [(s, f"a result of the loop {spec.name!r}")
                          for s in spec.out_shapes]
                todo += [(b.graph, _computed(b), f"in the body of the loop {spec.name!r}")
                         for b in spec.bodies if b.outs]
            for shape, at in sized:
                if None not in shape and math.prod(shape) > best:
                    best, where = math.prod(shape), at
    return best, where


def _computed(body):
    """The ids of the nodes a loop body computes each iteration: its outputs' ancestors,
    less its parameters (bound to the loop's inputs and captures, counted outside)."""
    bound = {p.id for p in body.params + body.cap_params}
    return [i for i in body.graph.ancestors([o.id for o in body.outs]) if i not in bound]


def _batched_products(graph, y, x, mode):
    from flowgrad.ops import reshape, transpose
    from .vectorize import vectorize
    if mode == "rev":
        u = _placeholder(graph, y.shape, y.dtype, "jacobian/cotangent")
        rows = vectorize(vjp(y, x, u), {u: _identity_batch(graph, y.shape, y.dtype)})
        return reshape(rows, y.shape + x.shape)
    u = _placeholder(graph, x.shape, x.dtype, "jacobian/tangent")
    cols = vectorize(jvp(y, x, u), {u: _identity_batch(graph, x.shape, x.dtype)})
    cols = reshape(cols, x.shape + y.shape)
    k = len(x.shape)
    return transpose(cols, tuple(range(k, k + len(y.shape))) + tuple(range(k)))


def _mapped_jacobian(graph, y, x, mode):
    """J as one basis_map node: the product's program run once per basis vector."""
    if mode == "rev":
        u = _placeholder(graph, y.shape, y.dtype, "jacobian/cotangent")
        return _make_map(vjp(y, x, u), u, [], [], "stack", ref=_shape_ref(u, y))
    from flowgrad.ops import transpose
    u = _placeholder(graph, x.shape, x.dtype, "jacobian/tangent")
    cols = _make_map(jvp(y, x, u), u, [], [], "stack", ref=_shape_ref(u, x))  # x.shape + y.shape
    k = len(x.shape)
    return transpose(cols, tuple(range(k, k + len(y.shape))) + tuple(range(k)))


def _shape_ref(basis, node):
    """``node`` when the basis has a run-time length: the map reads the basis shape from
    its value; None when the shape is static."""
    return node if None in basis.shape else None


def hessian(f: Node, x: Node, mode: str = "fwd", method: str | None = None) -> Node:
    """∂²f/∂x² of the scalar ``f`` as one node of shape ``x.shape + x.shape``.

    ``mode="fwd"`` (default) is forward over reverse: column k is H eₖ, a jvp of the
    gradient; ``"rev"`` is reverse over reverse. ``method``: as for jacobian.
    """
    _one_node(f, "hessian", "f (the output)")
    _one_node(x, "hessian", "x")
    if f.shape != ():
        raise located(DifferentiationError, f"hessian needs a scalar output, but {f.name!r} "
                      f"has shape {f.shape}; use fg.jacobian of fg.grad")
    return jacobian(grad(f, x), x, mode=mode, method=method)


# -- the basis_map op ---------------------------------------------------------------------

def _placeholder(graph, shape, dtype, name):
    return graph.add_node(None, (), {}, tuple(shape), np.dtype(dtype), name=name,
                          kind="placeholder")


class MapBody:
    """What a basis_map runs: ``out`` as a function of placeholders ``params`` (bound to
    the op's first inputs), ``sliced`` (bound to slice k of the remaining inputs) and
    ``basis`` (bound to the k-th standard basis vector). Compiled once per backend."""

    def __init__(self, out, basis, params, sliced, reduce, dynamic=False):
        self.out, self.basis = out, basis
        self.params, self.sliced, self.reduce = tuple(params), tuple(sliced), reduce
        self.basis_shape = basis.shape
        # dynamic: the basis has a run-time length, read from the map's last input
        self.dynamic = dynamic
        self._programs = {}

    @property
    def n(self):
        """How many basis vectors, or None when that is known only at run time."""
        return None if self.dynamic else math.prod(self.basis_shape)

    @property
    def shape(self):
        return self.basis_shape + self.out.shape if self.reduce == "stack" else self.out.shape

    def __repr__(self):
        return (f"<basis_map body {self.out.name!r}: {self.reduce} over "
                f"the basis vectors of {self.basis.name!r}>")

    def run(self, xp, values, options=None):
        """The map's value on input ``values``; its body compiled with ``options`` (the
        enclosing program's ProgramOptions: basis_map ``runs_programs``)."""
        from .backends import backend_of, get_backend
        from .engine.plan import DEFAULT_OPTIONS, flags_of
        from .engine.program import Program
        from .errors import BackendError
        try:
            backend = backend_of(xp)     # the backend the basis_map step runs on
        except BackendError:
            backend = get_backend()
        key = backend if options is None or options is DEFAULT_OPTIONS else (backend, options)
        prog = self._programs.get(key)
        if prog is None:
            prog = self._programs[key] = Program(self.out, backend, **flags_of(options))
        k_params = len(self.params)
        slices = values[k_params:k_params + len(self.sliced)]
        bs = tuple(values[-1].shape) if self.dynamic else self.basis_shape
        n = math.prod(bs)
        feed = {p: v for p, v in zip(self.params, values[:k_params])}
        feed[self.basis] = xp.zeros(bs, dtype=self.basis.dtype)
        for s, v in zip(self.sliced, slices):
            feed[s] = v[(0,) * len(bs)] if n else xp.zeros(s.shape, s.dtype)
        base = prog.bind((feed,), {})           # feeds checked once
        slot = prog.slot_of
        u_slot = slot.get(self.basis.id)
        s_slots = [slot.get(s.id) for s in self.sliced]
        dtype = self.out.dtype
        results, total = [], None
        for k in range(n):
            idx = tuple(int(i) for i in np.unravel_index(k, bs))
            vals = list(base)
            if u_slot is not None:  # eₖ, built without item assignment (dask has none)
                vals[u_slot] = xp.reshape(xp.arange(n) == k, bs).astype(self.basis.dtype)
            for s_slot, v in zip(s_slots, slices):
                if s_slot is not None:
                    vals[s_slot] = v[idx]
            r = xp.asarray(prog.run_bound(vals)[0], dtype=dtype)
            if self.reduce == "stack":
                results.append(r)
            else:
                total = r if total is None else total + r
        if not n:
            return self._empty(xp, prog, base, bs)
        if self.reduce == "sum":
            return total
        return xp.reshape(xp.stack(results), bs + tuple(results[0].shape))

    def _empty(self, xp, prog, base, bs):
        """The result over no basis vectors: zeros of the body's shape (summed) or of
        bs + it (stacked, bs holding a 0). A run-time length of the body's shape is
        read from one run at the (empty) basis: writing 0 for it gave a Jacobian of an
        output with 3 rows with respect to a (0,) input the shape (0, 2, 0), not (3, 2, 0)."""
        shape = self.out.shape
        if None in shape:
            shape = tuple(prog.run_bound(list(base))[0].shape)
        return xp.zeros(shape if self.reduce == "sum" else bs + shape, self.out.dtype)


def _map_forward(xp, *values, body, options=None):
    return body.run(xp, values, options)


def _map_infer(*inputs, body):
    return body.shape, body.out.dtype


def _bindings(body, inputs):
    """(params, sliced) pairs of inner placeholder and outer node, and the shape reference."""
    k, m = len(body.params), len(body.sliced)
    ref = inputs[-1] if body.dynamic else None
    return list(zip(body.params, inputs[:k])), list(zip(body.sliced, inputs[k:k + m])), ref


def _map_jvp(argnum, t, ans, *inputs, body):
    """Ṁ = map of jvp(B, p, q), with q bound to the tangent t (sliced like p)."""
    params, sliced, ref = _bindings(body, inputs)
    if argnum == len(body.params) + len(body.sliced):
        return None                                # the shape reference: only its shape counts
    p = (body.params + body.sliced)[argnum]
    q = _placeholder(p.graph, p.shape, p.dtype, "basis_map/tangent")
    (sliced if argnum >= len(body.params) else params).append((q, t))
    return _make_map(jvp(body.out, p, q), body.basis, params, sliced, body.reduce, ref)


def _map_vjp(argnum, g, ans, *inputs, body):
    """p̄ = Σ_k vjp(B, p, r)(eₖ) with r bound to G[k] (stack) or G (sum); a sliced p
    gets the k-th term in place k instead of the sum."""
    params, sliced, ref = _bindings(body, inputs)
    if argnum == len(body.params) + len(body.sliced):
        return None                                # the shape reference: only its shape counts
    p = (body.params + body.sliced)[argnum]
    r = _placeholder(p.graph, body.out.shape, body.out.dtype, "basis_map/cotangent")
    (sliced if body.reduce == "stack" else params).append((r, g))
    reduce = "stack" if argnum >= len(body.params) else "sum"
    return _make_map(vjp(body.out, p, r), body.basis, params, sliced, reduce, ref)


def _make_op():
    from flowgrad.ops.base import REGISTRY, Op
    if "basis_map" in REGISTRY:
        return REGISTRY["basis_map"]
    op = Op("basis_map", _map_forward, _map_infer, vjp=_map_vjp, jvp=_map_jvp,
            variadic=True,
            doc="stack_k B(p, eₖ) (or Σ_k): one compiled body run per basis vector. "
                "Both rules are basis maps of the body's own jvp / vjp.")
    op.runs_programs = True     # its body is compiled as the enclosing program is
    return op


basis_map = _make_op()


def _make_map(out, basis, params, sliced, reduce, ref=None):
    """The basis_map node of ``out`` over ``basis``, its body closed over its boundary.

    ``params``/``sliced``: (placeholder, outer node) pairs — the placeholder stands for
    the whole outer value, or for slice k of it, inside ``out``. ``ref``: an outer node
    of the basis's shape, needed (as the last input) when that shape has a None.
    """
    from flowgrad.ops import apply
    graph = out.graph
    handles = graph.handles
    per_k = {basis.id} | {s.id for s, _ in sliced}
    order = ancestors([out])
    dep = set()
    for nid in order:
        if nid in per_k or any(i in dep for i in handles[nid].input_ids):
            dep.add(nid)
    outer = {p.id: o for p, o in params}          # inner placeholder -> outer node
    if out.id not in dep:                          # the same for every k
        return _same_for_every_k(_substitute([out], outer)[0], basis, reduce, ref)
    boundary = sorted({i for nid in dep for i in handles[nid].input_ids
                       if i not in dep and handles[i].kind != "constant"})
    outer_nodes = _substitute([handles[b] for b in boundary], outer)
    mapping, new_params = {}, []
    for b, o in zip(boundary, outer_nodes):
        q = _placeholder(graph, handles[b].shape, handles[b].dtype, "basis_map/input")
        mapping[b] = q
        new_params.append(q)
    for nid in order:                              # re-build the per-k part over them
        if nid not in dep or nid in per_k:
            continue
        d = handles[nid]
        ins = [mapping.get(i, handles[i]) for i in d.input_ids]
        mapping[nid] = apply(d.op, *ins, **d.attrs)
    body = MapBody(mapping.get(out.id, out), basis, new_params, [s for s, _ in sliced], reduce,
                 dynamic=ref is not None)
    inputs = tuple(outer_nodes) + tuple(o for _, o in sliced) + \
        ((ref,) if ref is not None else ())
    attrs = {"body": body}
    shape, dtype = basis_map.infer(*inputs, **attrs)   # (no inputs is fine: not via apply,
    return graph.add_node(basis_map, inputs, attrs, shape, dtype)  # which needs one for the graph)


def _same_for_every_k(value, basis, reduce, ref):
    """A map whose body does not read the basis: ``value`` stacked once per basis vector
    (or summed). The basis shape comes from ``ref``'s value where it has a run-time
    length; where only ``value`` has one (a Jacobian of an output with a run-time length
    that does not depend on x), broadcast_to cannot be told the shape, so ``value`` is
    multiplied by ones of the basis shape instead."""
    from flowgrad.ops import as_node, broadcast_to, expand_dims, mul, ones_like, sum
    k, r = len(basis.shape), len(value.shape)
    if ref is not None:                            # n and the basis shape from ref's value
        ones = ones_like(ref)
        if reduce == "sum":
            return mul(value, sum(ones))
        return mul(expand_dims(value, tuple(range(k))),
                   expand_dims(ones, tuple(range(k, k + r))))
    if reduce == "sum":
        return mul(value, math.prod(basis.shape))
    if None not in value.shape:
        return broadcast_to(value, basis.shape + value.shape)
    if not k:
        return value
    ones = as_node(np.ones(basis.shape + (1,) * r, dtype=value.dtype), value.graph)
    return mul(expand_dims(value, tuple(range(k))), ones)


def _substitute(nodes, outer):
    """``nodes`` with the inner placeholders of ``outer`` replaced by their outer nodes
    (ops re-applied where they depend on one; the nodes themselves otherwise)."""
    if not outer:
        return list(nodes)
    graph = nodes[0].graph if nodes else None
    if graph is None:
        return []
    from flowgrad.ops.base import reapply
    mapping = reapply(graph, ancestors(list(nodes)), dict(outer))
    return [mapping.get(n.id, n) for n in nodes]
