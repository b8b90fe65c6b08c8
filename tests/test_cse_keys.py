"""The simplifier's CSE keys (flowgrad/engine/simplify.py ``cse_key``): one int for one or
two inputs, one-to-one, so two nodes merge exactly when an op meets the same inputs
(in either order for a commutative op) — and the compiled programs say so."""
from __future__ import annotations

import itertools

import numpy as np

import flowgrad as fg
from flowgrad.engine.simplify import cse_key


def test_keys_are_one_to_one_for_one_and_two_inputs():
    top = 7
    ids = range(top)
    ones = {cse_key((a,), False, top): (a,) for a in ids}
    pairs = {cse_key((a, b), False, top): (a, b) for a, b in itertools.product(ids, ids)}
    assert len(ones) == top and len(pairs) == top * top
    assert not set(ones) & set(pairs)            # one id ≥ 0, a pair < 0
    assert all(k >= 0 for k in ones) and all(k < 0 for k in pairs)
    sym = {cse_key((a, b), True, top) for a, b in itertools.product(ids, ids)}
    assert len(sym) == top * (top + 1) // 2      # (a, b) and (b, a) alike, nothing else
    assert cse_key((3, 5), True, top) == cse_key((5, 3), True, top)
    assert cse_key((3, 5), False, top) != cse_key((5, 3), False, top)
    assert cse_key((0, 5), False, top) != cse_key((5,), False, top)   # the first id 0
    assert cse_key((4, 1, 2), True, top) == (1, 2, 4)
    assert cse_key((4, 1, 2), False, top) == (4, 1, 2) and cse_key((), False, top) == ()


def test_programs_merge_exactly_the_common_subexpressions():
    xv, yv = np.array([0.5, -1.5]), np.array([2.0, 3.0])
    with fg.Graph():
        x, y = fg.placeholder("x", (2,)), fg.placeholder("y", (2,))
        same = [fg.sin(x), fg.sin(x), x * y, y * x, x + y, y + x]
        differ = [x - y, y - x, x / y, y / x, fg.sin(y)]
        outs = same + differ
        prog = fg.compile(outs, codegen=False)
        got = prog(x=xv, y=yv)
    # 3 distinct values among `same`, 5 among `differ`: 8 steps, no more, no fewer
    assert prog.n_steps == 8
    want = [np.sin(xv), np.sin(xv), xv * yv, yv * xv, xv + yv, yv + xv,
            xv - yv, yv - xv, xv / yv, yv / xv, np.sin(yv)]
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
