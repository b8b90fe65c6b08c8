"""Generated code: a Program's plan as one straight-line Python function.

The interpreter (flowgrad/engine/executors/interp.py) walks a list of instructions over a list of
slots; every step pays a tuple unpack, two list reads, a list write and a branch.
Here the same plan becomes source text, compiled once: each slot is a local
variable, each step one line, ``operator.add``/``mul``/… kernels become the
operators themselves (no call at all), the last-use frees become ``del``s, and
kernels and array constants are globals of the function's own namespace.

Two variants are generated from one plan:

* the **array** function, for any program: ``fn(vals) -> [outputs]`` over the
  slot list that ``Program.bind`` (or :func:`fast_binder`) fills;
* the **scalar** function, when every value of the program is a 0-d float64 (or
  a bool between comparisons and ``where``) and every op has a kernel in
  ``ops/scalar_kernels.py``: it runs on Python floats with ``math`` functions.
  Python raises where numpy returns inf/nan (``math.exp(1000)``, ``1/0``,
  ``math.log(-1)``); then, and whenever an output is not finite, the call is
  simply rerun on the array function, so edge values get numpy's exact results
  and warnings.

Errors: the array function catches around its whole body, maps the failing
line back to its plan step (``lines``), and reports it (``raise_step_error``).
Very large plans stay on the interpreter (``MAX_STEPS``, the plan's ``FLAT_STEPS``):
compiling a million lines of Python costs more than it saves.

Everything here reads the declared plan (flowgrad/engine/plan.py) and the backend's
declared capabilities (``fusion``, ``regions``, ``lean_kernels``, ``fast_feeds``); the
call path at the end reads the Program's public façade.
"""
from __future__ import annotations

import math
import operator
from itertools import compress, repeat
from operator import is_not

import numpy as np

from .executors.base import raise_step_error
from .plan import FLAT_STEPS, node_table
from ..graph import Node
from . import fusion as _fusion

MAX_STEPS = FLAT_STEPS   # beyond this, Python's compiler is slower than the interpreter loop
FUSE = True           # elementwise fusion (flowgrad/engine/fusion.py) in the array function

_INLINE = {operator.add: "{} + {}", operator.sub: "{} - {}", operator.mul: "{} * {}",
           operator.truediv: "{} / {}", operator.neg: "-{}", operator.pow: "{} ** {}"}


class Generated:
    """The compiled function(s) of one program, and the line → step map.

    The array function is compiled on first use when a scalar variant exists (it is
    then needed only for edge values): compiling Python source is the dominant cost
    of codegen on long plans."""

    def __init__(self, plan, backend, consts, scalar=None):
        self.plan, self.backend, self._consts = plan, backend, consts
        self._array_fn = None
        self.lines = None             # line number in ``source`` → index k into plan.made_steps()
        self.source = None
        self.scalar = scalar          # ScalarPlan or None
        if scalar is None:
            self._compile()

    @property
    def array_fn(self):
        if self._array_fn is None:
            self._compile()
        return self._array_fn

    def _compile(self):
        w = _ArrayWriter(self.plan, self.backend, self._consts)
        fn, self.lines, self.source = w.write()
        self._fused = FusedParts(w.regions, w.chains, w.lazy, w.ns)
        self._array_fn = fn   # published last: a thread that sees it sees the rest

    def fused_parts(self) -> "FusedParts":
        """What the array function runs as one kernel, and the kernels it calls (the
        profiler times them: flowgrad/engine/fused_timing.py)."""
        if self._array_fn is None:
            self._compile()
        return self._fused


class FusedParts:
    """The fused kernels of one array function: ``regions`` {last step: Region},
    ``chains`` {root step: Chain}, ``lazy`` {last step: the region's LazyKernel} and
    ``ns``, the function's globals as it sees them now (``r<k>`` a region's loop —
    its LazyKernel until compiled —, ``f<k>`` a chain's kernel)."""

    def __init__(self, regions, chains, lazy, ns):
        self.regions, self.chains, self.lazy, self.ns = regions, chains, lazy, ns


