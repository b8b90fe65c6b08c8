"""The NaN/Inf-checked interpreter (flowgrad/numerics.py) as an executor: the
reference loop, testing each new value for finiteness; ``NumericsError`` names the
first node that makes a NaN or ±Inf from finite inputs. Its error carries a Trace of
the program, so it is built for one program (``Checked(program)``)."""
from __future__ import annotations

__all__ = ["Checked"]


class Checked:
    name = "NaN/Inf-checked interpreter"
    bit_identical = True
    ulps = 0

    def __init__(self, program):
        self.program = program

    def accepts(self, plan, backend) -> bool:
        return plan is self.program.plan

    def build(self, plan, backend):
        from ...numerics import run_checked
        prog = self.program

        def run(vals):
            return run_checked(prog, vals)
        return run
