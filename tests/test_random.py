"""fg.random: random draws as stateful graph nodes."""
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest

import flowgrad as fg
from flowgrad.backends.base import Backend


def test_shapes_from_like_at_run_time():
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 5))
        r = fg.random.normal((None, 3), like=x, seed=0)
        u = fg.random.uniform(like=x, seed=1)
        assert r.shape == (None, 3) and u.shape == (None, 5)
        assert r.dtype == np.float64
        prog = fg.compile([r, u])
        for n in (1, 7):
            rv, uv = prog(x=np.zeros((n, 5)))
            assert rv.shape == (n, 3) and uv.shape == (n, 5)
        c = fg.random.uniform((2, 3), seed=0)
        assert fg.run(c, {}).shape == (2, 3)
        f32 = fg.placeholder("f", shape=(4,), dtype="float32")
        assert fg.random.normal(like=f32, seed=0).dtype == np.float32


def test_every_run_draws_afresh_and_seeds_replay():
    def draws(seed):
        with fg.Graph():
            r = fg.random.normal((4,), seed=seed)
            prog = fg.compile(r)
            return [prog() for _ in range(3)]
    a, b = draws(7), draws(7)
    assert not np.array_equal(a[0], a[1]) and not np.array_equal(a[1], a[2])
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    # the sequence is numpy's default_rng(seed)'s
    gen = np.random.default_rng(7)
    np.testing.assert_array_equal(a[0], gen.standard_normal(4))
    np.testing.assert_array_equal(a[1], gen.standard_normal(4))
    assert not np.array_equal(draws(8)[0], a[0])


def test_distribution_statistics():
    with fg.Graph():
        n = fg.random.normal((200_000,), mean=2.0, std=3.0, seed=0)
        u = fg.random.uniform((200_000,), low=-1.0, high=4.0, seed=1)
        b = fg.random.bernoulli((200_000,), p=0.3, seed=2)
        m = fg.random.bernoulli((10,), p=0.5, dtype=bool, seed=3)
        nv, uv, bv, mv = fg.compile([n, u, b, m])()
    assert abs(nv.mean() - 2.0) < 0.03 and abs(nv.std() - 3.0) < 0.03
    assert uv.min() >= -1.0 and uv.max() < 4.0 and abs(uv.mean() - 1.5) < 0.02
    assert set(np.unique(bv)) == {0.0, 1.0} and abs(bv.mean() - 0.3) < 0.005
    assert mv.dtype == np.bool_


def test_simplifier_never_folds_or_merges_draws():
    with fg.Graph():
        # two draws with identical attributes and no inputs: CSE must keep both,
        # and a draw of constants only must not be folded into a constant
        a = fg.random.normal((3,), seed=0)
        b = fg.random.normal((3,), seed=1)
        c = fg.random.uniform((2,), like=fg.constant(np.ones(2)), seed=2)
        prog = fg.compile([a, b, a + 0.0, c])
        av, bv, a2, c1 = prog()
        assert not np.array_equal(av, bv)
        np.testing.assert_array_equal(av, a2)      # one draw per run, read twice
        c2 = prog()[3]
        assert not np.array_equal(c1, c2)
        assert a.op.name == "random_normal" and c.op.name == "random_uniform"
        assert a.op.stateful and not fg.ops.REGISTRY["add"].stateful


def test_one_draw_per_run_is_shared_by_forward_and_gradient():
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 4))
        r = fg.random.normal((None, 4), like=x, seed=3)
        loss = fg.sum(x * r)
        gx, = fg.grad(loss, [x])
        tr = fg.compile([loss, gx]).trace(x=np.ones((2, 4)))
        np.testing.assert_array_equal(tr[gx], tr[r])          # the value appears in traces
        np.testing.assert_allclose(tr[loss], tr[r].sum())
        assert fg.grad(fg.sum(r), x) is not None
        np.testing.assert_array_equal(fg.run(fg.grad(fg.sum(r * 2.0), x),
                                             {x: np.ones((2, 4))}), np.zeros((2, 4)))
        # forward mode: the draw does not move with its shape reference either, and the
        # tangent of x·r is r·ẋ with the run's draw
        assert fg.run(fg.jvp(fg.sum(r * 2.0), x, np.ones((2, 4))), {x: np.ones((2, 4))}) == 0
        tj = fg.compile([fg.jvp(loss, x, np.ones((2, 4))), r])(x=np.ones((2, 4)))
        assert tj[0] == pytest.approx(tj[1].sum(), rel=1e-14)


def test_graph_seed_derives_node_seeds_in_build_order():
    def build():
        with fg.Graph():
            fg.random.set_seed(11)
            a = fg.random.normal((3,))
            b = fg.random.normal((3,))
            return fg.compile([a, b])()
    (a1, b1), (a2, b2) = build(), build()
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(b1, b2)
    assert not np.array_equal(a1, b1)


