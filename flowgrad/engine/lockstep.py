"""Lockstep verify mode: ``fg.compile(outputs, ..., verify=True)`` (or the environment's
``FLOWGRAD_VERIFY=1``) runs every call twice: on the program's own executor, and on
the reference interpreter (flowgrad/engine/executors/interp.py) beside it. Outputs
that agree bit for bit (NaN equal to NaN, -0.0 unequal to 0.0) pass at once.

Where an output differs, each step the executor ran is judged on its own: a replay of
the executor that keeps its every value (the same generated code, its frees left out:
``codegen.Keeping``; the scalar code's step loop, ``scalar_tier.interpreter``) must
hand back the very outputs of the call, and each value it computed is compared with
the reference kernels applied to *the executor's own inputs for that step*. So a step
is judged by its own rounding only; a correct last-place difference upstream, however
much later steps amplify it (cancellation), is never counted against them.

* A step the executor runs with the reference's numpy kernel (or a kernel that
  promises its bits: numpy_kernels, numba regions) must agree bitwise; a region,
  whose inner values are invisible, is recomputed from its inputs, bitwise too.
* A fused numexpr chain (inner values invisible) is recomputed from its operands with
  the reference kernels. Each of its steps may be off by ``NUMEXPR_ULPS`` of its own
  value; that rounding is carried to the chain's result by the chain's own
  sensitivities, measured on the reference kernels: step i's value is scaled by
  (1 + δ), δ = √eps, the chain rerun, and the change Δᵢ of the result gives the
  first-order bound Σᵢ |Δᵢ| · NUMEXPR_ULPS · eps / δ (the result's own rounding is
  the term of the last step). ``log(exp(x) / t)`` at exp(x) ≈ t: the ulps of exp
  and of the quotient, times the condition 1/|log| of the log, are allowed, and
  nothing more.
* Generated scalar code: an IEEE operation (+ − × /, comparisons, ``where``) must
  agree bitwise; a ``math`` function (exp, tanh, log1p, pow …: not numpy's) or a
  formula over them without cancellation (σ, softplus, erf, elu) within
  ``SCALAR_ULPS`` of its own value; bce, Φ and gelu (``_CANCELLING``) within
  ``SCALAR_ULPS`` of max(|value|, 1): their library functions' results, of magnitude
  ≤ 1 (exp(−|x|), log1p of it, erf), meet a subtraction that may leave their
  last-place differences as an absolute error (Φ(−8) differs by ~300 ulps of itself).

Shapes and dtypes must always agree. The first step out of its bound (in plan order)
raises ``fg.VerifyError`` naming its node, the step, the executor, and both values
(``got``: the executor's value, ``want``: the reference kernel's on the same inputs).
Outputs that differ while every step is within its bound pass: the difference is the
honest sum of last-place roundings. An executor that raises where the reference does
not (or raises another class) is a disagreement too. Random draws (fg.random, dropout)
are the executor's: the reference run, the replay and the reference kernels take the
same numbers from the call's ``random.DrawTape``, and the streams move once per call. Verify mode costs a second run
per call, and a replay on a call whose outputs differ: a debugging and CI tool,
never on by default.
"""
from __future__ import annotations

import os

import numpy as np

from ..backends.base import host
from ..errors import VerifyError
from ..random import DrawTape
from .executors.generated import NUMEXPR_ULPS, SCALAR_ULPS

#: scalar kernels whose formula may cancel around its math functions' results
_CANCELLING = frozenset({"bce_with_logits", "normal_cdf", "gelu"})

__all__ = ["wanted", "wrap", "compare"]


def wanted(verify) -> bool:
    """``verify`` as given, or the environment's ``FLOWGRAD_VERIFY`` when None."""
    if verify is None:
        return os.environ.get("FLOWGRAD_VERIFY", "") not in ("", "0")
    return bool(verify)