def _literal(v):
    """Source text for a weak Python constant, or None if it must be a global."""
    if type(v) is bool or type(v) is int:
        return repr(v)
    if type(v) is float and math.isfinite(v):
        return repr(v)                # repr round-trips a float exactly
    return None


def constants(plan):
    """{slot: source text} of the plan's constants: a literal or a global's name."""
    consts = {}
    template = plan.consts
    for s in compress(range(len(template)), map(is_not, template, repeat(None))):
        lit = _literal(template[s])
        consts[s] = lit if lit is not None else f"c{s}"
    return consts


def generate(prog):
    """The Generated code for ``prog`` (a built Program), or None for very large plans."""
    if prog.n_steps > MAX_STEPS:
        return None
    from .scalar_plan import build_scalar   # noqa: E402  (one module per responsibility)
    consts = constants(prog.plan)
    return Generated(prog.plan, prog.backend, consts, build_scalar(prog, consts))


class _ArrayWriter:
    """Writes one plan's array function: first what fuses (regions, chains, shared and
    paired steps, numpy-specialised kernels) and the frees that follow from it, then
    one emit per step in plan order."""

    FIRST = 4                          # source line of body[0]: after def, try, pass

    def __init__(self, plan, backend, consts, keep=False):
        self.plan, self.consts, self.keep = plan, consts, keep
        self.ns = {name: plan.consts[s] for s, name in consts.items() if name.startswith("c")}
        self.steps, self.kernels = plan.made_steps(), plan.kernels(backend.xp)
        self.body, self.lines, self.lazy = [], {}, {}
        self.regions = _regions(plan, backend)
        self.lean, shared, pairs = _lean_kernels(plan, backend)
        in_region = {k for rg in self.regions.values() for k in rg.steps}
        # bce or softplus + the σ(z) of its derivative: one exp(−|z|), at the first step
        # (neither step then in a chain)
        self.pairs = {k: p for k, p in pairs.items() if not {k, p[0]} & in_region}
        self.chains, self.kernel_of = _chains(
            plan, backend, in_region | set(self.pairs) | {j for j, _ in self.pairs.values()})
        member = {k: root for root, ch in self.chains.items() for k in ch.steps if k != root}
        member.update((k, root) for root, rg in self.regions.items()
                      for k in rg.steps if k != root)
        self.member = member
        exported = {s for rg in self.regions.values() for s in rg.exports}
        self.frees_at = _frees(plan, member, exported)
        # mse's residual y − t, also a reverse-pass step: computed once, at the mse step
        self.shared = {k: (j, fn) for k, (j, fn) in shared.items()
                       if not {k, j} & (set(self.chains) | set(member))}
        self.early = {j for j, _ in self.shared.values()} | \
            {j for j, _ in self.pairs.values()}

    def ref(self, s):
        return self.consts.get(s, f"v{s}")

    def mark(self, k):
        """The next body line reports step ``k`` when it raises."""
        self.lines[self.FIRST + len(self.body)] = k

    def step_line(self, k, indent="", ins=None):
        st = self.steps[k]
        ins, out = st.ins if ins is None else ins, st.out
        fn = self.lean.get(k, self.kernels[k])
        args = [self.ref(i) for i in ins]
        pattern = _INLINE.get(fn) if _hashable(fn) else None
        if pattern is not None and pattern.count("{}") == len(args):
            expr = pattern.format(*args)
        else:
            self.ns[f"k{k}"] = fn
            expr = f"k{k}({', '.join(args)})"
        self.mark(k)
        self.body.append(f"{indent}v{out} = {expr}")

    def dels(self, slots, indent=""):
        if self.keep:                  # (lockstep's replay: every value stays readable)
            return
        names = [f"v{s}" for s in slots if s not in self.consts]
        if names:
            self.body.append(f"{indent}del {', '.join(names)}")

    def emit_plain(self, k, step):
        """A step outside any chain or region (or its pair's or shared step's line)."""
        if k in self.pairs:
            j, self.ns[f"s{k}"] = self.pairs[k]
            self.mark(k)
            self.body.append(f"v{step.out}, v{self.steps[j].out} = s{k}("
                             f"{', '.join(self.ref(i) for i in step.ins)})")
        elif k in self.shared:
            j, self.lean[k] = self.shared[k]
            self.step_line(j)
            self.step_line(k, ins=(self.steps[j].out,))
        elif k not in self.early:
            self.step_line(k)

    def emit_chain(self, k, step):
        """A fused chain at its root: the fused kernel (cupy always; numpy's numexpr only
        for big operands, decided statically or by a test per call), else its steps."""
        ch, body = self.chains[k], self.body
        self.ns[f"f{k}"] = self.kernel_of[k]
        args = ", ".join(self.ref(s) for s in ch.operands)
        big = True if self.kernel_of.get("small") is None else \
            _size_test(self.plan, ch.operands, self.ref)
        if big is True:
            self.mark(k)
            body.append(f"v{step.out} = f{k}({args})")
            return
        indent = "    " if big else ""
        if big:
            self.mark(k)
            body += [f"if {big}:", f"    v{step.out} = f{k}({args})", "else:"]
        for kk in ch.steps:
            self.step_line(kk, indent)
        self.dels([self.steps[kk].out for kk in ch.steps if kk != k], indent)

    def write(self):
        plan, body = self.plan, self.body
        for s in sorted(s for s in set(plan.leaves.values()) if s not in self.consts):
            body.append(f"v{s} = vals[{s}]")
        for k, step in enumerate(self.steps):
            if k in self.member:
                continue               # computed inside its chain's or region's kernel
            if k in self.regions:
                self.lazy[k] = _emit_region(plan, self.regions[k], self.ns, body, self.lines,
                                            self.FIRST, self.ref, self.step_line, self.dels)
            elif k in self.chains:
                self.emit_chain(k, step)
            else:
                self.emit_plain(k, step)
            self.dels(self.frees_at.get(k, ()))
        outs = f"[{', '.join(self.ref(s) for s in plan.outputs)}]"
        body.append(f"return {outs}, _kept(locals())" if self.keep else f"return {outs}")
        src = "\n".join(["def _flowgrad_plan(vals):", "    try:", "        pass"]
                        + ["        " + line for line in body]
                        + ["    except Exception as exc:",
                           "        _located(exc)",
                           "        raise"]) + "\n"
        ns, lines = self.ns, self.lines
        ns["_located"] = lambda exc: _locate(plan, lines, exc)
        ns["_kept"] = _kept
        exec(compile(src, f"<flowgrad plan {id(plan):#x}>", "exec"), ns)
        ns["_flowgrad_plan"].fused = bool(self.chains)   # numexpr/cupy chains: not bitwise
        return ns["_flowgrad_plan"], lines, src


