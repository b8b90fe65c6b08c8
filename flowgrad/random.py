"""fg.random: random draws as graph nodes (``normal``, ``uniform``, ``bernoulli``).

    noise = fg.random.normal((None, 8), like=x, seed=0)   # rows: as many as x has at run time
    keep = fg.random.bernoulli((None, 64), p=0.9, like=h)

Each node is a *stateful* op: every run of a program draws fresh values, and the
simplifier never folds it nor merges two of them (``Op(stateful=True)``). Within one
run a node is evaluated once, so everything that reads it — a forward product and
its gradient — sees the same draw; a trace records the values that were used.

Where the generator state lives: each node owns a :class:`Stream`, seeded from the
node's seed, holding one generator per array namespace (numpy, cupy, dask.array each
have their own bit generators, so a seed gives reproducible, not identical, draws
across backends). The k-th run of any program holding the node gets the k-th draw of
its stream, so a seeded graph replays the same sequence of draws in every fresh
process. The seed is the ``seed=`` argument, else one derived from the graph's seed
(:func:`set_seed`) and the node's position among the graph's random nodes, else
fresh entropy from the operating system.

Shapes: a ``None`` length is taken at run time from the same axis of ``like``
(``shape=None`` takes like's whole shape). The derivative of a draw with respect to
anything is zero by definition.
"""
from __future__ import annotations

import contextlib
import copy
import math
import numbers
import threading
import weakref

import numpy as np

from .dtypes import as_dtype
from .errors import ArgumentError, ShapeError, UsageError
from .graph import Node, default_graph
from .ops.base import NONDIFF, Op, apply, as_node, fmt_shape, user_line

__all__ = ["normal", "uniform", "bernoulli", "set_seed", "get_seed", "Stream", "DrawTape"]


class Stream:
    """One random node's generators, one per array namespace, all from one seed."""

    def __init__(self, seed: int):
        self.seed = int(seed)
        self._generators: dict = {}

    def generator(self, xp):
        key = getattr(xp, "__name__", None) or id(xp)
        gen = self._generators.get(key)
        if gen is None:
            rand = getattr(xp, "random", None)
            if rand is None or not hasattr(rand, "default_rng"):
                raise TypeError(f"the array namespace {key!r} has no random.default_rng")
            # setdefault: two threads' first draws must share one generator (each
            # making its own handed both the stream's first draw, the same numbers)
            gen = self._generators.setdefault(key, rand.default_rng(self.seed))
        return gen

    def reset(self):
        """Start every namespace's sequence over from the seed."""
        self._generators.clear()

    def copy(self) -> "Stream":
        """A stream at this one's position: the same next draws, moving on its own
        (fg.precision_audit runs its copies of a graph on copies of the streams)."""
        twin = Stream(self.seed)
        twin._generators = {k: copy.deepcopy(g) for k, g in self._generators.items()}
        return twin

    def __reduce__(self):  # a copy (a saved graph) starts its sequence over
        return (Stream, (self.seed,))

    def __repr__(self):
        return f"Stream(seed={self.seed})"


# -- seeds --------------------------------------------------------------------------------

class _Seeding:
    """A graph's seed and how many seeds have been derived from it, by purpose."""

    __slots__ = ("seed", "counts")

    def __init__(self, seed):
        self.seed = seed
        self.counts: dict[str, int] = {}


# {graph: _Seeding}: a side table owned by this module, not attributes set on Graph
_SEEDS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
# deriving a seed reads a count and writes it back: two threads building random nodes
# (or layers) into one graph must not both take the same count, hence the same seed
_SEEDS_LOCK = threading.Lock()


def set_seed(seed, graph=None) -> None:
    """Seed ``graph`` (default: the current one): random nodes and layer initialisers
    built afterwards without their own seed derive one from it, in build order.
    ``seed``: a non-negative int, or None to unseed."""
    if seed is not None:
        seed = checked_seed(seed, "fg.random.set_seed: the seed")
    _SEEDS[graph if graph is not None else default_graph()] = _Seeding(seed)


def checked_seed(seed, what) -> int:
    """``seed`` as an int, or a UsageError (a TypeError) at the user's line: a float, a
    bool or a string is not truncated or parsed into a seed, and a negative int, which
    numpy's SeedSequence refuses only when a seed is first derived, is refused here."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral) or \
            seed < 0:
        raise UsageError(f"{what} must be a non-negative int, got {seed!r}{_at()}")
    return int(seed)


def get_seed(graph=None):
    """The graph's seed, or None."""
    seeding = _SEEDS.get(graph if graph is not None else default_graph())
    return None if seeding is None else seeding.seed


def derived_seed(graph, purpose: str):
    """The next seed derived from the graph's seed for ``purpose`` ("random", "init"),
    or None when the graph has no seed. Deterministic across processes."""
    seeding = _SEEDS.get(graph)
    base = None if seeding is None else seeding.seed
    if base is None:
        return None
    counts = seeding.counts
    with _SEEDS_LOCK:
        k = counts.get(purpose, 0)
        counts[purpose] = k + 1
    tag = int.from_bytes(purpose.encode(), "little")
    return int(np.random.SeedSequence([base, tag, k]).generate_state(1, np.uint64)[0])


