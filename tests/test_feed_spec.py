"""One feed spec (flowgrad/engine/feeds.py), two renderings cross-checked on fuzzed
feeds: the generated binder (codegen.fast_binder, keywords and a dict of feeds) and
the reference (Program.bind, with FeedSpec.plain and the length check). Where the
generated binder accepts, the reference binds the very same values; where it refuses
a length, the reference raises the same FeedError; it gives up (None) exactly where
the spec's reference predicate says a feed is not plain."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import flowgrad as fg
from flowgrad.engine import codegen
from flowgrad.engine.feeds import FeedSpec


def _program():
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 3))
        y = fg.placeholder("y", shape=(None, 3))
        z = fg.placeholder("z", shape=(None,))
        s = fg.placeholder("s")
        w = fg.variable(np.ones(3), name="w")
        out = fg.sum(x * y * w, axis=1) + z * s
        return fg.compile([out, fg.grad(fg.sum(out), x)])


PROG = _program()
SPEC = PROG.feed_spec
DECLARED = {leaf.name: leaf for leaf in SPEC.placeholders}


@st.composite
def feeds(draw):
    n = draw(st.integers(0, 3))            # the run-time length most feeds share
    out = {}
    for name, leaf in DECLARED.items():
        kind = draw(st.sampled_from(["ok", "ok", "ok", "length", "dtype", "rank", "fixed",
                                     "list", "float", "npfloat", "0d"]))
        shape = [n if d is None else d for d in leaf.shape]
        if kind == "length" and None in leaf.shape:
            shape[leaf.shape.index(None)] = draw(st.integers(0, 4))   # may disagree
        elif kind == "rank":
            shape = shape + [1]
        elif kind == "fixed" and leaf.fixed:
            shape[leaf.fixed[0][0]] += draw(st.sampled_from([-1, 1]))
        dtype = draw(st.sampled_from([np.float32, np.int64, np.float16])) \
            if kind == "dtype" else np.float64
        value = np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape) * 0.5
        if kind == "list":
            value = value.tolist()
        elif kind == "float":
            value = 1.5
        elif kind == "npfloat":
            value = np.float64(1.5)
        elif kind == "0d":
            value = np.asarray(1.5)
        out[name] = value
    return out


def _outcome(fn):
    try:
        return "ok", fn()
    except fg.FeedError as e:   # (its last line names the caller's line: each its own)
        return "refused", str(e).splitlines()[0]


def _agree(fast, ref):
    kind, got = fast
    if kind == "ok" and got is None:
        return                             # given up: the general binder decides
    assert ref[0] == kind, (fast, ref)
    if kind == "refused":
        assert got == ref[1]
        return
    for s in PROG.plan.leaves.values():    # (the generated slot list holds the leaves)
        v = ref[1][s]
        assert type(got[s]) is type(v) and got[s].dtype == v.dtype
        np.testing.assert_array_equal(got[s], v)


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(feeds())
def test_the_generated_binder_and_the_reference_agree_on_fuzzed_feeds(feed):
    bind = codegen.fast_binder(PROG)
    assert bind is not None
    ref = _outcome(lambda: PROG.bind((), dict(feed)))
    by_keyword = _outcome(lambda: bind((), dict(feed)))
    by_dict = _outcome(lambda: bind((dict(feed),), {}))
    for fast in (by_keyword, by_dict):
        _agree(fast, ref)
    plain = all(FeedSpec.plain(DECLARED[k], v) is not None for k, v in feed.items())
    # the generated rendering gives up exactly where the reference predicate does
    assert (by_keyword == ("ok", None)) == (not plain)
    assert (by_dict == ("ok", None)) == (not plain)


def test_a_length_disagreement_is_refused_by_both_renderings_at_the_boundary():
    bind = codegen.fast_binder(PROG)
    base = {"x": np.ones((2, 3)), "y": np.ones((2, 3)), "z": np.ones(2), "s": 1.0}
    assert bind((), dict(base)) is not None
    for name, bad in (("y", np.ones((3, 3))), ("z", np.ones(3)), ("z", np.ones(1))):
        feed = dict(base, **{name: bad})
        with pytest.raises(fg.FeedError) as fast:
            bind((), feed)
        with pytest.raises(fg.FeedError) as ref:
            PROG.bind((), feed)
        # (the same message; each names its own caller's line last)
        assert str(fast.value).splitlines()[0] == str(ref.value).splitlines()[0]
        assert "run-time lengths disagree" in str(ref.value)


def test_the_spec_is_declared_once_per_program():
    assert [leaf.name for leaf in SPEC.placeholders] == list(
        p.name for p in PROG.placeholders.values())
    assert {leaf.slot for leaf in SPEC.placeholders} | {s for s, _ in SPEC.variables} == \
        set(PROG.plan.leaves.values())
    assert SPEC.lengths is PROG.check_lengths is not None
    s = DECLARED["s"]
    assert s.float_scalar and not DECLARED["x"].float_scalar
    assert DECLARED["x"].fixed == ((1, 3),) and DECLARED["z"].fixed == ()