def _kept(names):
    """{slot: value} of the ``v<slot>`` locals of a keeping array function."""
    return {int(k[1:]): v for k, v in names.items() if k[:1] == "v" and k[1:].isdigit()}


class Keeping:
    """The array function of a plan as generated code writes it (the same chains,
    regions and kernels), but keeping every value it computes, for lockstep verify
    (flowgrad/engine/lockstep.py): ``fn(vals) -> (outputs, {slot: value})``. A chain's
    or a region's inner values are absent where its fused kernel ran. ``chains`` and
    ``regions``: {step index: the plan steps it runs}."""

    def __init__(self, plan, backend):
        w = _ArrayWriter(plan, backend, constants(plan), keep=True)
        self.fn = w.write()[0]
        self.chains = {k: tuple(ch.steps) for k, ch in w.chains.items()}
        self.regions = {k: tuple(rg.steps) for k, rg in w.regions.items()}


def _size_test(plan, operands, ref):
    """Whether a numpy chain runs through numexpr: True or False when its operands'
    shapes are static, else the source of a run-time test on the operand most likely
    to be large (the one with the most run-time lengths, then the most axes)."""
    big = big_operand(plan, operands)
    return big if type(big) is bool else f"{ref(big)}.size >= {_fusion.NUMEXPR_MIN}"


