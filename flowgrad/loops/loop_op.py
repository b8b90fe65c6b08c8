"""The two ops of a loop or branch: ``loop`` (one run) and ``loop_out`` (one result).

A scan, while loop or cond is ONE op node of the enclosing graph, ``loop``, whose kernel
runs its traced body (a compiled sub-program, flowgrad/loops/body.py) once per
iteration through ``Program``'s public call. Its attrs hold a ``LoopSpec``: the kind,
the traced bodies, how its inputs split (initial carries, stacked xs, captured outer
nodes) and every result's shape and dtype. So every executor of the engine (the
interpreter, generated code, the NaN-checked loop) runs a loop without knowing what a
loop is: to it, a loop is a step whose attrs hold a sub-program.

A graph holds one value per node; a loop has several results. The ``loop`` node's value
is therefore a ``Results`` object (declared dtype ``object``, shape ``()``: no numerics check, no
derivative sweep reads it), and each result is a ``loop_out(loop, *loop inputs,
index=k)`` node that selects entry k, with its own declared shape and dtype. The
``loop_out`` takes the loop's inputs as its own inputs, so that the derivative sweeps
reach them through it, and nothing ever flows into the results object. Forward mode: the
tangent rule sits on ``loop_out`` (a tangent loop a result read). Reverse mode: ``loop_out``
``reads_results``, so the reverse sweep gathers the adjoints of all the loop's results
and hands them at once to the loop node's ``vjp_results``: one backward loop for every
result a loss reads (flowgrad/loops/grad.py).

Results, in order: the final carries; each stacked output ``y`` (scan: ``(T, *y.shape)``;
cond: the branch's outputs); then, for scan and while loops, each carry *as it entered
every iteration*, stacked ``(T, *carry.shape)``: what the backward loop reads, so the
forward keeps T carries (the body's other values are recomputed per step backwards);
last, each random node's draws per iteration (``LoopSpec._add_draws``), which the
derivative loops feed to their replays of the body in place of drawing again.
"""
from __future__ import annotations

import functools
import threading
from contextlib import contextmanager

import numpy as np

from ..errors import FlowgradError, NumericsError, ShapeError
from ..ops.base import REGISTRY, Op, fmt_shape

__all__ = ["LoopSpec", "LoopLimitError", "loop_op", "loop_out_op", "is_loop",
           "is_loop_result", "run_loop", "scan_length", "LoopRun", "recording_loops"]

OBJECT = np.dtype(object)


class LoopLimitError(FlowgradError, RuntimeError):
    """A ``while_loop`` reached its ``max_iters`` without its condition turning false:
    never a silent stop. The message names the loop and the user's line. (Raised by
    the loop's kernel, it reaches the caller as a RunError that is also a
    LoopLimitError, naming the node; so it is not itself a RunError subclass, which
    could not be mixed with RunError again.)"""


