"""Generated code as executors: the plan as one Python function over arrays
(flowgrad/engine/codegen.py, with numexpr chains and numba regions inside), and its scalar
variant on Python floats (flowgrad/engine/scalar_plan.py; the first calls of a long plan run
its warm-up loop, flowgrad/engine/scalar_tier.py).

Promises, checked step by step by lockstep verify mode against the reference
interpreter's kernels applied to the executor's own inputs (engine/lockstep.py):

- array code: the reference's bits, except inside numexpr chains (operands of
  ``fusion.NUMEXPR_MIN`` entries or more), each of whose steps (exp, log, …) may
  differ by ``NUMEXPR_ULPS`` in the last place of its own value, carried through the
  chain by its own sensitivities; numba regions and the numpy-specialised kernels
  compute the same float operations in the same order (bitwise);
- scalar code: IEEE operations bitwise; Python's ``math`` differs from numpy's
  exp/tanh/log1p/log in the last place for a few per cent of arguments: within
  ``SCALAR_ULPS`` of the step's value (of max(|value|, 1) for a composite kernel:
  σ, softplus, bce …); non-finite results rerun on arrays. Later steps may amplify
  these differences (1 − tanh²x cancels); each step is judged by its own.
"""
from __future__ import annotations

from ..plan import FLAT_STEPS

__all__ = ["Generated", "Scalar", "GENERATED", "SCALAR", "NUMEXPR_ULPS", "SCALAR_ULPS"]

NUMEXPR_ULPS = 4
SCALAR_ULPS = 8


class Generated:
    """The array function (codegen)."""
    name = "generated array code"
    bit_identical = False      # bitwise but for numexpr chains: see the module docstring
    ulps = NUMEXPR_ULPS

    def accepts(self, plan, backend) -> bool:
        return len(plan.steps) <= FLAT_STEPS

    def ulps_for(self, program) -> int:
        """The program's promise: bitwise (0) unless its array code has fused chains."""
        return self.ulps if program.generated.array_fn.fused else 0

    def build(self, plan, backend):
        from .. import codegen
        fn = codegen.Generated(plan, backend, codegen.constants(plan)).array_fn
        outs = plan.outputs

        def run(vals):
            for s, v in zip(outs, fn(vals)):
                vals[s] = v
            return vals
        return run


class Scalar:
    """The scalar function on Python floats; a call whose result is not finite (or that
    ``math`` refuses) reruns on the array function, as the program's own call does."""
    name = "generated scalar code"
    bit_identical = False
    ulps = SCALAR_ULPS

    def ulps_for(self, program) -> int:
        return self.ulps

    def accepts(self, plan, backend) -> bool:
        from ..scalar_plan import qualifies
        return backend.scalar_floats and len(plan.steps) <= FLAT_STEPS and \
            qualifies(plan)

    def build(self, plan, backend):
        from .. import codegen
        from ..scalar_plan import build_for_plan
        consts = codegen.constants(plan)
        sc = build_for_plan(plan, consts)
        arrays = GENERATED.build(plan, backend)
        outs, leaves = plan.outputs, sc.leaves

        def run(vals):
            try:
                res = sc.fn(*[float(vals[s]) for s in leaves])
            except Exception:          # math raised (1/0, exp(1000) …): numpy's own result
                res = None
            if res is None:
                return arrays(vals)
            for s, v in zip(outs, res):
                vals[s] = v
            return vals
        return run


GENERATED = Generated()
SCALAR = Scalar()
