"""Pointwise regions: connected sets of cheap elementwise plan steps run as one loop.

numexpr fusion (fusion.py) inlines single-reader chains and pays off only on large
arrays. A *region* is wider: any connected set of same-shape elementwise steps,
whose values may have several readers inside it (they become loop locals); only
the values read after it, or returned, are written to arrays. The loop's source is
built here from each op's scalar kernel (ops/scalar_kernels.py, the formulations
the scalar path uses) and compiled by numba (region_kernels.py) when the program is
called again (``WARM_CALLS``: a program run once never pays numba's start-up). numba
is optional: without it nothing here is used.

What joins a region (``IN_LOOP``): arithmetic, comparisons, ``where``, abs, sqrt,
sign, max/min, relu. Measured here (numba 0.65, numpy 2.4, one core), numpy's SIMD
exp/log/tanh/log1p/pow run 5–8× faster per entry than a scalar libm loop, so those
stay numpy steps between regions. Each loop op is exact IEEE arithmetic or a
comparison/selection, so a region's values are **bit-identical** to the unfused
numpy steps; float32 regions round every step to float32 (an op on float32
operands computed in float64 and rounded once is the float32 result: 53 ≥ 2·24 + 2
bits), and Python-number constants are cast to the region's dtype first, as
numpy's weak scalars are (NEP 50). No fastmath, so NaN/inf and signed zeros follow
IEEE as numpy does. Floating-point errors never raise in a loop (numpy's error
model), as in numexpr chains: while numpy's error state asks for an exception, a
call runs the interpreter's numpy steps instead (``codegen.fp_raises``), so every
call raises alike.

A region needs equal declared shapes on every array operand and value (no
broadcasting but of 0-d operands, which the loop reads as one number), at least
``MIN_STEPS`` steps and ``MIN_SIZE`` entries. With run-time lengths (None) the
generated code checks per call that the operands' shapes agree and the size reaches
``MIN_SIZE``, else runs the numpy steps.
"""
from __future__ import annotations

import hashlib
import importlib.util
import math
import sys
import warnings

import numpy as np

from .plan import node_table
from ..ops.scalar_kernels import KERNELS

MIN_SIZE = 64      # entries; below it numba's ~0.5 µs dispatch eats the gain (RESULTS.md)
MIN_STEPS = 2      # one numpy call is as fast as one numba call
MAX_STEPS = 128    # steps per loop: LLVM's time grows faster than linearly (200: 1.8 s, 400: 16 s)

IN_LOOP = frozenset({
    "add", "sub", "mul", "div", "neg", "abs", "sqrt", "sign", "maximum", "minimum",
    "tie_weight", "relu", "where", "greater", "greater_equal", "less", "less_equal",
    "equal", "not_equal"})
_FLOATS = (np.dtype(np.float64), np.dtype(np.float32))
_BOOL = np.dtype(bool)


_FOUND = []


def available() -> bool:
    """Whether numba can be imported (found without importing it: that costs ~0.5 s;
    looked up once a process)."""
    if not _FOUND:
        _FOUND.append(importlib.util.find_spec("numba") is not None)
    return _FOUND[0]


class Region:
    """One region: ``steps`` (plan indices in plan order; the last is where it runs),
    ``operands`` (slots read from outside, in argument order), ``exports`` (slots
    written to arrays, in return order), and the kernel's module ``source`` (written
    when first asked for: most programs never compile their loops)."""

    def __init__(self, plan, steps, operands, exports, consts, dtype):
        self.steps, self.operands, self.exports = steps, operands, exports
        self._plan, self._consts, self._dtype = plan, consts, dtype
        self._source = None
        data, kept = node_table(plan.graph), plan.slots
        # 0-d operands, passed as Python numbers: "float" or "bool" (None: an array)
        self.scalar = [None if data[kept[s]].shape else
                       ("bool" if np.dtype(data[kept[s]].dtype) == _BOOL else "float")
                       for s in operands]
        self.n_full = self.scalar.count(None)
        # their dtypes: evaluate() turns the numbers back into 0-d arrays of these, so
        # the numpy steps see float32 (not a weak Python float, which numpy would
        # promote as float64 in where(c, s, 2.0))
        self.scalar_dtypes = [None if kind is None else np.dtype(data[kept[s]].dtype)
                              for s, kind in zip(operands, self.scalar)]
        # run-time lengths: the generated code checks, per call, that the operands'
        # shapes agree (a declared None may still broadcast a length 1) and MIN_SIZE
        shape = data[kept[plan.made_steps()[steps[-1]].out]].shape
        self.dynamic = None in tuple(shape)

    @property
    def source(self):
        if self._source is None:
            self._source = _source(self._plan, self.steps, self.operands, self.exports,
                                   self._consts, self._dtype)
        return self._source

    @property
    def key(self):
        return hashlib.sha1(self.source.encode()).hexdigest()[:20]