def wrap(prog, inner):
    """``inner`` (the program's call through its executor), made to run every call
    beside the reference interpreter (``prog.reference_call``) and compare."""
    ex = prog.executor
    cache = {}                         # the keeping array function, made on first need

    def call(args, kwargs):
        tape = DrawTape()              # the reference sees the executor's random draws
        try:
            with tape.recording():
                got = inner(args, kwargs)
        except Exception as exc:
            with tape.replaying():
                _same_refusal(prog, ex, exc, args, kwargs)
            raise
        with tape.replaying():
            want = prog.reference_call(args, kwargs)
        if prog.run_single:
            got, want = [got], [want]
        differ = [k for k, (g, w) in enumerate(zip(got, want)) if compare(g, w) is not None]
        if differ:
            _judge_steps(prog, ex, differ[0], got, want, args, kwargs, cache, tape)
        return got[0] if prog.run_single else got
    return call


def _same_refusal(prog, ex, exc, args, kwargs):
    """The executor raised: the reference must raise too (the same class), else a
    VerifyError naming the node the executor's error names (or the first output)."""
    try:
        prog.reference_call(args, kwargs)
    except Exception as ref_exc:
        if isinstance(ref_exc, type(exc)) or isinstance(exc, type(ref_exc)):
            return
        why = f"the reference raised {type(ref_exc).__name__}: {ref_exc}"
    else:
        why = "the reference returned values"
    node = getattr(exc, "node", None)
    if node is None:
        node = prog.outputs[0]
    raise VerifyError(f"verify: {ex.name} raised {type(exc).__name__} ({exc}) at node "
                      f"{node.name!r}, where {why}", node=node, got=exc) from exc


def _judge_steps(prog, ex, k, got, want, args, kwargs, cache=None, tape=None):
    """Output ``k`` differs from the reference's: replay the executor keeping its values
    and judge each step on its own inputs (the module docstring). Returns when every
    step is within its bound; else raises VerifyError at the first one that is not, or
    at output ``k`` when no replay reproduces the call's outputs. ``tape``: the call's
    random draws, which the replay and the reference kernels see again."""
    tape = DrawTape() if tape is None else tape
    with tape.replaying():
        replay = _replay(prog, prog.bind(args, kwargs), got, {} if cache is None else cache)
    if replay is None:
        why = (f"{compare(got[k], want[k])}, and a replay of the executor's steps does "
               f"not give the outputs it handed back")
        steps = prog.plan.made_steps()
        drawn = next((j for j, st in enumerate(steps) if st.op.stateful), None)
        if drawn is None:
            raise _error(prog, ex, prog.run_outputs[k], None, k, why, got[k], want[k])
        why += " (this step draws anew on every run: its runs cannot agree)"
        raise _error(prog, ex, prog.graph.node(steps[drawn].node), drawn, k, why,
                     got[k], want[k])
    with tape.replaying():
        found = _first_out_of_bound(prog, *replay)
    if found is not None:
        step, why, g, w = found
        node = prog.graph.node(prog.plan.made_steps()[step].node)
        raise _error(prog, ex, node, step, k, why, g, w)


def _replay(prog, vals, got, cache):
    """``(seen, tolerance)``: {slot: value} of every value a replay of the executor
    computed (with the leaves and constants) and the per-step tolerance, from the
    first replay whose outputs are the call's bit for bit (the scalar code, else the
    array code its edge values rerun on); None if none is."""
    makers = [_array_replay]
    if prog.generated is not None and prog.generated.scalar is not None:
        makers.insert(0, _scalar_replay)
    for make in makers:
        seen, tolerance = make(prog, list(vals), cache)
        outs = [seen.get(s) for s in prog.plan.outputs]
        if all(o is not None and compare(o, g) is None for o, g in zip(outs, got)):
            return seen, tolerance
    return None


def _array_replay(prog, vals, cache):
    from .codegen import Keeping
    kept = cache.get("array")
    if kept is None:
        kept = cache["array"] = Keeping(prog.plan, prog.backend)
    seen = {s: v for s, v in enumerate(vals) if v is not None}   # leaves and constants
    seen.update(kept.fn(vals)[1])
    roots = set(kept.chains)

    def tolerance(k, step):          # a numexpr chain's root: its own rounding; else bits
        return ("chain", NUMEXPR_ULPS) if k in roots else ("bits",)
    return seen, tolerance


