"""Executors: each runs a plan, behind one interface (``base.Executor``).

- ``interp``: the reference interpreter, and its form over a flat plan's columns;
- ``checked``: the interpreter testing every value for NaN/Inf (flowgrad/numerics.py);
- ``generated``: the plan as one generated Python function over arrays (with numexpr
  chains and numba regions inside: flowgrad/engine/codegen.py, fusion.py, regions.py), and
  its scalar variant on Python floats with its warm-up loop (scalar_plan.py,
  scalar_tier.py);
- ``profile``: the interpreter with a clock read around each step (``Program.profile``).

A program picks one at compile time (``Program.executor``); ``choose`` gives the
order of preference.
"""
from .base import Executor, raise_step_error
from .interp import FLAT_INTERPRETER, INTERPRETER, FlatInterpreter, Interpreter
from .generated import GENERATED, SCALAR, Generated, Scalar
from .checked import Checked

__all__ = ["Executor", "raise_step_error", "Interpreter", "FlatInterpreter", "Generated",
           "Scalar", "Checked", "INTERPRETER", "FLAT_INTERPRETER", "GENERATED", "SCALAR",
           "ALL", "reference_for"]

#: every executor, in the order a program prefers them
ALL = (SCALAR, GENERATED, FLAT_INTERPRETER, INTERPRETER)


def reference_for(plan):
    """The reference interpreter that runs ``plan`` (the flat form for a flat plan)."""
    return FLAT_INTERPRETER if FLAT_INTERPRETER.accepts(plan, None) else INTERPRETER