class LoopSpec:
    """A loop's declared structure (see the module docstring). ``kind``: "scan",
    "while" or "cond"; ``bodies``: the traced bodies (scan: [step]; while: [step,
    condition]; cond: [then, else]), ``caps_of[k]``: positions, among the loop's
    captured inputs, of body k's captures; ``n_carry``/``n_xs``/``n_ys`` the flat
    counts; ``out_shapes``/``out_dtypes`` every result's."""

    def __init__(self, kind, name, bodies, caps_of, n_carry, n_xs, n_ys, out_shapes,
                 out_dtypes, reverse=False, length=None, max_iters=None, where=None):
        self.kind = kind
        self.name = name
        self.bodies = list(bodies)
        self.caps_of = [list(c) for c in caps_of]
        self.n_carry, self.n_xs, self.n_ys = n_carry, n_xs, n_ys
        self.out_shapes = tuple(out_shapes)
        self.out_dtypes = tuple(out_dtypes)
        self.reverse = bool(reverse)
        self.length = length
        self.max_iters = max_iters
        self.where = where
        #: whether runs stack the carries (results "stack"): set, once and for good, when
        #: a derivative first reads them (loops/grad.py), so a loop nobody differentiates
        #: keeps no T carries. Programs compiled before read it at run time: only reads
        #: of the stacks, which exist only after it is set, need it.
        self.keeps_carries = False
        self._add_draws()

    def _add_draws(self):
        """The replayed bodies' random nodes (``draw_slots``: (body, node) pairs) and
        their results ("draw", after the declared ones): each iteration's draws, stacked
        like the carries, which the derivative loops read in place of drawing again.
        Derived from the bodies, so a spec loaded from a file has them too."""
        self.n_declared = len(self.out_shapes)
        replayed = (0, 1) if self.kind == "cond" else (0,)   # a while's test is not
        self.draw_slots = [(k, n) for k in replayed for n in self.bodies[k].draws()]
        lead = () if self.kind == "cond" else (self._trips(),)
        self.out_shapes += tuple((*lead, *n.shape) for _, n in self.draw_slots)
        self.out_dtypes += tuple(n.dtype for _, n in self.draw_slots)
        #: whether runs record the draws: set as keeps_carries is, by a derivative
        self.keeps_draws = False

    def _trips(self):
        """A scan's static trip count, if its declared results show one (else None)."""
        if self.kind != "scan":
            return None
        stacked = [s[0] for s in self.out_shapes[self.n_carry:]]
        return stacked[0] if stacked else self.length

    def __repr__(self):
        return f"<{self.name} loop: {self.n_carry} carries, {self.n_ys} outputs>"

    @property
    def n_lead(self) -> int:
        """How many of the loop's inputs come before the captures (cond: pred too)."""
        return self.n_carry + self.n_xs + (1 if self.kind == "cond" else 0)

    @property
    def n_results(self) -> int:
        """How many results a user sees: a cond's outputs; a loop's final carries and ys
        (the carry stacks, after them, are read by derivatives only)."""
        return self.n_ys if self.kind == "cond" else self.n_carry + self.n_ys

    def role(self, index):
        """``("final", k)``, ``("ys", j)``, ``("stack", k)`` or ``("draw", j)`` for result
        ``index`` (a cond's results are its branches' outputs, ``("ys", j)``, then its
        draws)."""
        if self.kind == "cond":
            return ("ys", index) if index < self.n_declared else \
                ("draw", index - self.n_declared)
        if index < self.n_carry:
            return "final", index
        if index < self.n_carry + self.n_ys:
            return "ys", index - self.n_carry
        if index < self.n_declared:
            return "stack", index - self.n_carry - self.n_ys
        return "draw", index - self.n_declared

    def label(self) -> str:
        """The box's text in a drawing: ``scan × T``, ``while_loop``, ``cond``."""
        if self.kind == "scan":
            return f"{self.name} × {'T' if self.length is None else self.length}"
        return self.name


# -- running ---------------------------------------------------------------------------

class Results:
    """A loop node's value: its results, ``.values`` (read by ``loop_out``). Not a
    sequence, so code that shows or converts any node's value (traces, walkthroughs,
    audits) sees one opaque object, a 0-d object array to numpy, not a ragged list."""

    __slots__ = ("values",)

    def __init__(self, values):
        self.values = tuple(values)

    def __array__(self, dtype=None, copy=None):
        out = np.empty((), dtype=object)
        out[()] = self
        return out

    def __repr__(self):
        return f"<{len(self.values)} loop results>"

    def __format__(self, spec):   # shown where a number would be (a walkthrough's frame)
        return repr(self)


def _call(spec, k, xp, args, caps, step, run=None, extra=(), options=None):
    """Body k's outputs (then the values of its nodes ``extra``); a NaN the checked
    body finds names the iteration. ``run``: the LoopRun keeping every value of this
    iteration's body (a trace), or None. ``options``: the enclosing program's
    ProgramOptions, which the body's program is compiled with."""
    try:
        body = spec.bodies[k]
        bcaps = [caps[i] for i in spec.caps_of[k]]
        if run is None or not body.keeps_all_of(extra) or not run.next_kept():
            return body.call(xp, args, bcaps, extra, options)
        outs, run.values[step] = body.call_values(xp, args, bcaps, options)
        return outs + [run.values[step][n.id] for n in extra]
    except NumericsError as exc:
        raise NumericsError(f"{spec.name}: iteration {step} (counted from 0) of the loop "
                            f"built at {spec.where}: {exc}", exc.node, exc.trace) from exc


def _stack(xp, items, shape, dtype, name):
    if items:
        return xp.stack(items)
    if None in shape:
        raise ShapeError(f"{name}: a loop of 0 iterations cannot stack an output of "
                         f"shape {fmt_shape(shape)} (a length known only at run time, "
                         "which its inputs' shapes do not determine)")
    return xp.zeros((0, *shape), dtype=dtype)


