"""The scalar variant of a generated plan: Python floats and ``math`` instead of 0-d arrays.

A program qualifies when every value it holds is a 0-d float64 (bools between a
comparison and ``where`` too), it runs on numpy, and every step's op has a kernel
in ``ops/scalar_kernels.py``. The lecture notes' examples, scalar chains and scalar higher
derivatives do; anything with an array in it stays on the array function.
Conversion happens at the boundary only: floats in, numpy values out.
"""
from __future__ import annotations

import threading
from itertools import compress, repeat
from operator import attrgetter, countOf, is_

import numpy as np

from . import scalar_tier as _tier
from ..ops.scalar_kernels import ARRAY_RESULT, KERNELS, bind, origin
from .plan import node_table

_BOOL, _F64 = np.dtype(bool), np.dtype(np.float64)
_shape, _dtype = attrgetter("shape"), attrgetter("dtype")


class ScalarPlan:
    """``fn(*leaf floats)`` -> list of output values, or None if one is not finite.

    For plans longer than ``LAZY_LINES`` the source is written and compiled on the
    first call (``fn`` is then a stand-in that takes over the real code object)."""

    def __init__(self, fn, leaves, emitted):
        self.fn = fn            # fn(*leaf floats) -> list of output values, None if not finite
        self.leaves = leaves    # slots whose values are the arguments, in order
        self._emitted = emitted  # () -> (source, outs), emitting on first need

    @property
    def outs(self):
        """Per output: "f" numpy float64, "a" 0-d array, "c" as is."""
        return self._emitted()[1]

    @property
    def source(self):
        return self._emitted()[0]


def scalar_const(v):
    """The constant as the Python float the scalar code computes with, or None.

    An int or bool is made a float: numpy casts a weak Python number (or a bool) to
    the float64 operand's dtype, and Python keeps an int an int, whose zero has no
    sign (``-fg.where(x > 0, x, 0)`` at x = −1 is −0.0 in numpy, ``-0`` is 0)."""
    if type(v) in (bool, int, float) or (
            isinstance(v, (np.ndarray, np.generic)) and v.shape == ()
            and v.dtype in (_F64, _BOOL)):
        try:
            return float(v)
        except OverflowError:          # an int beyond float64: numpy refuses it too
            return None
    return None


def float64_array(v):
    """A scalar step's value as the 0-d float64 array numpy's kernel hands back: a
    where may pick a comparison's Python bool (``where(x > 0, x > 1, x)``), which
    ``np.array`` would make a bool array."""
    return np.array(v, dtype=_F64)


LAZY_LINES = 2000   # plans longer than this write and compile their source on the first call


def build_scalar(prog, literals):
    """A ScalarPlan for ``prog``, or None if some value or op is not scalar (its ops
    read without making the plan's steps: ``Program.op_names``)."""
    if not prog.backend.scalar_floats:
        return None
    return build_for_plan(prog.plan, literals, prog.op_names())


def qualifies(plan, op_names=None) -> bool:
    """Whether every value of ``plan`` is a 0-d float64 (or bool), every output a
    float64, and every op has a scalar kernel."""
    data = node_table(plan.graph)
    template = plan.consts
    # every value but the constants (checked below) a 0-d float64 or bool: C-level maps
    values = list(map(data.__getitem__, compress(plan.slots, map(is_, template, repeat(None)))))
    shapes = list(map(_shape, values))   # () is one object: counted by identity in C
    if countOf(shapes, ()) != len(shapes):
        return False
    # float64 is nearly always numpy's one float64 dtype object: counted by identity in C
    # (hashing or comparing dtypes one by one costs ~0.2 µs each); the rest one by one
    dtypes = list(map(_dtype, values))
    if countOf(dtypes, _F64) != len(dtypes) and \
            not all(t == _F64 or t == _BOOL for t in dtypes):
        return False
    if any(data[plan.slots[s]].dtype != _F64 for s in plan.outputs):
        return False
    if op_names is None:
        op_names = {st.op.name for st in plan.steps}
    return op_names <= KERNELS.keys() and _bools_as_numpy(plan, data)


#: ops whose scalar kernels treat bools as numpy does: comparisons and where
_BOOL_OPS = frozenset({"where", "equal", "not_equal", "greater", "greater_equal", "less",
                       "less_equal"})
#: ops a bool may meet a float in: numpy casts it to 0.0/1.0 first, as Python does
_MIXED_OPS = frozenset({"add", "sub", "mul", "div"})


def _bools_as_numpy(plan, data) -> bool:
    """Whether every bool of the plan (a fed one, a constant, a comparison's) is made
    and read only where Python floats and bools compute what numpy does: made by a
    comparison or ``where``, read by those or by float arithmetic. numpy's bool
    arithmetic stays bool (True + True is True) or refuses (True − True, −True,
    bce_with_logits of a bool logit), where the scalar code's 1.0 + 1.0 is 2.0."""
    kept = plan.slots
    is_bool = [data[n].dtype == _BOOL for n in kept]
    if not any(is_bool):
        return True
    for st in plan.made_steps():
        name, out_bool = st.op.name, is_bool[st.out]
        if name in _BOOL_OPS:
            continue
        if out_bool or (name not in _MIXED_OPS and any(is_bool[s] for s in st.ins)):
            return False
    return True