def big_operand(plan, operands):
    """Whether a numpy chain over ``operands`` (slots) runs through numexpr: True or
    False when their shapes are static, else the slot whose size decides, per call."""
    data, kept = node_table(plan.graph), plan.slots
    shapes = {s: data[kept[s]].shape for s in operands}
    if all(None not in sh for sh in shapes.values()):
        sizes = [int(np.prod(sh)) for sh in shapes.values()]
        return max(sizes) >= _fusion.NUMEXPR_MIN
    return max(operands, key=lambda s: (shapes[s].count(None), len(shapes[s])))


def _lean_kernels(plan, backend):
    """{step: numpy kernel} replacing generic kernels that are slow on small arrays,
    {mse step: (later step computing the same y − t, the mse's kernel of that residual)}
    and {bce step: (later σ step of the same z, kernel of both)}
    (flowgrad/engine/numpy_kernels.py)."""
    from .numpy_kernels import kernel, shared_exps, shared_residuals
    if not backend.lean_kernels:
        return {}, {}, {}
    data, kept, steps = node_table(plan.graph), plan.slots, plan.made_steps()
    outs = set(plan.outputs)
    lean, typed = {}, []
    for k, st in enumerate(steps):
        op, attrs, nid = st.op, st.attrs, st.node
        nd = data[nid] if type(nid) is int and 0 <= nid < len(data) else None
        dtype = nd.dtype if nd is not None else None
        typed.append((op, attrs, dtype, nd.shape if nd is not None else None))
        if dtype is None:
            continue
        ins = [data[kept[s]] for s in st.ins]
        fn = kernel(op.name, attrs, dtype, [d.shape for d in ins], [d.dtype for d in ins],
                    st.out in outs)
        if fn is not None:
            lean[k] = fn
    return lean, shared_residuals(typed, steps), shared_exps(typed, steps)


def _frees(plan, member, exported=()):
    """{step: slots to del after it}: the plan's last-use frees, redone because a chain's
    (or region's) inner steps run at its root, which may extend their operands' lives.
    A region's exported values are freed as any value; its other inner values exist
    as locals only in the plain branch of a run-time-length region, which dels them."""
    steps = plan.made_steps()
    inner = {steps[k].out for k in member} - set(exported)
    keep = set(plan.outputs)
    last = {}
    for k, step in enumerate(steps):
        at = member.get(k, k)
        for s in step.ins:
            if at >= last.get(s, -1):
                last[s] = at
    frees = {}
    for s, k in last.items():
        if s not in keep and s not in inner:
            frees.setdefault(k, []).append(s)
    return frees


def _chains(plan, backend, exclude=frozenset()):
    """Fused chains of the plan (none through the steps in ``exclude``) and their kernels,
    for backends that declare a fuser (``Backend.fusion``)."""
    if not FUSE:
        return {}, {}
    if backend.fusion == "numexpr":
        try:
            import numexpr  # noqa: F401
        except ImportError:
            return {}, {}
        chains = _fusion.find_chains(plan, exclude)
        kernels = {k: _fusion.numexpr_kernel(ch) for k, ch in chains.items()}
        kernels["small"] = True
        return chains, kernels
    if backend.fusion == "elementwise":
        chains = _fusion.find_chains(plan)
        return chains, {k: _fusion.cupy_kernel(backend.xp, ch, f"flowgrad_fused_{k}")
                        for k, ch in chains.items()}
    return {}, {}