def _unrun_shapes(spec, k, arg_shapes, caps, nodes=()):
    """The run-time shapes body ``k``'s outputs, then its nodes ``nodes``, would have on
    arguments of the shapes ``arg_shapes`` and the loop's captures ``caps``, for a loop
    that ran no iteration and must still stack them as (0, *shape): a declared run-time
    length (a ``y`` of a carry of shape (None,)) is inferred from the inputs' shapes by
    replaying the body's shape inference (loops/task.py); None where it stays unknown."""
    from .task import body_shapes
    got = body_shapes(spec, k, arg_shapes, [np.shape(c) for c in caps], nodes)
    return [tuple(None if d != d else int(d) for d in s) for s in got]   # NaN: unknown


def scan_length(spec, lengths):
    """A scan's number of iterations, from its stacked inputs' ``lengths`` (ints) and
    its ``length=``; a ShapeError naming the loop when they disagree."""
    lengths = set(lengths)
    if spec.length is not None:
        lengths.add(int(spec.length))
    if len(lengths) > 1:
        raise ShapeError(f"{spec.name}: the stacked inputs (and length=) disagree on the "
                         f"number of iterations: {sorted(lengths)}")
    return lengths.pop()


def _buffer(xp, T, value, dtype):
    """A (T, *shape) array for T values like ``value``: filled in place, no list+stack."""
    return xp.empty((T, *np.shape(value)), dtype=dtype)


class _Draws:
    """What a run records of body k's draws, per iteration (see LoopSpec._add_draws):
    nothing unless a derivative reads them. ``extra``: the nodes the body call adds to
    its outputs; ``put(t, outs)`` files iteration t's values; ``stacked()`` the
    results (a scan fills (T, ...) buffers in place; a while loop appends)."""

    def __init__(self, spec, xp, k=0, T=None):
        on = spec.keeps_draws and spec.kind != "cond"
        self.spec, self.xp, self.T = spec, xp, T
        self.slots = [j for j, (b, _) in enumerate(spec.draw_slots) if b == k]
        self.extra = [spec.draw_slots[j][1] for j in self.slots] if on else []
        self.first = len(spec.bodies[k].outs)
        self.got = [None if T is not None else [] for _ in self.extra]

    def put(self, t, outs):
        for j, v in enumerate(outs[self.first:]):
            if self.T is None:
                self.got[j].append(v)
                continue
            if self.got[j] is None:   # (the declared dtype: a value may be a number)
                dtype = self.spec.out_dtypes[self.spec.n_declared + self.slots[j]]
                self.got[j] = _buffer(self.xp, self.T, v, dtype)
            self.got[j][t] = v

    def stacked(self, unrun=None):
        """The draws' results; ``unrun(nodes)``: their run-time shapes, for a loop that
        ran no iteration (``_unrun_shapes``; a length still unknown is stacked as 0)."""
        spec = self.spec
        out = [None] * len(spec.draw_slots)
        empty = None
        for pos, (j, got) in enumerate(zip(self.slots, self.got)):
            i = spec.n_declared + j
            shape, dtype = spec.out_shapes[i][1:], spec.out_dtypes[i]
            if got is None or isinstance(got, list) and not got:   # no iteration
                if None in shape and unrun is not None:
                    empty = unrun(self.extra) if empty is None else empty
                    shape = empty[pos]
                got = self.xp.zeros((0, *(0 if s is None else s for s in shape)), dtype)
            out[j] = self.xp.stack(got).astype(dtype, copy=False) \
                if isinstance(got, list) else got
        return out