def _scalar_replay(prog, vals, cache):
    from . import codegen, scalar_tier
    from ..ops.scalar_kernels import KERNELS
    leaves = prog.generated.scalar.leaves
    run = scalar_tier.interpreter(prog.plan, codegen.constants(prog.plan), leaves, keep=True)
    v = run(*[float(vals[s]) for s in leaves])
    # as numpy values: the reference kernels read .dtype and .shape
    seen = {s: np.bool_(x) if type(x) is bool else np.float64(x)
            for s, x in enumerate(v) if x is not None}

    def tolerance(k, step):
        kern = KERNELS.get(step.op.name)
        if isinstance(kern, str):        # an IEEE operation, a comparison, where: bits
            return ("bits",)
        if step.op.name in _CANCELLING:  # (module docstring)
            return ("scalar", SCALAR_ULPS, 1.0)
        return ("scalar", SCALAR_ULPS, 0.0)   # math functions: their own last place
    return seen, tolerance


def _first_out_of_bound(prog, seen, tolerance):
    """``(step, why, executor's value, reference's value)`` of the first step (in plan
    order) whose value the executor kept and that is out of its bound, or None. A
    step whose inputs the executor did not keep (inside a fused chain or region) is
    recomputed with them, from the inputs it did keep (``_group``)."""
    plan = prog.plan
    steps, kernels = plan.made_steps(), plan.kernels(prog.backend.xp)
    producer = {st.out: j for j, st in enumerate(steps)}
    for k, st in enumerate(steps):
        if st.out not in seen:
            continue
        group = _group(steps, producer, seen, k)
        try:
            why, want = _judge(steps, kernels, seen, group, tolerance(k, st))
        except Exception as exc:     # (numpy's error state may raise, as in the call)
            why, want = f"the reference kernel raised {type(exc).__name__}: {exc}", None
        if why is not None:
            return k, why, seen[st.out], want
    return None


def _group(steps, producer, seen, k):
    """Step ``k`` and the steps before it whose values the executor did not keep, that
    it computed inside one kernel with ``k``: its chain or region. In plan order."""
    group, stack = {k}, [k]
    while stack:
        for s in steps[stack.pop()].ins:
            j = producer.get(s)
            if s not in seen and j is not None and j not in group:
                group.add(j)
                stack.append(j)
    return sorted(group)


def _judge(steps, kernels, seen, group, tol):
    """``(why or None, the reference's value)`` for the group's last step: its steps'
    reference kernels on the executor's kept inputs, within tolerance ``tol``."""
    got = seen[steps[group[-1]].out]

    def run(scaled=None, delta=0.0):
        mine = {}
        for j in group:
            st = steps[j]
            v = kernels[j](*[mine[i] if i in mine else seen[i] for i in st.ins])
            if j == scaled and _dtype(v).kind in "fc":
                v = v * (1 + delta)
            mine[st.out] = v
        return mine[steps[group[-1]].out]

    want = run()
    w = np.asarray(host(want))
    if tol[0] == "bits" or w.dtype.kind not in "fc":
        return compare(got, want), want
    if tol[0] == "scalar":
        _, u, floor = tol
        eps = np.finfo(w.dtype).eps
        return _within(got, want, u * eps * np.maximum(np.abs(w), floor)), want
    return _within(got, want, _chain_bound(run, group, w, tol[1])), want


def _dtype(v):
    return v.dtype if hasattr(v, "dtype") else np.asarray(v).dtype