def build_for_plan(plan, literals, op_names=None):
    """A ScalarPlan for ``plan``, or None if it does not qualify; ``literals``:
    codegen.constants' {slot: source text}."""
    if not qualifies(plan, op_names):
        return None
    template = plan.consts
    ns, consts = {}, {}
    for s in literals:                 # every constant's slot (codegen.constants)
        f = scalar_const(template[s])
        if f is None:
            return None
        if not literals[s].startswith("c"):
            consts[s] = repr(f)        # the float's own text (an int literal's too)
        else:
            consts[s] = f"c{s}"
            ns[f"c{s}"] = f
    leaves = sorted(s for s in set(plan.leaves.values()) if template[s] is None)
    filename = f"<flowgrad scalar plan {id(plan):#x}>"
    done = []

    def emitted():
        """(source, outs), written once; the function is compiled into ``ns``."""
        if not done:
            src, outs = _emit(plan, ns, consts, leaves)
            exec(compile(src, filename, "exec"), ns)
            done.append((src, outs))
        return done[0]

    if len(plan.steps) <= LAZY_LINES:
        emitted()
        return ScalarPlan(ns["_flowgrad_scalar"], leaves, emitted)
    # Writing and compiling the source costs ~10 µs a step, the bulk of fg.compile on a
    # 20k-step plan, and a program may never be called: a stand-in (_lazy_stub) does it
    # on the first call, then takes over the real function's code object.
    return ScalarPlan(_lazy_stub(plan, ns, consts, leaves, emitted), leaves, emitted)


def _lazy_stub(plan, ns, consts, leaves, emitted):
    """The scalar function's stand-in: its first ``WARM_CALLS`` calls run a loop over the
    steps (scalar_tier.py), the next writes and compiles the source (``emitted``) and
    gives the stand-in the real function's code object (same globals, no closure), so
    callers holding it pay nothing per call afterwards."""
    args = ", ".join(f"a{i}" for i in range(len(leaves)))
    stub_ns = {}
    exec(f"def _flowgrad_scalar({args}):\n    return _materialize({args})\n", stub_ns)
    stub = stub_ns["_flowgrad_scalar"]
    warm = [None, 0]   # the warm-up loop, and how many calls it has run
    # Only the first calls come here, in any thread: one of them makes the loop or the
    # source, under the lock, and the globals are in before the code is swapped, so a
    # call racing the swap never runs the real code without its kernels (a NameError,
    # which the caller took for an edge value and reran on arrays: other bits)
    lock = threading.Lock()

    def materialize(*vals):
        with lock:
            if warm[1] < _tier.WARM_CALLS:
                warm[1] += 1
                if warm[0] is None:
                    warm[0] = _tier.interpreter(plan, consts, leaves)
                run = warm[0]
            else:
                run = stub
                warm[0] = None         # the compiled code takes over: drop the loop's steps
                emitted()
                stub_ns.update(ns)     # the stub's globals become the real function's
                stub.__code__ = ns["_flowgrad_scalar"].__code__
        return run(*vals)              # (outside the lock: calls run side by side)

    stub_ns["_materialize"] = materialize
    return stub


def _emit(plan, ns, consts, leaves):
    """The scalar function's source over floats; kernels and constants go into ``ns``."""
    def ref(s):
        return consts.get(s, f"v{s}")

    body, producer, first = [], {}, {}
    for k, step in enumerate(plan.made_steps()):
        op, ins, out = step.op, step.ins, step.out
        kern = bind(KERNELS[op.name], step.attrs)
        args = [ref(i) for i in ins]
        if isinstance(kern, str):
            expr = kern.format(*args)
        else:
            ns[f"k{k}"] = kern
            expr = f"k{k}({', '.join(args)})"
        body.append(f"v{out} = {expr}")
        producer[out] = op.name
        first[out] = ins[0] if ins else None
    # the boundary, generated too: non-finite outputs → None (rerun on arrays, where
    # numpy gives its own inf/nan and warnings); the rest converted to numpy values
    outs, exprs, checks = [], [], []
    ns["F"], ns["A"] = np.float64, float64_array
    for s in plan.outputs:
        o = origin(s, producer, first)   # s itself, unless s is a pass-through's output
        if o in producer:
            kind = "a" if producer[o] in ARRAY_RESULT else "f"
            exprs.append(f"{kind.upper()}({ref(s)})")
            checks.append(f"{ref(s)} - {ref(s)} != 0.0")
        elif o in leaves:          # a fed value handed back as is: a 0-d array
            kind = "a"
            exprs.append(f"A({ref(s)})")
        else:                      # a constant output: hand back the template's own object
            kind = "c"
            ns[f"o{s}"] = plan.consts[o]
            exprs.append(f"o{s}")
        outs.append(kind)
    args = ", ".join(f"v{s}" for s in leaves)
    tail = [f"    if {' or '.join(checks)}:", "        return None"] if checks else []
    src = "\n".join([f"def _flowgrad_scalar({args}):"] + ["    " + b for b in body] + tail
                     + [f"    return [{', '.join(exprs)}]"]) + "\n"
    return src, tuple(outs)