def _run_scan(spec, xp, vals, run=None, options=None):
    nc, nx, ny = spec.n_carry, spec.n_xs, spec.n_ys
    carry = list(vals[:nc])
    xs = vals[nc:nc + nx]
    caps = vals[nc + nx:]
    T = scan_length(spec, [int(x.shape[0]) for x in xs])
    dtypes = spec.out_dtypes
    keep = spec.keeps_carries
    stacks = [_buffer(xp, T, carry[k], dtypes[k]) if keep else None for k in range(nc)]
    ys = [None] * ny
    draws = _Draws(spec, xp, 0, T)
    for t in (range(T - 1, -1, -1) if spec.reverse else range(T)):
        if keep:
            for k in range(nc):
                stacks[k][t] = carry[k]
        outs = _call(spec, 0, xp, carry + [x[t] for x in xs], caps, t, run, draws.extra,
                     options)
        if draws.extra:
            draws.put(t, outs)
        carry = list(outs[:nc])
        for j in range(ny):
            if ys[j] is None:   # its shape is known once the body has run
                ys[j] = _buffer(xp, T, outs[nc + j], dtypes[nc + j])
            ys[j][t] = outs[nc + j]
    if T == 0:
        ys = _unrun_ys(spec, xp, carry, xs, caps)
    n_outs = len(spec.bodies[0].outs)
    return (*_own(xp, carry, vals), *ys, *stacks, *draws.stacked(
        lambda nodes: _unrun_shapes(spec, 0, _arg_shapes(carry, xs), caps,
                                    nodes)[n_outs:]))


def _arg_shapes(carry, xs):
    """The shapes a scan's body is called on: the carries', the xs' slices'."""
    return [np.shape(c) for c in carry] + [tuple(x.shape[1:]) for x in xs]


def _unrun_ys(spec, xp, carry, xs, caps):
    """A scan of no iteration's ys, (0, *y's shape): a run-time length of y (a
    derivative's y of a carry of shape (None,)) inferred from the inputs' shapes."""
    nc, ny = spec.n_carry, spec.n_ys
    shapes = [spec.out_shapes[nc + j][1:] for j in range(ny)]
    if any(None in s for s in shapes):
        shapes = _unrun_shapes(spec, 0, _arg_shapes(carry, xs), caps)[nc:nc + ny]
    return [_stack(xp, [], s, spec.out_dtypes[nc + j], spec.name)
            for j, s in enumerate(shapes)]


def _own(xp, carry, vals):
    """The final carries, copied where a loop of no iteration would hand out an input
    itself (the caller's fed array, a variable's storage)."""
    return [xp.array(c, copy=True) if any(c is v for v in vals) else c for c in carry]


def _results(spec, xp, carry, stacks, vals):
    """A while loop's results: its final carries, then the carries it entered with
    (its draws, after them, are added by the caller)."""
    out = _own(xp, carry, vals)
    for k in range(spec.n_carry):
        out.append(_stack(xp, stacks[k], tuple(np.shape(carry[k])), spec.out_dtypes[k],
                          spec.name) if spec.keeps_carries else None)
    return tuple(out)


def _run_while(spec, xp, vals, run=None, options=None):
    nc = spec.n_carry
    carry = list(vals[:nc])
    caps = vals[nc:]
    stacks = [[] for _ in range(nc)]
    draws = _Draws(spec, xp)
    n = 0
    while bool(_call(spec, 1, xp, carry, caps, n, options=options)[0]):
        if n == spec.max_iters:
            raise LoopLimitError(
                f"{spec.name} built at {spec.where} reached max_iters={spec.max_iters} "
                "with its condition still true; raise max_iters if the loop does end")
        if spec.keeps_carries:
            for k in range(nc):
                stacks[k].append(carry[k])
        outs = _call(spec, 0, xp, carry, caps, n, run, draws.extra, options)
        draws.put(n, outs)
        carry = list(outs[:nc])
        n += 1

    def unrun(nodes):      # no iteration: the draws' run-time shapes from the carries'
        return _unrun_shapes(spec, 0, [np.shape(c) for c in carry], caps,
                             nodes)[len(spec.bodies[0].outs):]
    return (*_results(spec, xp, carry, stacks, vals), *draws.stacked(unrun))


def _run_cond(spec, xp, vals, run=None, options=None):
    pred = vals[0]
    ops = list(vals[1:1 + spec.n_carry])
    caps = vals[1 + spec.n_carry:]
    k = 0 if bool(pred) else 1
    if run is not None:
        run.branch = k
    if not spec.keeps_draws:
        return tuple(_call(spec, k, xp, ops, caps, 0, run, options=options))
    extra = [n for b, n in spec.draw_slots if b == k]
    outs = _call(spec, k, xp, ops, caps, 0, run, extra, options)
    got = iter(outs[spec.n_ys:])   # the untaken branch drew nothing: empty stand-ins
    return (*outs[:spec.n_ys], *(next(got) if b == k else
                                 xp.zeros(tuple(0 if s is None else s for s in n.shape),
                                          n.dtype) for b, n in spec.draw_slots))