def _chain_bound(run, group, want, ulps):
    """The first-order bound on a fused chain's result when each of its steps rounds
    by ``ulps`` of its own value: Σᵢ |Δᵢ| · ulps · eps / δ, Δᵢ the change of the
    result when step i's value is scaled by (1 + δ), δ = √eps (well above the
    reruns' own rounding, well below where the chain stops being linear)."""
    fi = np.finfo(want.dtype)
    delta = float(np.sqrt(fi.eps))
    total = np.zeros(want.shape, dtype=fi.dtype)
    with np.errstate(all="ignore"):
        for j in group:
            total = total + np.abs(np.asarray(host(run(j, delta))) - want)
        bound = total * (ulps * float(fi.eps) / delta) + ulps * float(fi.tiny)
    return np.where(np.isnan(bound), np.inf, bound)   # (a rerun made a NaN: no bound)


def _error(prog, ex, node, step, k, why, got, want):
    where = f", built at {node.where}" if node.where else ""
    what = node.op.name if node.op is not None else node.kind
    at = f"step {step} " if step is not None else ""
    return VerifyError(
        f"verify: {ex.name} and the reference interpreter disagree at {at}node "
        f"{node.name!r} ({what}{where}; output {k} differs): {why}\n"
        f"    {ex.name}: {_show(got)}\n    reference: {_show(want)}",
        node=node, step=step, got=got, want=want)


def compare(got, want, ulps=0):
    """None when ``got`` matches ``want`` (bitwise for ulps=0), else why not: within
    ``ulps`` units in the last place of max(|want|, 1)."""
    g, w = np.asarray(host(got)), np.asarray(host(want))
    if g.dtype.kind not in "fc" or ulps == 0:
        return _bitwise(g, w)
    eps = np.finfo(g.real.dtype).eps
    bound = ulps * eps * np.maximum(np.abs(np.where(np.isfinite(w), w, 0)), 1)
    why = _within(g, w, bound)
    return None if why is None else \
        why.replace("their bound", f"{ulps} ulps of max(|reference|, 1)")


def _bitwise(g, w):
    if g.shape != w.shape:
        return f"shape {g.shape} != {w.shape}"
    if g.dtype != w.dtype:
        return f"dtype {g.dtype} != {w.dtype}"
    if g.dtype.kind == "c":   # each part on its own: NaN, sign and value
        g, w = parts(g), parts(w)
    if g.dtype.kind == "f":
        same = (g == w) & (np.signbit(g) == np.signbit(w)) | (np.isnan(g) & np.isnan(w))
    else:
        same = g == w
    return None if bool(np.all(same)) else "values differ (bitwise)"


def _within(got, want, bound):
    """None when ``got`` is within ``bound`` (absolute, broadcast to the values) of
    ``want``, NaN and infinities exactly where want has them; else why not."""
    g, w = np.asarray(host(got)), np.asarray(host(want))
    if g.shape != w.shape:
        return f"shape {g.shape} != {w.shape}"
    if g.dtype != w.dtype:
        return f"dtype {g.dtype} != {w.dtype}"
    if g.dtype.kind == "c":   # each part on its own, within the bound of the value's
        g, w, bound = parts(g), parts(w), np.expand_dims(np.broadcast_to(bound, g.shape), -1)
    nan = np.isnan(g) | np.isnan(w)
    if not np.array_equal(np.isnan(g), np.isnan(w)):
        return "NaN where the other has a number"
    gf, wf = np.where(nan, 0, g), np.where(nan, 0, w)
    inf = np.isinf(gf) | np.isinf(wf)
    if not np.array_equal(gf[inf], wf[inf]):
        return "infinities differ"
    gf, wf = np.where(inf, 0, gf), np.where(inf, 0, wf)
    with np.errstate(all="ignore"):
        worst = np.abs(gf - wf) - np.where(nan | inf, 0, np.broadcast_to(bound, g.shape))
    if not worst.size or float(np.max(worst)) <= 0:
        return None
    return f"differ by more than their bound (by {float(np.max(worst)):.3g} at worst)"


def parts(z):
    """A complex array as real ones, its last axis (real, imag): np.isnan(z) is true
    when either part is NaN, and a sign bit is read from the real part only, so parts
    are compared one by one."""
    return np.stack([z.real, z.imag], axis=-1)


def _show(v):
    text = np.array2string(np.asarray(host(v)), threshold=8, precision=17)
    return " ".join(text.split())[:300]
