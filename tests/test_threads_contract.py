"""The thread-safety contract (docs/threads.md): what several threads may do at once and
get the single-threaded answer, and what is refused with a typed error.

Each test forces the interleaving it is about (barriers, events, ``sys.setswitchinterval``)
and checks real values against numpy: the draws of ``np.random.default_rng``, the seeds
of ``np.random.SeedSequence``, names as strings, ``gc.isenabled()``."""
import gc
import threading
import time

import numpy as np
import pytest

import flowgrad as fg
import flowgrad.graph as fg_graph
from flowgrad.composite import composite
from thread_hammer import in_threads


def _in_threads(fn, n=8):
    """Run fn(k) in n threads released at once, switching threads as often as Python
    allows; re-raise the first error."""
    in_threads(fn, n, switch=1e-6)


# -- scopes: per graph and per thread ---------------------------------------------------

def test_layers_and_scopes_built_in_threads_into_one_graph_name_their_own_nodes():
    """A name scope was one list per graph: a layer built in one thread named another
    thread's variables (``L3/W`` under ``L5/``), and two threads' exits could leave a
    scope open on the graph for every node built afterwards; listing the names while
    another thread added one raised 'dictionary changed size during iteration'."""
    for _ in range(8):
        with fg.Graph() as g:
            x = fg.placeholder("x", shape=(None, 3))
            layers = [None] * 8
            scoped = [None] * 8

            def build(k):
                with g:
                    layers[k] = fg.nn.Dense(4, name=f"L{k}")
                    layers[k](x)
                    with fg.name_scope(f"s{k}"):
                        scoped[k] = fg.constant(1.0, name="c")

            _in_threads(build)
            assert g.scope == ()
            assert fg.sin(x).name == f"sin_{len(g) - 1}"       # no scope left open
        for k in range(8):
            assert sorted(v.name for v in layers[k].variables) == [f"L{k}/W", f"L{k}/b"]
            assert scoped[k].name == f"s{k}/c" and scoped[k].scope == (f"s{k}",)


def test_one_layer_name_in_threads_gives_distinct_scopes():
    """Two threads' layers named alike claimed the same scope: each must get its own."""
    for _ in range(8):
        with fg.Graph() as g:
            x = fg.placeholder("x", shape=(None, 2))
            layers = [fg.nn.Dense(3) for _ in range(8)]

            def build(k):
                with g:
                    layers[k](x)

            _in_threads(build)
        assert sorted(layer.scope for layer in layers) == \
            sorted([("dense",)] + [(f"dense_{k}",) for k in range(1, 8)])


