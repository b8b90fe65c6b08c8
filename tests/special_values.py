"""Special values against every executor: an independent reference and a bitwise compare.

``raw_eval(outputs, feed)`` evaluates the graph as built, unsimplified, node by node in
id order (ids are topological), each op node by its own kernel ``op.forward(np, *inputs,
**attrs)`` and each leaf from the feed or its value: nothing of the engine (no pruning,
simplification, plan, codegen, fusion, region or scalar path) takes part.

``difference(got, want, ulps)`` says how two values differ, or None: dtype, shape, the
positions of NaNs, the signs of infinities and zeros, and the finite values bitwise
(``ulps=0``) or within ``ulps`` units in the last place.

``SPECIALS`` are the values drawn: ±0, ±inf, NaN, subnormals, the largest and smallest
magnitudes, and ordinary numbers around them.
"""
from __future__ import annotations

import warnings

import numpy as np

SPECIALS = (0.0, -0.0, np.inf, -np.inf, np.nan, 1e-308, -1e-308, 5e-324, -5e-324,
            1e308, -1e308, 1.0, -1.0, 0.5, -2.0, 3.0, 1e-20, -1e20, 710.0, -745.5,
            3.5e38, 1e-45)


def raw_eval(outputs, feed):
    """The outputs' values from the raw graph, node by node (see the module docstring);
    ``feed``: {placeholder node: array}. An op's exception propagates as numpy's."""
    graph = outputs[0].graph
    need, stack = set(), [o.id for o in outputs]
    while stack:                                   # iterative: what the outputs read
        i = stack.pop()
        if i not in need:
            need.add(i)
            stack.extend(graph.handles[i].input_ids)
    fed = {p.id: v for p, v in feed.items()}
    vals = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in sorted(need):
            node = graph.handles[i]
            if node.op is None:
                vals[i] = fed[i] if node.kind == "placeholder" else node.value
            else:
                vals[i] = node.op.forward(np, *[vals[j] for j in node.input_ids],
                                          **node.attrs)
    return [vals[o.id] for o in outputs]


def _ordered(a):
    """Float bits as integers ordered like the floats (for ulp distances)."""
    bits = a.view(np.int64 if a.dtype.itemsize == 8 else np.int32).astype(np.int64)
    return np.where(bits < 0, np.iinfo(bits.dtype).min - bits, bits)


def difference(got, want, ulps=0):
    """None where ``got`` is ``want`` (see the module docstring), else a description."""
    g, w = np.asarray(got), np.asarray(want)
    if g.dtype != w.dtype:
        return f"dtype {g.dtype} != {w.dtype}"
    if g.shape != w.shape:
        return f"shape {g.shape} != {w.shape}"
    if g.dtype.kind not in "fc":
        return None if np.array_equal(g, w) else f"values {g} != {w}"
    if g.dtype.kind == "c":
        return difference(g.real, w.real, ulps) or difference(g.imag, w.imag, ulps)
    gn, wn = np.isnan(g), np.isnan(w)
    if not np.array_equal(gn, wn):
        return f"NaN at {np.argwhere(gn != wn)[:3].tolist()}: {g[gn != wn][:3]} vs {w[gn != wn][:3]}"
    ok = ~gn
    gi, wi = g[ok], w[ok]
    inf = np.isinf(gi) | np.isinf(wi)
    if not np.array_equal(gi[inf], wi[inf]):
        return f"inf: {gi[inf][:3]} vs {wi[inf][:3]}"
    zero = (gi == 0) | (wi == 0)
    if not np.array_equal(np.signbit(gi[zero]), np.signbit(wi[zero])) or \
            not np.array_equal(gi[zero], wi[zero]):
        return f"zeros: {gi[zero][:3]} vs {wi[zero][:3]}"
    rest = ~(inf | zero)
    if ulps == 0:
        bad = gi[rest] != wi[rest]
    else:
        bad = np.abs(_ordered(gi[rest]) - _ordered(wi[rest])) > ulps
    if np.any(bad):
        return f"values: {gi[rest][bad][:3]!r} vs {wi[rest][bad][:3]!r}"
    return None