_RUNNERS = {"scan": _run_scan, "while": _run_while, "cond": _run_cond}


def _loop_forward(xp, *vals, spec, options=None):
    if xp is not np:
        from ..backends import backend_of
        backend = backend_of(xp)
        if backend.loops == "task":     # a lazy backend (dask): the loop is one task
            from .task import run_as_task
            runner = functools.partial(run_loop, options=options)
            return Results(run_as_task(spec, backend, vals, runner))
    return Results(run_loop(spec, xp, vals, options))


def run_loop(spec, xp, vals, options=None) -> tuple:
    """The results of ``spec``'s loop on input values ``vals``, computed with ``xp``;
    its bodies compiled with ``options`` (the enclosing program's ProgramOptions: the
    loop op ``runs_programs``), the defaults where None."""
    # one look-up a loop run (none an iteration): a plain run records nothing
    recorder = getattr(_RECORDING, "recorder", None)
    run = recorder.start(spec) if recorder is not None else None
    return _scalars(_RUNNERS[spec.kind](spec, xp, vals, run, options), spec.out_dtypes)


def _scalars(results, dtypes) -> tuple:
    """The results with each 0-d numpy array as a numpy scalar, as any op's 0-d result
    is: a loop of no iteration (or a branch returning its operand) would otherwise hand
    out the 0-d array it entered with where an iteration gives a scalar, and one
    program's output type would depend on the run (on numpy, and on dask, whose task
    runs this on numpy). A Python number (a body returning ``0.5`` or ``7``: its
    program hands out the constant as it is) becomes a numpy scalar of the result's
    declared dtype: a float64 result was a ``float``, an int32 one an ``int``."""
    return tuple(v[()] if type(v) is np.ndarray and v.ndim == 0 else
                 np.asarray(v, dtype=d)[()] if type(v) in (bool, int, float, complex) else v
                 for v, d in zip(results, dtypes))


# -- recording iterations (traces only) -------------------------------------------------

class LoopRun:
    """The values of one run of a loop, kept while a trace runs (``recording_loops``):
    ``values[t]`` is {body node id: value} of iteration t (scan: the position t along
    xs; while: the t-th iteration; cond: 0, the taken branch ``branch``). Only the first
    ``limit`` iterations are kept: ``count`` says how many ran, ``complete`` whether
    all of them were kept (so a long loop costs no memory beyond the limit)."""

    def __init__(self, spec, limit):
        self.spec, self.limit = spec, limit
        self.values: dict[int, dict] = {}
        self.count = 0
        self.branch = 0

    @property
    def complete(self) -> bool:
        return self.count <= self.limit

    def next_kept(self) -> bool:
        """Count one more iteration; whether to keep its values (the first ``limit``:
        past them, the kept ones go and the body runs its plain program again)."""
        self.count += 1
        if self.count > self.limit:
            self.values.clear()
            return False
        return True


class _Recorder:
    def __init__(self, specs, limit):
        self.wanted = {id(s): s for s in specs}
        self.limit = limit
        self.runs: dict[int, LoopRun] = {}

    def start(self, spec):
        """The run to keep ``spec``'s iterations in, or None (not wanted, or run twice:
        one run a loop node is what a drawing shows)."""
        if id(spec) not in self.wanted or id(spec) in self.runs:
            return None
        run = self.runs[id(spec)] = LoopRun(spec, self.limit)
        return run


_RECORDING = threading.local()


#: the most iterations of a loop a trace keeps whole (and an unrolled drawing draws):
#: a drawing of more copies of a body would not be read
RECORD_LIMIT = 12


@contextmanager
def recording_loops(nodes, limit=RECORD_LIMIT):
    """While inside, runs (in this thread) of the loop nodes among ``nodes`` keep every
    value of their first ``limit`` iterations; yields {id(spec): LoopRun}. Used by
    ``Program.trace`` only: a plain run pays one attribute look-up a loop run."""
    specs = [n.attrs["spec"] for n in nodes if is_loop(n)]
    if not specs:
        yield {}
        return
    before = getattr(_RECORDING, "recorder", None)
    rec = _RECORDING.recorder = _Recorder(specs, limit)
    try:
        yield rec.runs
    finally:
        _RECORDING.recorder = before


def _loop_infer(*inputs, spec):
    return (), OBJECT