def test_a_composite_block_shared_by_threads_closes_in_each():
    """``with block:`` on one ``fg.composite("name")`` object in two threads: the block
    kept one list of open frames, so a thread's exit popped the other's frame and left
    its own group open; every node that thread built later was drawn inside it."""
    block = composite("blk")
    with fg.Graph() as g:
        x = fg.placeholder("x", shape=(3,))
        inside, entered, exited = {}, threading.Barrier(2), threading.Event()
        after = {}

        def a():
            with g:
                with block:
                    inside["a"] = fg.sin(x)
                    entered.wait()           # b enters the block after a
                    # a exits first: the old code popped b's frame here
                exited.set()
                after["a"] = fg.cos(x)

        def b():
            with g:
                entered.wait()
                with block:
                    exited.wait()
                    inside["b"] = fg.tanh(x)
                after["b"] = fg.exp(x)

        ts = [threading.Thread(target=a), threading.Thread(target=b)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    assert inside["a"].group == ("blk",) and inside["b"].group == ("blk_1",)
    assert after["a"].group == () and after["b"].group == ()


# -- the collector's switch --------------------------------------------------------------

class _SlowSwitch:
    """``gc`` as flowgrad/graph.py sees it, whose ``isenabled`` waits (up to a bound) for
    another thread's sweep to end before answering with what it read: the interleaving
    in which a sweep read 'off' (another sweep under way), that sweep ended and turned
    the collector on, and the first then turned it off for good."""

    def __init__(self, other_ended):
        self.other_ended = other_ended
        self.calls = 0

    def isenabled(self):
        was = gc.isenabled()
        self.calls += 1
        if self.calls == 2:                      # a second look, while a sweep is under way
            self.other_ended.wait(0.5)
        return was

    def __getattr__(self, name):
        return getattr(gc, name)


def test_sweeps_in_two_threads_leave_the_collector_on(monkeypatch):
    assert gc.isenabled()
    first_in, second_looking, first_out = (threading.Event() for _ in range(3))
    monkeypatch.setattr(fg_graph, "gc", _SlowSwitch(first_out))

    def first():
        with fg_graph.gc_paused():
            first_in.set()
            second_looking.wait(0.2)             # the second sweep reads the switch now
        first_out.set()

    def second():
        first_in.wait()
        second_looking.set()
        with fg_graph.gc_paused():
            pass

    ts = [threading.Thread(target=first), threading.Thread(target=second)]
    try:
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert gc.isenabled()
    finally:
        gc.enable()


def test_compiles_and_gradients_from_threads_leave_the_collector_on():
    with fg.Graph():
        x = fg.placeholder("x", shape=(3,))
        y = fg.sum(fg.sin(x) * x)
    X = np.array([0.5, -1.0, 2.0])

    def work(k):
        for _ in range(20):
            g = fg.compile(fg.grad(y, x))(x=X)
            np.testing.assert_allclose(g, np.cos(X) * X + np.sin(X), rtol=1e-14)

    _in_threads(work)
    assert gc.isenabled()


# -- random draws and seeds --------------------------------------------------------------

def test_a_seeded_draw_called_first_from_eight_threads_gives_eight_draws_of_its_stream():
    """Each thread's first call made the stream's generator anew: several calls got the
    stream's first draw, the same numbers, and later draws were skipped."""
    want = np.random.default_rng(123)
    want = sorted(tuple(want.standard_normal(4)) for _ in range(16))
    for _ in range(20):
        with fg.Graph():
            x = fg.placeholder("x", shape=(None,))
            prog = fg.compile(x + fg.random.normal((None,), like=x, seed=123))
        got = []

        def call(k):
            got.append(tuple(prog(x=np.zeros(4))))
            got.append(tuple(prog(x=np.zeros(4))))

        _in_threads(call)
        assert sorted(got) == want


class _SlowCounts(dict):
    """A graph's seed counts whose read lets other threads run before the count is
    written back (as a collection between the two, running finalizers, can)."""

    def get(self, *args):
        got = super().get(*args)
        time.sleep(0.0005)
        return got


def test_random_nodes_built_in_threads_take_distinct_derived_seeds():
    """A graph's derived seeds came from a count read and written back unguarded: two
    threads took the same count, so two nodes drew identical numbers."""
    tag = int.from_bytes(b"random", "little")
    want = {int(np.random.SeedSequence([7, tag, k]).generate_state(1, np.uint64)[0])
            for k in range(8 * 10)}
    with fg.Graph() as g:
        fg.random.set_seed(7)
        fg.random._SEEDS[g].counts = _SlowCounts()
        nodes = []

        def build(k):
            with g:
                for _ in range(10):
                    nodes.append(fg.random.uniform((2,)))

        _in_threads(build)
    assert {n.attrs["stream"].seed for n in nodes} == want


# -- one fit at a time per optimizer -----------------------------------------------------

def test_a_second_fit_of_one_optimizer_from_another_thread_is_refused():
    """Two fits of one optimizer at once set and restored its check_finite over each
    other (left True for good) and interleaved their steps: the second is refused."""
    X = np.linspace(-1.0, 1.0, 8)[:, None]
    T = 3.0 * X[:, 0]
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 1))
        t = fg.placeholder("t", shape=(None,))
        w = fg.variable(np.zeros(1), name="w")
        loss = fg.mean((x @ w - t) ** 2)
        opt = fg.optim.SGD([w], lr=0.1)
        started, release = threading.Event(), threading.Event()

        class Hold(fg.Callback):
            def on_batch_begin(self, batch, logs, state):
                started.set()
                release.wait(5)

        result = {}

        def first():
            try:
                result["hist"] = opt.fit(loss, {x: X, t: T}, epochs=1, batch_size=8,
                                         shuffle=False, callbacks=[Hold()], verbose=False)
            except BaseException as e:  # noqa: BLE001  (re-raised below)
                result["error"] = e
                started.set()

        th = threading.Thread(target=first)
        th.start()
        try:
            assert started.wait(5)
            if "error" in result:
                raise result["error"]
            with pytest.raises(fg.OptimizerError, match="already fitting in another thread"):
                opt.fit(loss, {x: X, t: T}, epochs=1, batch_size=8, verbose=False)
        finally:
            release.set()
            th.join()
        if "error" in result:
            raise result["error"]
        assert opt.check_finite is False and opt.iterations == 1
        # one full-batch step from w = 0: w − 0.1 · 2 mean(x (x w − t))
        np.testing.assert_allclose(w.value, 0.1 * 2 * np.mean(X[:, 0] * T), rtol=1e-14)
        # afterwards the optimizer fits again, from any thread
        opt.fit(loss, {x: X, t: T}, epochs=1, batch_size=8, shuffle=False, verbose=False)
        assert opt.iterations == 2