def _node_seed(seed, graph):
    if seed is None:
        seed = derived_seed(graph, "random")
    if seed is None:
        seed = np.random.SeedSequence().entropy  # fresh, but recorded on the node
    return checked_seed(seed, "a seed")


# -- the op ---------------------------------------------------------------------------------

def _size(shape, like):
    if like is None:
        return tuple(shape)
    if shape is None:
        return tuple(like.shape)
    return tuple(int(like.shape[i]) if s is None else s for i, s in enumerate(shape))


class DrawTape:
    """One run's draws, stream by stream in the order they were made, for runs that must
    see the same numbers (lockstep verify: the reference interpreter beside an executor,
    flowgrad/engine/lockstep.py). Inside ``recording()`` every draw of this thread is
    kept; inside ``replaying()`` each stream hands back its kept draws in order (a
    stream asked for more than were kept draws anew), and the streams do not move."""

    def __init__(self):
        self.draws: dict = {}      # {stream: [its draws, in order]}
        self._next: dict | None = None   # replaying: {stream: its next draw's index}
        self._outer = None   # the tape active around this one (a verified loop body's
        #                      inside a verified run): its new draws are that tape's

    @contextlib.contextmanager
    def recording(self):
        with self._active():
            yield self

    @contextlib.contextmanager
    def replaying(self):
        self._next = {}
        try:
            with self._active():
                yield self
        finally:
            self._next = None

    @contextlib.contextmanager
    def _active(self):
        before = getattr(_TAPE, "tape", None)
        self._outer = before if before is not self else None
        _TAPE.tape = self
        try:
            yield
        finally:
            _TAPE.tape = before

    def take(self, stream, fresh):
        """The draw for ``stream``: the next kept one (replaying), else ``fresh()`` (the
        enclosing tape's draw where one is active, so that nested tapes agree)."""
        if self._outer is not None:
            outer, made = self._outer, fresh
            fresh = lambda: outer.take(stream, made)   # noqa: E731
        kept = self.draws.setdefault(stream, [])
        if self._next is not None:
            k = self._next.get(stream, 0)
            if k < len(kept):
                self._next[stream] = k + 1
                return kept[k]
            return fresh()
        kept.append(fresh())
        return kept[-1]


_TAPE = threading.local()   # .tape: the DrawTape recording or replaying in this thread


def _draw(xp, *like, shape, dtype, dist, params, stream):
    tape = getattr(_TAPE, "tape", None)
    if tape is not None:
        return tape.take(stream, lambda: _fresh(xp, like, shape, dtype, dist, params, stream))
    return _fresh(xp, like, shape, dtype, dist, params, stream)


def _fresh(xp, like, shape, dtype, dist, params, stream):
    ref = like[0] if like else None
    size = _size(shape, ref)
    gen = stream.generator(xp)
    kw = {}
    if ref is not None and hasattr(ref, "chunks") and hasattr(ref, "compute"):
        # dask: draw in the chunks of the reference where the shapes agree
        kw["chunks"] = ref.chunks if tuple(ref.shape) == size else "auto"
    if dist == "normal":
        mean, std = params
        out = gen.standard_normal(size, **kw)
        out = out * std + mean if (mean, std) != (0.0, 1.0) else out
    else:
        u = gen.random(size, **kw)
        if dist == "uniform":
            low, high = params
            out = u * (high - low) + low if (low, high) != (0.0, 1.0) else u
        else:  # bernoulli: 1 with probability p
            out = u < params[0]
    return out.astype(dtype) if out.dtype != dtype else out


def _random_op(dist, doc):
    op = Op(f"random_{dist}", _draw,
            lambda *like, shape, dtype, dist, params, stream:
            (shape if shape is not None else like[0].shape, dtype),
            vjp=(NONDIFF,), jvp=(NONDIFF,), stateful=True,
            doc=doc + " Fresh every run; zero derivative with respect to the shape "
                      "reference ``like``.")
    op.check_attrs = _check_attrs
    return op


def _check_attrs(*like, shape, dtype, dist, params, stream):
    """What the builders guarantee, for a graph file's record (io/opsig.py): the
    parameters, dtype and seed they accept, and a None length only with a ``like`` of
    as many axes (a file's std of −1 or NaN, p of 2, int normal draws or seed of −5
    were drawn from, or failed only when run)."""
    _check_params(dist, dist, params)
    _check_dtype(dist, dist, dtype)
    checked_seed(stream.seed, f"fg.random.{dist}: the seed")
    from_like = shape is None or None in shape
    if len(like) > 1 or (from_like and not like) or \
            (shape is not None and None in shape and len(shape) != len(like[0].shape)):
        raise ShapeError(f"fg.random.{dist}: shape {shape} needs like= a node of as many "
                         "axes for its run-time lengths")


#: one op per distribution, so drawings and plans name what is drawn
_OPS = {"normal": _random_op("normal", "Normal draws N(mean, std²)."),
        "uniform": _random_op("uniform", "Uniform draws on [low, high)."),
        "bernoulli": _random_op("bernoulli", "1 with probability p, else 0.")}