def _no_terms(needed, g, ans, *inputs, spec):
    return [None] * len(inputs)     # no adjoint reaches a Results value (module docstring)


def _loop_vjp_results(needed, cotangents, ans, *inputs, spec):
    """The terms of the loop's inputs from the adjoints of its results ({loop_out node:
    adjoint}; two nodes of one result add): one backward loop for all of them."""
    from .grad import loop_vjp
    cts = {}
    for node, g in cotangents.items():
        i = node.attrs["index"]
        cts[i] = g if i not in cts else cts[i] + g
    return loop_vjp(spec, cts, needed, ans, list(inputs))


def _no_tangent(tangents, ans, *inputs, spec):
    return None


def _make_loop():
    if "loop" in REGISTRY:
        return REGISTRY["loop"]
    # stateful: the simplifier must never fold a loop of constants into a constant (its
    # value is a Results object, no array) nor merge two (a body may draw random values)
    op = Op("loop", _loop_forward, _loop_infer, vjp=lambda argnum, *a, **k: None,
            jvp=lambda argnum, *a, **k: None, variadic=True, stateful=True,
            doc="A scan, while loop or cond: runs its traced body once per iteration. "
                "Its value holds its results, read by loop_out nodes; its reverse rule "
                "takes every result's adjoint at once: one loop backwards through the "
                "body's vjp.")
    op.vjp_all = _no_terms
    op.vjp_results = _loop_vjp_results
    op.runs_programs = True     # its kernel gets the enclosing program's options
    op.jvp_all = _no_tangent
    return op


loop_op = _make_loop()


def _spec_of(loop):
    """The LoopSpec of a result's loop node (argument 0): the one source of truth."""
    return loop.attrs["spec"]


def _out_forward(xp, loop, *inputs, index):
    return loop.values[index]


def _out_infer(loop, *inputs, index):
    spec = _spec_of(loop)
    # Building a result declares what runs of its loop must provide: a result reading
    # the stacked carries makes every run keep them, from now on (LoopSpec's flag).
    if spec.role(index)[0] == "stack":
        spec.keeps_carries = True
    elif spec.role(index)[0] == "draw":
        spec.keeps_draws = True
    return spec.out_shapes[index], spec.out_dtypes[index]


def _out_vjp_all(needed, g, ans, loop, *inputs, index):
    """This one result's terms alone (a caller asking per node, a drawing's local
    derivatives; the reverse sweep gives every result's adjoint to the loop node's
    rule at once instead: ``reads_results``)."""
    from .grad import loop_vjp
    return [None] + loop_vjp(_spec_of(loop), {index: g}, needed[1:], loop, list(inputs))


def _out_jvp_all(tangents, ans, loop, *inputs, index):
    spec = _spec_of(loop)
    if spec.out_dtypes[index].kind not in "fc":
        return None
    from .grad import loop_jvp
    return loop_jvp(spec, index, list(tangents[1:]), loop, list(inputs))


def _out_rule(argnum, g, ans, loop, *inputs, index):
    if argnum == 0:
        return None
    needed = [k == argnum - 1 for k in range(len(inputs))]
    return _out_vjp_all([False, *needed], g, ans, loop, *inputs, index=index)[argnum]


def _out_tangent(argnum, t, ans, loop, *inputs, index):
    if argnum == 0:
        return None
    given = [None] * (len(inputs) + 1)
    given[argnum] = t
    return _out_jvp_all(given, ans, loop, *inputs, index=index)


def _make_out():
    if "loop_out" in REGISTRY:
        return REGISTRY["loop_out"]
    op = Op("loop_out", _out_forward, _out_infer, vjp=_out_rule, jvp=_out_tangent,
            variadic=True,
            doc="Result `index` of a loop node (argument 0); arguments 1… are the loop's "
                "own inputs, so that derivatives reach them: its adjoint goes to the loop's "
                "rule, with its sibling results' (one backward loop), ẋ is a loop "
                "carrying tangents.")
    op.vjp_all = _out_vjp_all
    op.reads_results = True
    op.jvp_all = _out_jvp_all
    return op


loop_out_op = _make_out()


def is_loop(node) -> bool:
    """Whether ``node`` is a loop (scan, while_loop or cond) node."""
    return node.op is loop_op


def is_loop_result(node) -> bool:
    """Whether ``node`` is one result (a ``loop_out``) of a loop node."""
    return node.op is loop_out_op
