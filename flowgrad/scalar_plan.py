"""The scalar variant of a generated plan: Python floats and ``math`` instead of 0-d arrays.

A program qualifies when every value it holds is a 0-d float64 (bools between a
comparison and ``where`` too), it runs on numpy, and every step's op has a kernel
in ``ops/scalar_kernels.py``. The seed's examples, scalar chains and scalar higher
derivatives do; anything with an array in it stays on the array function.
Conversion happens at the boundary only: floats in, numpy values out.
"""
from __future__ import annotations

import numpy as np

from .ops.scalar_kernels import ARRAY_RESULT, KERNELS

_BOOL, _F64 = np.dtype(bool), np.dtype(np.float64)


class ScalarPlan:
    def __init__(self, fn, leaves, outs, source):
        self.fn = fn            # fn(*leaf floats) -> list of output values, None if not finite
        self.leaves = leaves    # slots whose values are the arguments, in order
        self.outs = outs        # per output: "f" numpy float64, "a" 0-d array, "c" as is
        self.source = source


def _scalar_const(v):
    if type(v) in (bool, int, float):
        return v
    if isinstance(v, (np.ndarray, np.generic)) and v.shape == () and v.dtype in (_F64, _BOOL):
        return v.item()
    return None


def build_scalar(prog, literals):
    """A ScalarPlan for ``prog``, or None if some value or op is not scalar."""
    from .backends.numpy_backend import NumpyBackend
    if type(prog.backend) is not NumpyBackend:
        return None
    data = prog.graph.nx.nodes
    for s, nid in enumerate(prog._kept):
        if prog._template[s] is not None:
            continue                   # a constant: its value is checked below
        d = data[nid]
        if d["shape"] != () or d["dtype"] not in (_F64, _BOOL):
            return None
    if any(prog.graph.nx.nodes[o.id]["dtype"] != _F64 for o in prog.outputs):
        return None
    ns, consts = {}, {}
    for s, v in enumerate(prog._template):
        if v is None:
            continue
        f = _scalar_const(v)
        if f is None:
            return None
        if s in literals and not literals[s].startswith("c"):
            consts[s] = literals[s]
        else:
            consts[s] = f"c{s}"
            ns[f"c{s}"] = f
    leaf_set = _leaf_set(prog)
    leaves = sorted(s for s in leaf_set if prog._template[s] is None)

    def ref(s):
        return consts.get(s, f"v{s}")

    body, producer = [], {}
    for k, ((op, attrs, nid), step) in enumerate(zip(prog._step_ops, prog._plan)):
        ins, out = step[4], step[5]
        kern = KERNELS.get(op.name)
        if kern is None:
            return None
        args = [ref(i) for i in ins]
        if isinstance(kern, str):
            expr = kern.format(*args)
        else:
            ns[f"k{k}"] = kern
            expr = f"k{k}({', '.join(args)})"
        body.append(f"v{out} = {expr}")
        producer[out] = op.name
    # the boundary, generated too: non-finite outputs → None (rerun on arrays, where
    # numpy gives its own inf/nan and warnings); the rest converted to numpy values
    outs, exprs, checks = [], [], []
    ns["F"], ns["A"] = np.float64, np.array
    for s in prog._out_slots:
        if s in producer:
            kind = "a" if producer[s] in ARRAY_RESULT else "f"
            exprs.append(f"{kind.upper()}({ref(s)})")
            checks.append(f"{ref(s)} - {ref(s)} != 0.0")
        elif s in leaves:          # a fed value handed back as is: a 0-d array
            kind = "a"
            exprs.append(f"A(v{s})")
        else:                      # a constant output: hand back the template's own object
            kind = "c"
            ns[f"o{s}"] = prog._template[s]
            exprs.append(f"o{s}")
        outs.append(kind)
    args = ", ".join(f"v{s}" for s in leaves)
    tail = [f"    if {' or '.join(checks)}:", "        return None"] if checks else []
    src = "\n".join([f"def _flowgrad_scalar({args}):"] + ["    " + b for b in body] + tail
                    + [f"    return [{', '.join(exprs)}]"]) + "\n"
    return ScalarPlan(_lazy(src, ns, f"<flowgrad scalar plan {id(prog):#x}>", len(leaves)),
                      leaves, tuple(outs), src)


LAZY_LINES = 2000   # plans longer than this compile their source on the first call


def _lazy(src, ns, filename, n_args):
    """The function of ``src``; for long plans a stand-in that compiles it on its first
    call. Python's ``compile()`` costs ~10 µs a line, the bulk of ``fg.compile`` on a
    20k-step plan, and a program may never be called. The stand-in then takes over the
    real function's code object, so callers that hold it pay nothing per call after."""
    if src.count("\n") <= LAZY_LINES:
        exec(compile(src, filename, "exec"), ns)
        return ns["_flowgrad_scalar"]
    args = ", ".join(f"a{i}" for i in range(n_args))
    exec(f"def _flowgrad_scalar({args}):\n    return _materialize({args})\n", ns)
    stub = ns["_flowgrad_scalar"]

    def materialize(*vals):
        real = {}
        exec(compile(src, filename, "exec"), ns, real)
        stub.__code__ = real["_flowgrad_scalar"].__code__   # same globals (ns), no closure
        return stub(*vals)

    ns["_materialize"] = materialize
    return stub


def _leaf_set(prog):
    slots = {prog._slot[nid] for nid in prog.placeholders}
    slots.update(s for s, _ in prog._variables)
    return slots
