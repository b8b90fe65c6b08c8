"""The executor interface, and the error report every executor shares.

An executor turns a plan into something that runs it, once, at compile time:

    accepts(plan, backend) -> bool       can it run this plan on this backend?
    build(plan, backend)   -> run        run(vals) -> vals

``vals`` is the bound slot list (``Plan.consts`` with the leaves filled in); ``run``
returns a slot list whose output slots (``plan.outputs``) hold the results (the
interpreters return every value they keep; generated code writes only the outputs).
``bit_identical`` says whether the executor always promises the reference
interpreter's values bit for bit; ``ulps_for(program)`` the bound for one program
(0: bitwise), which lockstep verify mode holds it to. ``steps(plan, backend)``, where
an executor has it, makes a generator of ``(step index, slot, value)`` as each step
completes (the interpreter's), for step-by-step comparison.

A failing kernel is reported by :func:`raise_step_error`: a RunError naming the
node, its op, its inputs and the user's line, chaining the kernel's exception.
"""
from __future__ import annotations

from typing import Callable, Protocol

__all__ = ["Executor", "raise_step_error"]


class Executor(Protocol):
    name: str
    bit_identical: bool
    ulps: int

    def accepts(self, plan, backend) -> bool: ...

    def ulps_for(self, program) -> int: ...

    def build(self, plan, backend) -> Callable[[list], list]: ...


def raise_step_error(plan, k, exc, vals=None):
    """Raise a RunError for ``exc``, raised by step ``k``'s kernel; ``vals`` (the slot
    values when it failed) give its inputs' shapes and dtypes in the message."""
    from ...diagnose import run_error
    from ..lazy_errors import reported
    if reported(exc):       # an earlier step's lazy task, computed by this kernel
        raise exc
    st = plan.steps[k]
    node = plan.graph.node(st.node)
    ins = [vals[i] for i in st.ins] if vals is not None else [None] * len(node.inputs)
    raise run_error(node, exc, ins) from exc