REGIONS = True        # pointwise regions as numba loops (flowgrad/engine/regions.py) when numba is there


def _regions(plan, backend):
    """Pointwise regions of a numpy plan (regions.py); {} without numba. They come
    before numexpr chains: a region loop beat numexpr on the same steps at every size
    measured (RESULTS.md), and chains then fuse what is left (exp, log, σ …)."""
    from . import regions as _rg
    if not REGIONS or not backend.regions or not _rg.available():
        return {}
    return _rg.find_regions(plan)


def _emit_region(plan, rg, ns, body, lines, first, ref, step_line, dels):
    """The region's loop: ``r<k>`` is a lazy kernel until the program's second call, then
    numba's function (or, if numba failed, the steps' numpy kernels). A loop never raises
    on float data (numpy's error model), so an exception from the call is numba refusing
    the arguments' types (say a non-native byte order): those calls run the steps' numpy
    kernels (``e<k>``), whose errors name the failing step (regions.evaluate). With
    run-time lengths, a shape test per call guards the loop; when it fails (operands
    that broadcast, or fewer than MIN_SIZE entries) the plain steps run, inline.
    Returns the LazyKernel."""
    from . import regions as _rg
    k = rg.steps[-1]
    lazy = _rg.LazyKernel(plan, rg, ns, f"r{k}")
    ns[f"r{k}"], ns[f"e{k}"] = lazy, lazy.fallback
    outs = ", ".join(f"v{s}" for s in rg.exports)     # one array, or a tuple of them
    args = [ref(s) for s in rg.operands]
    loop_args = [a if kind is None else f"{kind}({a})"      # 0-d values as numbers
                 for a, kind in zip(args, rg.scalar)]
    call = ("try:", f"    {outs} = r{k}({', '.join(loop_args)})", "except Exception:",
            f"    {outs} = e{k}({', '.join(args)})")
    if not rg.dynamic:
        for line in call:
            lines[first + len(body)] = k
            body.append(line)
        return lazy
    full = args[:rg.n_full]
    same = " == ".join(f"{a}.shape" for a in full) + " and " if len(full) > 1 else ""
    lines[first + len(body)] = k
    body.append(f"if {same}{args[0]}.size >= {_rg.MIN_SIZE}:")
    for line in call:
        lines[first + len(body)] = k
        body.append("    " + line)
    body.append("else:")
    for kk in rg.steps:
        step_line(kk, "    ")
    steps = plan.made_steps()
    dels([steps[kk].out for kk in rg.steps if steps[kk].out not in rg.exports], "    ")
    return lazy


def _hashable(fn):
    try:
        hash(fn)
        return True
    except TypeError:
        return False


def _locate(plan, lines, exc):
    """Map the failing line of the generated function to its plan step, and report it
    with the slot values the function held (its locals ``v<slot>``)."""
    tb = exc.__traceback__
    k = lines.get(tb.tb_lineno) if tb is not None else None
    at = getattr(exc, "_flowgrad_step", None)  # a step inside a region (regions.evaluate)
    if at is not None and at[0] == id(plan):
        k = at[1]
    if k is not None:
        vals = list(plan.consts)
        for name, v in tb.tb_frame.f_locals.items():
            if name[0] == "v" and name[1:].isdigit():
                vals[int(name[1:])] = v
        raise_step_error(plan, k, exc, vals)


# -- numpy's error state ----------------------------------------------------------------
# numba loops and numexpr chains never raise on a floating-point error, and the scalar
# path's rerun is numpy's: so while numpy's error state (np.errstate, np.seterr) asks
# for an exception or a callback, a call runs the interpreter's numpy kernels instead
# (Program.reference_call), which honour it on every call. The state is a context variable
# of numpy's: its current value is compared by identity with the last one examined, so
# the test costs one look-up per call (np.geterr, ~1.5 µs, only when it changed).
# Callers inline the common case: ``if fp_state() is not QUIET[0] and fp_raises()``.
try:
    from numpy._core._multiarray_umath import _extobj_contextvar as _EXTOBJ
    fp_state = _EXTOBJ.get