def _literal(v):
    """A Python number constant (weak under NEP 50), else None."""
    return v if type(v) in (int, float, bool) else None


def find_regions(plan, exclude=()) -> dict[int, Region]:
    """{last step index: Region} for ``plan`` (flowgrad/engine/plan.py); steps in
    ``exclude`` (fused elsewhere) never join. One pass in plan order: a step joins the
    regions of its producers unless one of them was already read by a step outside it
    (then that region is *sealed*: it must run before that reader, so it cannot grow
    past it)."""
    data = node_table(plan.graph)
    kept, template, steps = plan.slots, plan.consts, plan.made_steps()
    parent = {}                       # union-find over step indices

    def find(k):
        root = k
        while parent[root] != root:
            root = parent[root]
        while parent[k] != root:
            parent[k], k = root, parent[k]
        return root

    producer = {step.out: k for k, step in enumerate(steps)}
    info = {}                         # region root → (shape, float dtype or None)
    sealed = set()
    for k, step in enumerate(steps):
        sig = None if k in exclude else _signature(step, data, kept, template)
        if sig is not None:
            joined = []
            for s in step.ins:
                p = producer.get(s)
                if p is None or p not in parent:
                    continue
                r = find(p)
                if r in sealed or r in joined or not _compatible(info[r], sig):
                    continue
                joined.append(r)
                sig = (sig[0], sig[1] or info[r][1])     # a bool-only region takes a dtype
            parent[k] = k
            for r in joined:
                parent[r] = k
                del info[r]
            info[k] = sig
        for s in step.ins:             # reading a value of another region seals it
            p = producer.get(s)
            if p is not None and p in parent:
                r = find(p)
                if r != (find(k) if k in parent else None):
                    sealed.add(r)
    groups = {}
    for k in parent:
        groups.setdefault(find(k), []).append(k)
    parts = _parts(groups, info, find, data, kept, steps)
    return {part[-1]: _build(plan, part, dt, out)
            for (part, dt), out in zip(parts, _exports(plan, parts, producer))}


def _parts(groups, info, find, data, kept, steps):
    """[(steps, float dtype)]: each group cut into runs of MAX_STEPS, kept where long
    and large enough to pay for a loop."""
    parts = []
    for group in groups.values():
        group.sort()
        for i in range(0, len(group), MAX_STEPS):
            part = group[i:i + MAX_STEPS]
            shape = tuple(data[kept[steps[part[-1]].out]].shape)
            if len(part) >= MIN_STEPS and (None in shape or math.prod(shape) >= MIN_SIZE):
                parts.append((part, info[find(group[-1])][1]))
    return parts


def _exports(plan, parts, producer):
    """The values each part must write out: read by a step outside it, or returned."""
    part_of = {k: j for j, (part, _) in enumerate(parts) for k in part}
    exported = [set() for _ in parts]
    for k, step in enumerate(plan.made_steps()):
        j = part_of.get(k)
        for s in step.ins:
            p = part_of.get(producer.get(s))
            if p is not None and p != j:
                exported[p].add(s)
    for s in plan.outputs:
        p = part_of.get(producer.get(s))
        if p is not None:
            exported[p].add(s)
    return exported


def _signature(step, data, kept, template):
    """(shape, float dtype or None) of a step that may join a region, else None."""
    if step.op.name not in IN_LOOP or step.attrs:
        return None
    out = data[kept[step.out]]
    shape = tuple(out.shape)
    if not shape:
        return None
    dts = set()
    for s, d in [(s, data[kept[s]]) for s in step.ins] + [(step.out, out)]:
        if s != step.out and template[s] is not None and _literal(template[s]) is not None:
            continue
        if tuple(d.shape) != shape and (s == step.out or tuple(d.shape) != ()):
            return None                # only a 0-d operand may broadcast (a scalar argument)
        dt = np.dtype(d.dtype)
        if dt in _FLOATS:
            dts.add(dt)
        elif dt != _BOOL:
            return None
    if len(dts) > 1:
        return None
    return shape, (dts.pop() if dts else None)


