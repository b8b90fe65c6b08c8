"""The first call of a long scalar program, run without writing its source.

Writing and compiling the scalar function of a 20k-step plan costs ~10 µs a step
(~250 ms), far more than one run of it, and many programs are called once or a few
times. So the first ``WARM_CALLS`` calls of a long plan (flowgrad/engine/scalar_plan.py's
stand-in) run here instead: a loop over the plan's steps calling the same scalar
kernels on Python floats — each format pattern of ``ops/scalar_kernels.py`` made
into one small function, once per pattern and arity — and the source is written and
compiled only when the program is called again.

The results are those of the generated function, bit for bit: the same float
operations on the same values, in the same order (an int or bool literal is the
same float as its source text), the same non-finite check (``None``: the caller
reruns on arrays) and the same conversions at the boundary. An exception from a
kernel propagates, as from the generated code (the caller then reruns on arrays).
"""
from __future__ import annotations

import numpy as np

from ..ops.scalar_kernels import ARRAY_RESULT, KERNELS, WithAttrs, bind, origin

WARM_CALLS = 1       # calls run here before the source is written and compiled

_PATTERNS: dict = {}   # (pattern, arity) -> the function it stands for


def _pattern_fn(pattern, n):
    fn = _PATTERNS.get((pattern, n))
    if fn is None:
        params = [f"a{i}" for i in range(n)]
        fn = eval(f"lambda {', '.join(params)}: {pattern.format(*params)}", {})
        _PATTERNS[(pattern, n)] = fn
    return fn


def _ends(outputs, producer, first, leaves):
    """Per output: (slot, how): "F"/"A" a step's value (a float, or an array for the ops
    whose scalar result is one), "L" a leaf, "C" a constant."""
    ends = []
    for s in outputs:
        o = origin(s, producer, first)   # s itself, unless s is a pass-through's output
        if o in producer:
            ends.append((s, "A" if producer[o] in ARRAY_RESULT else "F"))
        elif o in leaves:
            ends.append((s, "L"))
        else:
            ends.append((o, "C"))
    return ends


def interpreter(plan, consts, leaves, keep=False):
    """``run(*leaf floats)`` -> what the generated scalar function would return; with
    ``keep``, the slot list of every value it computed instead (lockstep's replay).

    ``consts`` is scalar_plan's {slot: source text}: a literal, or ``c<slot>`` naming
    the constant's float (the template's value, as build_scalar converted it)."""
    from .scalar_plan import scalar_const
    template = plan.consts
    init = [None] * len(template)
    for s in consts:
        init[s] = scalar_const(template[s])
    steps, producer, first = [], {}, {}
    kernels = {}   # (op, arity) -> its scalar function
    for st in plan.made_steps():     # the plan's Step records (flowgrad/engine/plan.py)
        op, attrs, ins, out = st.op, st.attrs, st.ins, st.out
        fn = kernels.get((op, len(ins)))
        if fn is None:
            fn = KERNELS[op.name]
            if isinstance(fn, WithAttrs):    # one function per node: not kept
                fn = bind(fn, attrs)
            else:
                if isinstance(fn, str):
                    fn = _pattern_fn(fn, len(ins))
                kernels[(op, len(ins))] = fn
        n = len(ins)
        steps.append((fn, n, ins[0] if n else None, ins[1] if n > 1 else None, ins, out))
        producer[out] = op.name
        first[out] = ins[0] if n else None
    ends = _ends(plan.outputs, producer, first, leaves)
    checked = [s for s, how in ends if how in "FA"]
    from .scalar_plan import float64_array as A
    F = np.float64

    def run(*vals):
        v = init[:]
        for s, x in zip(leaves, vals):
            v[s] = x
        for fn, n, a, b, ins, out in steps:
            if n == 2:
                v[out] = fn(v[a], v[b])
            elif n == 1:
                v[out] = fn(v[a])
            else:
                v[out] = fn(*[v[i] for i in ins])
        if keep:
            return v
        for s in checked:
            if v[s] - v[s] != 0.0:
                return None
        res = []
        for s, how in ends:
            if how == "F":
                res.append(F(v[s]))
            elif how == "C":
                res.append(template[s])
            else:
                res.append(A(v[s]))
        return res
    return run