def _at():
    where = user_line()
    return f"\n  at {where}" if where else ""


def _check_shape(shape, like, what):
    if shape is None:
        if like is None:
            raise ShapeError(f"fg.random.{what}: give a shape, or like= a node to copy "
                             f"it from{_at()}")
        return None
    shape = (shape,) if isinstance(shape, (numbers.Integral,)) or shape is None else tuple(shape)
    for s in shape:
        if s is not None and (not isinstance(s, numbers.Integral) or s < 0):
            raise ShapeError(f"fg.random.{what}: shape entries must be non-negative ints or "
                             f"None, got {shape}{_at()}")
    shape = tuple(None if s is None else int(s) for s in shape)
    if None in shape:
        if like is None:
            raise ShapeError(f"fg.random.{what}: shape {fmt_shape(shape)} has a run-time "
                             f"length (None); pass like= a node whose shape supplies it"
                             f"{_at()}")
        if len(shape) != len(like.shape):
            raise ShapeError(f"fg.random.{what}: shape {fmt_shape(shape)} takes its None "
                             f"lengths from like={like.name} {fmt_shape(like.shape)}, which "
                             f"has another number of axes{_at()}")
        # a None copies like's length, which may itself be static
        shape = tuple(like.shape[i] if s is None else s for i, s in enumerate(shape))
    return shape


def _make(what, dist, params, shape, like, dtype, seed, name):
    like = as_node(like) if like is not None else None
    if like is not None and like.weak:
        raise UsageError(f"fg.random.{what}: like= is a node or an array whose shape the "
                         f"draw copies, not the Python scalar {like.value!r}{_at()}")
    shape = _check_shape(shape, like, what)
    if dtype is None:
        dtype = like.dtype if like is not None and like.dtype.kind == "f" else np.float64
    dtype = as_dtype(dtype, f"fg.random.{what}")
    _check_dtype(what, dist, dtype)
    graph = like.graph if like is not None else default_graph()
    attrs = dict(shape=shape, dtype=dtype, dist=dist, params=params,
                 stream=Stream(_node_seed(seed, graph)))
    with graph:
        node = apply(_OPS[dist], *([like] if like is not None else []), **attrs)
    if name:
        node.named(name)
    return node


#: each distribution's parameters, by name
_PARAMS = {"normal": ("mean", "std"), "uniform": ("low", "high"), "bernoulli": ("p",)}


def _check_params(what, dist, params):
    """Refuse parameters the distribution does not take: each a finite number (a
    UsageError, a TypeError, otherwise), std ≥ 0, low ≤ high, 0 ≤ p ≤ 1 (an
    ArgumentError, a ValueError) — at the user's line."""
    for k, v in zip(_PARAMS[dist], params):
        if isinstance(v, Node) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            raise UsageError(f"fg.random.{what}: {k} must be a finite number, got {v!r}"
                             f"{_at()}")
    if dist == "normal" and params[1] < 0:
        raise ArgumentError(f"fg.random.normal: std must be ≥ 0, got {params[1]}{_at()}")
    if dist == "uniform" and not params[0] <= params[1]:
        raise ArgumentError(f"fg.random.uniform: need low ≤ high, got {params[0]} and "
                            f"{params[1]}{_at()}")
    if dist == "bernoulli" and not 0 <= params[0] <= 1:
        raise ArgumentError(f"fg.random.bernoulli: p must lie in [0, 1], got {params[0]}"
                            f"{_at()}")


def _check_dtype(what, dist, dtype):
    if dtype.kind not in ("f", "b") and not (dist == "bernoulli" and dtype.kind in "iu"):
        raise UsageError(f"fg.random.{what}: dtype must be a float"
                         f"{' (or bool or int)' if dist == 'bernoulli' else ''}, got "
                         f"{dtype}{_at()}")


def normal(shape=None, mean=0.0, std=1.0, *, like=None, dtype=None, seed=None, name=None):
    """Normal draws N(mean, std²) of ``shape`` (``None`` lengths from ``like``)."""
    _check_params("normal", "normal", (mean, std))
    return _make("normal", "normal", (float(mean), float(std)), shape, like, dtype, seed, name)


def uniform(shape=None, low=0.0, high=1.0, *, like=None, dtype=None, seed=None, name=None):
    """Uniform draws on [low, high) of ``shape`` (``None`` lengths from ``like``)."""
    _check_params("uniform", "uniform", (low, high))
    return _make("uniform", "uniform", (float(low), float(high)), shape, like, dtype, seed, name)


def bernoulli(shape=None, p=0.5, *, like=None, dtype=None, seed=None, name=None):
    """1 with probability ``p``, else 0 (``dtype=bool`` for a mask of True/False)."""
    _check_params("bernoulli", "bernoulli", (p,))
    return _make("bernoulli", "bernoulli", (float(p),), shape, like, dtype, seed, name)


def __dir__():
    # the public names only: dir(fg.random) shows no np, math or threading
    return sorted(__all__)
