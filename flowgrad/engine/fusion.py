"""Elementwise fusion for generated code: chains of pointwise steps as one expression.

A step is *fusible* when its op has an expression below, its value and every
operand are float64 (or bool between a comparison and ``where``; Python numbers
become literals), and — for a step that is not the chain's last — its only
reader is the next step of the chain and it is not an output. Such a chain (a
tree, really: every inlined value has one reader) becomes one expression, built
bottom-up, which the generated code hands to a backend-specific kernel:

* numpy: a precompiled ``numexpr`` expression (one pass over the data, no
  temporaries, multi-threaded) when an operand is large (``NUMEXPR_MIN`` entries,
  checked per call: a numexpr call costs a few µs); below that, the unfused
  numpy steps run, as they would without fusion;
* cupy: one ``cupy.ElementwiseKernel`` per chain, from the same tree in C.

σ and softplus expand into their stable formulations, the same ones as the ops'
own kernels (exp(−|x|) never overflows). The model losses (bce_with_logits, mse …)
are fused primitives with their own kernels and reductions: they are not chained. Values agree with the unfused steps
to rounding (numexpr's exp/log differ from numpy's SIMD versions in the last ulp).
Only float64 chains fuse: numexpr promotes float32 with Python floats to float64,
where numpy keeps float32. With numba installed, steps in a pointwise region
(regions.py) are not chained: a region's loop beat numexpr on the same steps at
every size measured (benchmarks/RESULTS.md); chains fuse what is left around them.
"""
from __future__ import annotations

import numpy as np

from .plan import node_table

NUMEXPR_MIN = 1 << 19    # below ~5·10⁵ entries numexpr lost to unfused numpy (RESULTS.md)
MAX_CHAIN = 24          # ops per fused expression (keeps numexpr's parser off deep nesting)

# op name → (numexpr pattern, C pattern); {0}, {1} … are the operands' expressions
_EXPR = {
    "add": ("({0} + {1})", "({0} + {1})"),
    "sub": ("({0} - {1})", "({0} - {1})"),
    "mul": ("({0} * {1})", "({0} * {1})"),
    "div": ("({0} / {1})", "({0} / {1})"),
    "neg": ("(-{0})", "(-{0})"),
    "exp": ("exp({0})", "exp({0})"),
    "log": ("log({0})", "log({0})"),
    "log1p": ("log1p({0})", "log1p({0})"),
    "sqrt": ("sqrt({0})", "sqrt({0})"),
    "tanh": ("tanh({0})", "tanh({0})"),
    "sin": ("sin({0})", "sin({0})"),
    "cos": ("cos({0})", "cos({0})"),
    "abs": ("abs({0})", "fabs({0})"),
    "where": ("where({0}, {1}, {2})", "flowgrad_where({0}, {1}, {2})"),
    "greater": ("({0} > {1})", "({0} > {1})"),
    "greater_equal": ("({0} >= {1})", "({0} >= {1})"),
    "less": ("({0} < {1})", "({0} < {1})"),
    "less_equal": ("({0} <= {1})", "({0} <= {1})"),
    # the ops' stable formulations, written out (e = exp(−|x|))
    "sigmoid": ("(where({0} >= 0, 1.0, exp(-abs({0}))) / (1.0 + exp(-abs({0}))))",
                "(flowgrad_where({0} >= 0, 1.0, exp(-fabs({0}))) / (1.0 + exp(-fabs({0}))))"),
    # max(x, 0) that keeps nan, as numpy's maximum
    "softplus": ("(where({0} > 0, {0}, where({0} <= 0, 0.0, {0})) + log1p(exp(-abs({0}))))",
                 "(flowgrad_where({0} > 0, {0}, flowgrad_where({0} <= 0, 0.0, {0}))"
                 " + log1p(exp(-fabs({0}))))"),
}
# The C side writes a choice as a call (both sides are pure: evaluating both is harmless),
# so every C expression is also plain infix arithmetic and calls.
C_PREAMBLE = ("__device__ inline double flowgrad_where(bool c, double a, double b) "
              "{ return c ? a : b; }")
_F64, _BOOL = np.dtype(np.float64), np.dtype(bool)


class Chain:
    """One fused chain: ``steps`` (plan indices, the root last), its leaf operand slots,
    and the expression over names ``a0, a1 …`` (numexpr) and ``c_source`` (C)."""

    def __init__(self, steps, operands, dtypes, expr, c_expr):
        self.steps, self.operands, self.dtypes = steps, operands, dtypes
        self.expr, self.c_expr = expr, c_expr


