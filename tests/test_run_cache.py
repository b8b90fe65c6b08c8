"""fg.run's cache of compiled programs. It was a WeakKeyDictionary keyed by the graph
whose values, the programs, hold the graph's nodes: every graph ever run stayed alive
(~18 KiB for a 3-node graph, its nodes and generated code), and one graph's table grew
with every distinct output list. The programs are now held by the graph itself, the
RUN_CACHE_SIZE most recently used: a dropped graph is freed with its programs, and
a kept program answers a later call as the first, against numpy's closed form."""
from __future__ import annotations

import gc
import weakref

import numpy as np

import flowgrad as fg
from flowgrad.engine import program as P


def _run_once(c):
    with fg.Graph() as g:
        x = fg.placeholder("x", shape=(3,))
        got = fg.run(fg.sum(fg.exp(x) * c), {x: np.arange(3.0)})
    np.testing.assert_allclose(got, c * np.exp(np.arange(3.0)).sum(), rtol=1e-15)
    return weakref.ref(g)


def test_a_dropped_graph_is_freed_with_its_programs():
    refs = [_run_once(float(c)) for c in range(50)]
    gc.collect()
    assert [r for r in refs if r() is not None] == []      # all 50 stayed alive before


def test_one_graphs_cache_is_bounded_and_a_kept_program_answers_again():
    X = np.array([0.5, -1.0, 2.0])
    with fg.Graph() as g:
        x = fg.placeholder("x", shape=(3,))
        outs = [fg.sum(x * float(k)) for k in range(P.RUN_CACHE_SIZE + 40)]
        for k, y in enumerate(outs):
            assert fg.run(y, {x: X}) == k * X.sum()
        cache = P.run_cache(g)
        assert len(cache) == P.RUN_CACHE_SIZE                # was one per output: 104
        last = outs[-1]
        kept = cache.get(((last.id,), True, fg.backends.get_backend(None)))
        assert kept is not None
        assert fg.run(last, {x: 2 * X}) == (len(outs) - 1) * 2 * X.sum()
        assert fg.run(outs[0], {x: X}) == 0.0                 # dropped: compiled again
        assert len(cache) == P.RUN_CACHE_SIZE
        assert cache.get(((last.id,), True, fg.backends.get_backend(None))) is kept