def _compatible(a, b):
    return a[0] == b[0] and (a[1] is None or b[1] is None or a[1] == b[1])


def _build(plan, steps, dtype, readers_outside):
    """The Region of ``steps``: its operands, exports and loop source."""
    template, all_steps = plan.consts, plan.made_steps()
    inner = {all_steps[k].out for k in steps}
    exports = [all_steps[k].out for k in steps if all_steps[k].out in readers_outside]
    operands, consts = [], {}
    for k in steps:
        for s in all_steps[k].ins:
            if s in inner or s in operands or s in consts:
                continue
            if template[s] is not None and _literal(template[s]) is not None:
                consts[s] = template[s]
            else:
                operands.append(s)
    data, kept = node_table(plan.graph), plan.slots
    scalars = [s for s in operands if tuple(data[kept[s]].shape) == ()]
    full = [s for s in operands if s not in scalars]    # arrays first: a0 gives the shape
    return Region(plan, steps, full + scalars, exports, consts, dtype)


def _kernel_name(fn):
    """Source text of a scalar kernel function: ``math.x`` or a jitted helper's name."""
    if getattr(fn, "__module__", None) == "math" or fn in vars(math).values():
        return f"math.{fn.__name__}"
    return f"_k{fn.__name__}"


def _source(plan, steps, operands, exports, consts, dtype):
    """A module whose ``kernel(a0, a1 …)`` runs the steps over flat views of its array
    operands and returns the exported values (one array or a tuple)."""
    data, kept, all_steps = node_table(plan.graph), plan.slots, plan.made_steps()
    T = "np.float32" if dtype == np.float32 else "np.float64"
    helpers, body = set(), []
    names = {s: f"x{i}" for i, s in enumerate(operands)}
    head = [f"C{s} = T({_number(v)})" if type(v) is not bool else f"C{s} = {v!r}"
            for s, v in consts.items()]
    names.update({s: f"C{s}" for s in consts})
    for k in steps:
        op = all_steps[k].op
        args = [names[s] for s in all_steps[k].ins]
        kern = KERNELS[op.name]
        if isinstance(kern, str):
            expr = kern.format(*args)
        else:
            name = _kernel_name(kern)
            if name.startswith("_k"):
                helpers.add(kern.__name__)
            expr = f"{name}({', '.join(args)})"
        out = all_steps[k].out
        if dtype == np.float32 and np.dtype(data[kept[out]].dtype) in _FLOATS:
            expr = f"T({expr})"        # every float step rounded to float32 (see above)
        names[out] = f"v{out}"
        body.append(f"v{out} = {expr}")
    args = ", ".join(f"a{i}" for i in range(len(operands)))
    # numba's disk cache checks only this module's file: naming the helpers' source in
    # it makes a changed scalar kernel a new module (a new key), never a stale load
    lines = [f"# scalar kernels {_helpers_fingerprint()}", "import math", "import numpy as np"]
    lines += [f"from flowgrad.engine.region_kernels import jit{h} as _k{h}" for h in sorted(helpers)]
    lines += [f"T = {T}"] + head + ["", "", f"def kernel({args}):",
                                    "    shape = a0.shape"]
    n_full = sum(1 for s in operands if data[kept[s]].shape)
    lines += [f"    f{i} = np.ravel(a{i})" for i in range(n_full)]
    for i in range(n_full, len(operands)):       # 0-d: a Python number, read once
        dt = np.dtype(data[kept[operands[i]]].dtype)
        lines.append(f"    x{i} = T(a{i})" if dt in _FLOATS else f"    x{i} = a{i}")
    lines += ["    n = f0.size"]
    for j, s in enumerate(exports):
        dt = np.dtype(data[kept[s]].dtype)
        lines.append(f"    o{j} = np.empty(n, np.{'bool_' if dt == _BOOL else dt.name})")
    lines.append("    for i in range(n):")
    lines += [f"        x{i} = f{i}[i]" for i in range(n_full)]
    lines += ["        " + line for line in body]
    lines += [f"        o{j}[i] = v{s}" for j, s in enumerate(exports)]
    rets = ", ".join(f"o{j}.reshape(shape)" for j in range(len(exports)))
    lines.append(f"    return {rets}")
    return "\n".join(lines) + "\n"