except ImportError:            # another numpy: np.geterr on every call
    _EXTOBJ = None

    def fp_state():
        return None
_fp_seen = (None, False)       # (the state last examined, whether it raises): one tuple,
#                                replaced whole, so threads never see a torn pair
QUIET = [object()]             # the last state examined that raises on nothing


def fp_raises() -> bool:
    """Whether numpy's current error state raises (or calls a handler) on some
    floating-point error (divide, over, under or invalid)."""
    global _fp_seen
    cur = _EXTOBJ.get() if _EXTOBJ is not None else None
    seen = _fp_seen
    if cur is not None and seen[0] is cur:
        return seen[1]
    modes = np.geterr().values()
    raises = "raise" in modes or "call" in modes
    if cur is not None:
        _fp_seen = (cur, raises)
        if not raises:
            QUIET[0] = cur
    return raises


# -- the fast feed path -----------------------------------------------------------------
# Kept apart from Program.bind on purpose: it accepts only the plainest calls (every
# placeholder fed once by name or node, as an array of exactly its dtype and shape, or a
# Python/numpy float for a 0-d float64 placeholder; variables not fed) and answers None
# for anything else, which then goes through Program.bind and its full checks.
# Run-time lengths (None in a shape) are checked by the program's own compiled length
# check (Program.check_lengths, the one bind runs), so both paths agree.


def _names(graph, name, nid) -> bool:
    """Whether feed name ``name`` means node ``nid`` in ``graph`` (compile time only)."""
    try:
        return graph.by_name(name).id == nid
    except KeyError:
        return False


def _plain_feed(args, kwargs, n):
    """The feed dict of a plain call (keywords, or one dict) with n entries, else None."""
    if args:
        if kwargs or len(args) != 1 or type(args[0]) is not dict:
            return None
        feed = args[0]
    else:
        feed = kwargs
    return feed if len(feed) == n else None


def _index(by_key, graph, key):
    """The placeholder index a feed key (name or node of this graph) names, else None."""
    if type(key) is str:
        return by_key.get(key)
    if type(key) is Node and key.graph is graph:
        return by_key.get(key.id)
    return None


def fast_binder(prog, run=None):
    """A function ``bind(args, kwargs)`` -> slot list, or None when the call needs
    the general binder; with ``run`` (the plan's array function), the whole call
    instead: ``call(args, kwargs)`` -> ``run(slot list)``, the general binder
    (``Program.bind``) taking the calls this one does not.

    The common call, every placeholder fed by keyword, runs generated code: each feed
    read by its name, its type, dtype, rank and fixed lengths tested with a few
    comparisons, the run-time lengths that must agree compared inline
    (``LengthCheck.source``). A dict of feeds (by name or node) goes through
    :func:`_generic_fast_binder`'s loop, with the same checks. The slot list holds
    the leaves (the plan function reads nothing else)."""
    if not prog.backend.fast_feeds:
        return None
    g = prog.graph
    spec = prog.feed_spec              # names, dtypes, shapes, run-time lengths: declared once
    specs = spec.placeholders
    if not all(_names(g, leaf.name, leaf.node) for leaf in specs):
        return None
    general = _generic_fast_binder(prog, spec)
    ns = {"ndarray": np.ndarray, "float64": np.float64, "asarray": np.asarray,
          "T": prog.plan.consts, "general": general, "read": prog.backend.read_variable,
          "run": run, "slow": prog.bind, "fp_raises": fp_raises, "ref": prog.reference_call,
          "fp_state": fp_state, "QUIET": QUIET}
    if run is None:
        miss, done = "return None", "return vals"
        body = [f"if args or len(kwargs) != {len(specs)}:", "    return general(args, kwargs)"]
    else:
        miss, done = "return run(slow(args, kwargs))", "return run(vals)"
        body = ["if fp_state() is not QUIET[0] and fp_raises():",   # numpy's error state
                "    return ref(args, kwargs)",
                f"if args or len(kwargs) != {len(specs)}:",
                "    vals = general(args, kwargs)",
                "    return run(vals if vals is not None else slow(args, kwargs))"]
    if specs:
        body += ["try:"] + [f"    p{i} = kwargs[{leaf.name!r}]"
                            for i, leaf in enumerate(specs)]
        body += ["except KeyError:", "    " + miss]
    for i in range(len(specs)):        # the spec's plain-feed test, rendered
        names, lines = spec.plain_source(i, miss)
        ns.update(names)
        body += lines
    names, lines = spec.lengths_source("_lenfail")   # lengths that must agree: FeedError
    ns.update(names)
    body += lines
    body += _leaf_list(prog, specs, ns)
    body.append(done)
    src = "def bind(args, kwargs):\n" + "".join(f"    {line}\n" for line in body)
    exec(compile(src, f"<flowgrad binder {id(prog):#x}>", "exec"), ns)
    ns["bind"].source = src
    return ns["bind"]


