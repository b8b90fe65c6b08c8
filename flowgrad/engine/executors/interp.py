"""The reference interpreter: one loop over the plan's steps, each step's kernel on
the slot values. Every other executor is checked against it (lockstep verify mode).

Two forms of one loop: over instruction tuples made from ``Plan.steps`` (arity
specialised, so the loop builds no list for one- and two-input steps), and over a
``FlatSteps`` plan's columns (the 10^6-node chain: no per-step object at all).
A failing kernel is found from the loop's state after the exception (one ``try``
around the loop, no per-step bookkeeping).
"""
from __future__ import annotations

from ..plan import FlatSteps
from .base import raise_step_error

__all__ = ["Interpreter", "FlatInterpreter", "INTERPRETER", "FLAT_INTERPRETER",
           "instructions"]


def instructions(plan, xp) -> list:
    """``(arity, kernel, a, b, ins, out, frees)`` per step: the loop's own form."""
    out = []
    for st, fn in zip(plan.made_steps(), plan.kernels(xp)):
        ins = st.ins
        n = len(ins)
        out.append((n, fn, ins[0] if n else None, ins[1] if n > 1 else None, ins,
                    st.out, st.frees))
    return out


class Interpreter:
    """The reference: runs any plan (a flat one through ``FlatInterpreter``)."""
    name = "interpreter"
    bit_identical = True
    ulps = 0

    def accepts(self, plan, backend) -> bool:
        return not plan.flat

    def ulps_for(self, program) -> int:
        return 0

    def build(self, plan, backend):
        code = instructions(plan, backend.xp)

        def run(vals):
            out = None
            try:
                for arity, fn, a, b, ins, out, frees in code:
                    if arity == 1:
                        vals[out] = fn(vals[a])
                    elif arity == 2:
                        vals[out] = fn(vals[a], vals[b])
                    else:
                        vals[out] = fn(*[vals[i] for i in ins])
                    if frees:
                        for s in frees:
                            vals[s] = None
            except Exception as exc:
                # the loop's variables still describe the failing step
                raise_step_error(plan, plan.step_of_slot(out), exc, vals)
            return vals
        return run

    def steps(self, plan, backend):
        """``stepper(vals)``: a generator of ``(k, out slot, value)``, step by step."""
        code = instructions(plan, backend.xp)

        def stepper(vals):
            for k, (_, fn, _, _, ins, out, frees) in enumerate(code):
                try:
                    vals[out] = fn(*[vals[i] for i in ins])
                except Exception as exc:
                    raise_step_error(plan, k, exc, vals)
                yield k, out, vals[out]
                for s in frees:
                    vals[s] = None
        return stepper


class FlatInterpreter:
    """The interpreter over a ``FlatSteps`` plan's columns."""
    name = "flat interpreter"
    bit_identical = True
    ulps = 0

    def accepts(self, plan, backend) -> bool:
        return plan.flat

    def ulps_for(self, program) -> int:
        return 0

    def build(self, plan, backend):
        p = plan.made_steps()
        assert isinstance(p, FlatSteps)
        kernels = plan.kernels(backend.xp)

        def run(vals):
            wide, fr = p.wide, p.frees
            j, out = len(fr), None
            try:
                for n, fn, a, b, out, c in zip(p.arity, kernels, p.a, p.b, p.out,
                                               p.n_frees):
                    if n == 1:
                        vals[out] = fn(vals[a])
                    elif n == 2:
                        vals[out] = fn(vals[a], vals[b])
                    else:
                        vals[out] = fn(*[vals[i] for i in wide[out]])
                    if c:
                        j -= c     # the blocks descend: this step's ends where the last began
                        if c == 1:
                            vals[fr[j]] = None
                        else:
                            for s in fr[j:j + c]:
                                vals[s] = None
            except Exception as exc:
                raise_step_error(plan, plan.step_of_slot(out), exc, vals)
            return vals
        return run


INTERPRETER = Interpreter()
FLAT_INTERPRETER = FlatInterpreter()