def _number(v):
    """Source text for a Python number: its repr, which round-trips it, but for inf and
    nan, whose repr is no Python name (a module reading ``-inf`` fails to import)."""
    if type(v) is float and not math.isfinite(v):
        return f"float('{v!r}')"
    return repr(v)


_FINGERPRINT = []


def _helpers_fingerprint():
    if not _FINGERPRINT:
        from ..ops import scalar_kernels
        with open(scalar_kernels.__file__, "rb") as f:
            _FINGERPRINT.append(hashlib.sha1(f.read()).hexdigest()[:16])
    return _FINGERPRINT[0]


def evaluate(plan, region, args):
    """The region's exports computed by its plan steps' own numpy kernels: used when
    the compiled loop cannot be had (numba failed), so results stay the reference's."""
    steps, template, kernels = plan.made_steps(), plan.consts, plan.kernels(np)
    # 0-d operands arrive as Python numbers (the loop's arguments) or as the 0-d
    # arrays themselves: either way the steps get 0-d arrays of the declared dtype
    args = [a if dt is None else np.asarray(a, dtype=dt)
            for a, dt in zip(args, region.scalar_dtypes)]
    vals = dict(zip(region.operands, args))
    for k in region.steps:
        ins, out = steps[k].ins, steps[k].out
        try:
            vals[out] = kernels[k](*[vals[s] if s in vals else template[s] for s in ins])
        except Exception as exc:     # codegen._locate reports this step, not the region's last
            exc._flowgrad_step = (id(plan), k)
            raise
    outs = [vals[s] for s in region.exports]
    return outs[0] if len(outs) == 1 else tuple(outs)


WARM_CALLS = 1   # calls a program makes on the numpy steps before its loops are compiled


def _compiled_already(source):
    rk = sys.modules.get("flowgrad.engine.region_kernels")     # loaded: numba is imported
    return rk is not None and rk.is_compiled(source)


_WARNED = []


def _warn_once(exc):
    """Say once a process that a loop could not be had: results stay the numpy steps'
    (bit for bit), but slower, and a loop flowgrad wrote that numba refuses is a bug."""
    if not _WARNED:
        _WARNED.append(exc)
        warnings.warn(f"flowgrad: a pointwise loop could not be compiled ({exc!r:.200}); "
                      "its numpy steps run instead (same results, slower)",
                      RuntimeWarning, stacklevel=3)


class LazyKernel:
    """Stands in the generated function's globals under ``name`` until the program is
    called a second time (``WARM_CALLS``): then compiles the loop
    (region_kernels.get_kernel: cached by source, in process and on disk) and puts the
    compiled function there instead — or, when numba fails, :func:`evaluate` over the
    steps' numpy kernels. The first call runs those numpy kernels too, so a program run
    once (``fg.run``, a plot) never pays numba's start-up (~1.4 s: import, LLVM, the
    first JIT); a loop this process already compiled is used at once."""

    def __init__(self, plan, region, ns, name):
        self.plan, self.region, self.ns, self.name = plan, region, ns, name
        self.error, self.calls = None, 0

    def fallback(self, *args):
        return evaluate(self.plan, self.region, args)

    def compiled(self):
        """The compiled loop the next call would install, when this process has it
        (another program's call may have compiled the same source), else None. Counts no
        call and compiles nothing (the profiler asks: flowgrad/engine/fused_timing.py)."""
        if self.error is not None or not _compiled_already(self.region.source):
            return None
        from . import region_kernels
        return region_kernels.get_kernel(self.region.source, self.region.key)

    def __call__(self, *args):
        self.calls += 1
        if self.calls <= WARM_CALLS and not _compiled_already(self.region.source):
            return evaluate(self.plan, self.region, args)
        try:
            from . import region_kernels
            fn = region_kernels.get_kernel(self.region.source, self.region.key)
            out = fn(*args)             # numba compiles for these argument types here
        except Exception as exc:        # no usable numba: the reference numpy steps
            self.error = exc
            self.ns[self.name] = self.fallback
            _warn_once(exc)
            return evaluate(self.plan, self.region, args)
        self.ns[self.name] = fn
        return out