def _leaf_list(prog, specs, ns):
    """Lines that read the variables and make ``vals``, the slot list of the leaves
    (fed ``p<i>``, variables ``w<j>``): the plan function reads nothing else."""
    body = []
    leaves = {leaf.slot: f"p{i}" for i, leaf in enumerate(specs)}
    for j, (s, var) in enumerate(prog.variable_slots):
        ns[f"V{j}"], ns[f"N{j}"] = var.more, var
        body += [f"w{j} = V{j}['value']",       # numpy's own array: what read() returns
                 f"if type(w{j}) is not ndarray:", f"    w{j} = read(N{j})"]
        leaves[s] = f"w{j}"
    if len(leaves) * 4 >= max(leaves, default=0):   # a short list literal: the leaves
        body.append("vals = [" + ", ".join(leaves.get(s, "None")
                                          for s in range(max(leaves, default=-1) + 1)) + "]")
    else:
        body.append("vals = list(T)")
        body += [f"vals[{s}] = {name}" for s, name in leaves.items()]
    return body


def _generic_fast_binder(prog, spec):
    """``bind(args, kwargs)`` for one dict of feeds keyed by names or nodes (and for
    keywords): a loop over the feeds with the spec's plain-feed test (``FeedSpec.plain``,
    the reference :func:`fast_binder` renders as source), or None."""
    g = prog.graph
    by_key = {}
    for i, leaf in enumerate(spec.placeholders):
        by_key[leaf.name] = i
        by_key[leaf.node] = i
    leaves, n = spec.placeholders, len(spec.placeholders)
    template = prog.plan.consts
    variables = [(s, var.more, var) for s, var in spec.variables]
    read = prog.backend.read_variable
    ndarray = np.ndarray
    plain, check_lengths = spec.plain, spec.lengths

    def bind(args, kwargs):
        feed = kwargs if not args else _plain_feed(args, kwargs, n)
        if feed is None or len(feed) != n:
            return None
        vals = list(template)
        seen = 0
        for key, v in feed.items():
            i = by_key.get(key) if type(key) is str else _index(by_key, g, key)
            if i is None:
                return None
            leaf = leaves[i]
            v = plain(leaf, v)
            if v is None:
                return None
            seen |= 1 << i
            vals[leaf.slot] = v
        if seen != (1 << n) - 1:
            return None
        for s, d, var in variables:
            v = d["value"]             # numpy's own array: what read() would return
            vals[s] = v if type(v) is ndarray else read(var)
        if check_lengths is not None:
            check_lengths(vals)        # lengths that must agree: FeedError, as in _bind
        return vals

    return bind