SCRIPT = textwrap.dedent("""
    import numpy as np, flowgrad as fg
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 3))
        r = fg.random.uniform((None, 3), like=x, seed=5)
        fg.random.set_seed(2)
        h = fg.nn.dropout(x, 0.5, training=True)
        model = fg.nn.Dense(2)             # its initial weights derive from the graph seed
        y = model(h)
        prog = fg.compile([r, y])
        for _ in range(3):
            rv, yv = prog(x=np.ones((4, 3)))
            print(repr(rv.round(12).tolist()), repr(yv.round(12).tolist()))
""")


def test_seeded_graph_replays_in_fresh_processes():
    runs = [subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                           check=True).stdout for _ in range(2)]
    assert runs[0] == runs[1]
    lines = runs[0].splitlines()
    assert len(lines) == 3 and len(set(lines)) == 3    # fresh draws on every run


def test_shape_errors_at_build_time():
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 5))
        with pytest.raises(fg.ShapeError, match="like="):
            fg.random.normal((None, 3))
        with pytest.raises(fg.ShapeError, match="another number of axes"):
            fg.random.normal((None,), like=x)
        with pytest.raises(fg.ShapeError, match="give a shape"):
            fg.random.uniform()
        with pytest.raises(ValueError, match="p must lie"):
            fg.random.bernoulli((2,), p=1.5)
        with pytest.raises(ValueError, match="std"):
            fg.random.normal((2,), std=-1.0)
        with pytest.raises(TypeError, match="seed"):
            fg.random.normal((2,), seed=-3)
        with pytest.raises(TypeError, match="dtype"):
            fg.random.normal((2,), dtype="int64")


def test_draws_on_dask_match_shapes_and_replay():
    pytest.importorskip("dask.array")
    from flowgrad.backends.dask_backend import DaskBackend
    backend = DaskBackend(chunks=3)

    def run():
        with fg.Graph():
            x = fg.placeholder("x", shape=(None, 2))
            r = fg.random.normal((None, 2), like=x, seed=1)
            y = fg.nn.dropout(x, 0.5, training=True, seed=2)
            loss = fg.sum(y)
            g = fg.grad(loss, x)
            prog = fg.compile([r, y, g], backend=backend)
            return [prog(x=np.ones((7, 2))) for _ in range(2)]
    a, b = run(), run()
    for (r1, y1, g1), (r2, y2, g2) in zip(a, b):
        assert isinstance(r1, np.ndarray) and r1.shape == (7, 2)
        np.testing.assert_array_equal(r1, r2)
        np.testing.assert_array_equal(y1, y2)
        np.testing.assert_array_equal(g1, y1)       # x = 1: dy/dx = the scaled mask = y
    assert not np.array_equal(a[0][0], a[1][0])


class _FakeCupy(types.ModuleType):
    """A stand-in for cupy's namespace: numpy underneath, with its own random module."""

    def __init__(self):
        super().__init__("cupy")
        self.random = types.SimpleNamespace(default_rng=np.random.default_rng)
        self.made = 0

    def __getattr__(self, name):
        return getattr(np, name)


class _FakeCupyBackend(Backend):
    name = "fake-cupy"

    def __init__(self):
        self.xp = _FakeCupy()

    def asarray(self, value, dtype=None):
        return np.asarray(value, dtype=dtype)

    def owns(self, array):
        return isinstance(array, np.ndarray)


def test_each_namespace_has_its_own_generator():
    backend = _FakeCupyBackend()
    with fg.Graph():
        r = fg.random.uniform((5,), seed=9)
        on_fake = fg.compile(r, backend=backend)
        on_numpy = fg.compile(r)
        f1, n1, f2 = on_fake(), on_numpy(), on_fake()
    gen = np.random.default_rng(9)
    first, second = gen.random(5), gen.random(5)
    np.testing.assert_array_equal(f1, first)
    np.testing.assert_array_equal(n1, first)        # numpy's stream starts at its own seed
    np.testing.assert_array_equal(f2, second)
    stream = r.attrs["stream"]
    assert set(stream._generators) == {"cupy", "numpy"}


def test_set_seed_refuses_what_is_not_a_non_negative_int():
    """set_seed truncated 2.5 to 2, took True as 1 and parsed the string '3'; a
    negative seed was stored and failed later, at the first layer built, with numpy's
    bare ValueError. Each is now a UsageError (a TypeError) at the call, as a node's
    own seed= is; 0 and a numpy int are seeds, and seed 0 replays numpy's stream."""
    with fg.Graph():
        for bad in (-1, 2.5, True, "3", None.__class__):
            with pytest.raises(fg.UsageError, match="non-negative int"):
                fg.random.set_seed(bad)
        assert fg.random.get_seed() is None
        with pytest.raises(TypeError, match="non-negative int, got -1"):
            fg.random.normal((2,), seed=-1)
        fg.random.set_seed(np.int64(0))
        assert fg.random.get_seed() == 0 and type(fg.random.get_seed()) is int
        draw = fg.run(fg.random.normal((4,), seed=0))
        np.testing.assert_array_equal(draw, np.random.default_rng(0).standard_normal(4))