def _literal(v):
    if type(v) in (int, float) and np.isfinite(v):
        return repr(float(v))
    return None


def find_chains(plan, exclude=frozenset()) -> dict[int, Chain]:
    """{root step index: Chain} for ``plan`` (flowgrad/engine/plan.py); the other steps
    of each chain are not emitted on their own. Steps in ``exclude`` (in a region loop)
    never join."""
    data = node_table(plan.graph)
    kept, template, steps = plan.slots, plan.consts, plan.made_steps()

    def dtype(s):
        return data[kept[s]].dtype

    readers, reader_of = {}, {}
    for k, step in enumerate(steps):
        for s in step.ins:
            readers[s] = readers.get(s, 0) + 1
            reader_of[s] = k
    producer = {step.out: k for k, step in enumerate(steps)}
    outs = set(plan.outputs)
    fusible = {}
    for k, step in enumerate(steps):
        if k not in exclude and step.op.name in _EXPR and not step.attrs and \
                dtype(step.out) in (_F64, _BOOL) and \
                all(dtype(s) in (_F64, _BOOL) or _literal(template[s]) is not None
                    for s in step.ins):
            fusible[k] = step
    inlined = {k for k, step in fusible.items()
               if readers.get(step.out) == 1 and step.out not in outs}

    chains, absorbed = {}, set()
    for k in sorted(fusible, reverse=True):      # a step not absorbed by a later one is a root
        if k in absorbed:
            continue
        members, queue = {k}, [k]
        while queue and len(members) < MAX_CHAIN:   # breadth-first; a cut producer is a root later
            for s in steps[queue.pop(0)].ins:
                p = producer.get(s)
                if p in inlined and p in fusible and p not in absorbed and len(members) < MAX_CHAIN:
                    members.add(p)
                    queue.append(p)
        if len(members) < 2 or dtype(steps[k].out) != _F64:
            continue
        absorbed.update(members)
        operands, names = [], {}
        expr, c_expr = _expression(k, members, steps, producer, template, operands, names)
        chains[k] = Chain(sorted(members), operands, [dtype(s) for s in operands], expr, c_expr)
    return chains


def _expression(root, members, steps, producer, template, operands, names):
    """The (numexpr, C) expressions of the tree of ``members`` under ``root``: an
    iterative post-order walk (chains are short, but nothing here recurses)."""
    done = {}
    stack = [(root, False)]
    while stack:
        k, ready = stack.pop()
        ins = steps[k].ins
        if not ready:
            stack.append((k, True))
            stack.extend((producer[s], False) for s in ins if producer.get(s) in members)
            continue
        parts = []
        # a divisor is never a literal: numexpr rewrites x / c as x * (1/c), evaluating
        # 1/c in Python (a raw ZeroDivisionError at c = 0, and not x / c's rounding
        # otherwise); as an operand it is divided entry by entry, as numpy does
        divisor = ins[1] if steps[k].op.name == "div" else None
        for s in ins:
            p = producer.get(s)
            if p in members:
                parts.append(done[p])
                continue
            lit = _literal(template[s]) if template[s] is not None and s != divisor else None
            if lit is None:
                if s not in names:
                    names[s] = f"a{len(operands)}"
                    operands.append(s)
                lit = names[s]
            parts.append((lit, lit))
        ne, cc = _EXPR[steps[k].op.name]
        done[k] = (ne.format(*(e for e, _ in parts)), cc.format(*(c for _, c in parts)))
    return done[root]


class _Numexpr:
    """The chain as a numexpr expression, compiled on its first call (small programs
    never reach NUMEXPR_MIN, and should not pay for compiling it)."""

    def __init__(self, chain):
        self.chain, self.fn = chain, None

    def __call__(self, *operands):
        if self.fn is None:
            import numexpr
            sig = [(f"a{i}", np.float64 if d == _F64 else bool)
                   for i, d in enumerate(self.chain.dtypes)]
            self.fn = numexpr.NumExpr(self.chain.expr, signature=sig)
        return self.fn(*operands)


def numexpr_kernel(chain):
    """The chain as a numexpr expression: ``f(*operands) -> array``."""
    return _Numexpr(chain)


def cupy_kernel(cupy, chain, name):
    """The chain as one ``cupy.ElementwiseKernel`` (C source from the same tree)."""
    params = ", ".join(f"{'float64' if d == _F64 else 'bool'} a{i}"
                       for i, d in enumerate(chain.dtypes))
    return cupy.ElementwiseKernel(params, "float64 out", f"out = {chain.c_expr}", name,
                                  preamble=C_PREAMBLE)