def scalar_binder(prog, leaves):
    """Like :func:`fast_binder`, for the scalar function: ``bind(args, kwargs)`` -> the
    leaf values as Python floats in ``leaves`` order, or None for the general binder."""
    g = prog.graph
    if prog.check_lengths is not None:
        return None                    # 0-d leaves have no lengths; never expected here
    pos = {s: i for i, s in enumerate(leaves)}
    by_key = {}
    for nid, p in prog.placeholders.items():
        if not _names(g, p.name, nid) or prog.slot_of[nid] not in pos:
            return None
        # only a float64 placeholder takes a float here: a bool one (the scalar code
        # reads bools beside comparisons and where) is left to the general binder, which
        # refuses a float fed to it (same_kind), as every other executor does
        if p.dtype == np.float64:
            by_key[p.name] = by_key[nid] = pos[prog.slot_of[nid]]
    var_pos = [(pos[s], var.more) for s, var in prog.variable_slots if s in pos]
    n, n_leaves = len(prog.placeholders), len(leaves)
    ndarray, float64, f64 = np.ndarray, np.float64, np.dtype(np.float64)

    def bind(args, kwargs):
        feed = _plain_feed(args, kwargs, n)
        if feed is None:
            return None
        out = [None] * n_leaves
        for key, v in feed.items():
            i = _index(by_key, g, key)
            tv = type(v)
            if i is None or not (tv is float or tv is float64 or (
                    tv is ndarray and v.dtype == f64 and v.ndim == 0)):
                return None
            out[i] = float(v)
        for i, d in var_pos:
            v = d["value"]
            tv = type(v)
            if not (tv is float or tv is float64 or (
                    tv is ndarray and v.dtype == f64 and v.ndim == 0)):
                return None
            out[i] = float(v)
        if None in out:
            return None
        return out

    return bind


# -- the call ------------------------------------------------------------------------------

def make_caller(prog, gen):
    """``call(args, kwargs)``: Program.__call__ through the generated code."""
    from ..backends.base import Backend
    bind, single, reference = prog.bind, prog.run_single, prog.reference_call
    quiet = QUIET
    finish = prog.finish              # a lazy backend computes the outputs here
    if type(prog.backend).finish is Backend.finish:
        finish = None                 # the default finish hands the list back unchanged
    sc = gen.scalar
    copies = tuple(prog.copy_outputs)    # outputs that alias a leaf's storage

    if sc is None:
        fn = gen.array_fn
        if finish is None and not copies and not single:
            whole = fast_binder(prog, fn)  # nothing to do after the plan: one function
            if whole is not None:
                return whole
        fast = fast_binder(prog)       # None exactly when ``whole`` was (same tests)

        def call(args, kwargs):
            if fp_state() is not quiet[0] and fp_raises():   # numpy's error state raises
                return reference(args, kwargs)
            vals = fast(args, kwargs) if fast is not None else None
            outs = fn(vals if vals is not None else bind(args, kwargs))
            if finish is not None:
                outs = finish(outs, args, kwargs)
            for k in copies:           # never hand out a variable's or the caller's array
                if hasattr(outs[k], "copy"):
                    outs[k] = outs[k].copy()
            return outs[0] if single else outs
        return call

    sfast = scalar_binder(prog, sc.leaves)
    sfn, leaves = sc.fn, sc.leaves

    def call(args, kwargs):
        if fp_state() is not quiet[0] and fp_raises():   # numpy's error state raises
            return reference(args, kwargs)
        lv = sfast(args, kwargs) if sfast is not None else None
        if lv is None:
            lv = [float(v) for v in (bind(args, kwargs)[s] for s in leaves)]
        try:
            res = sfn(*lv)
        except Exception:              # math raised (1/0, exp(1000), log(-1) …)
            res = None
        if res is None:                # an edge value: numpy's own result (or error), on arrays
            res = gen.array_fn(bind(args, kwargs))
        for k in copies:
            if hasattr(res[k], "copy"):
                res[k] = res[k].copy()
        return res[0] if single else res
    return call
