"""fg.viz.draw(err) for a NumericsError (issue 23): exactly the path from the cause to the
culprit, each node with its value, the culprit red with its op at the first bad entry in
numbers, an inherited NaN/Inf drawn as inherited, and the explanation as the caption."""
import html
import re
import warnings

import numpy as np
import pytest

import flowgrad as fg
from flowgrad.viz import anomaly
from flowgrad.viz.dot import CULPRIT, INHERITED


def _caught(outputs, feed):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(fg.NumericsError) as info:
            fg.compile(outputs, check_numerics=True)(feed)
    return info.value


def _label(line):
    """The visible text of a box's label (HTML-like or quoted)."""
    m = re.search(r"label=<(.*?</TABLE>)>", line, flags=re.S) or \
        re.search(r'label="(.*?)" ', line, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", m.group(1))).split())


def _drawn(err, **limits):
    """({node id: the visible text of its box}, {node id: its DOT statement}, the caption),
    drawn with ``limits`` (depth, max_nodes)."""
    src = fg.viz.draw(err, **limits).source
    statements = src.split("\n\t")            # a quoted label may span lines
    lines = {int(m.group(1)): st for st in statements
             for m in [re.match(r"n(\d+) \[", st)] if m}
    texts = {i: _label(st) for i, st in lines.items()}
    caption = re.search(r'label="([^"]*?)" labeljust', src, flags=re.S)
    return texts, lines, caption.group(1).replace("\\l", " ") if caption else ""


def _ids(*nodes):
    return {n.id for n in nodes}


@pytest.fixture
def g():
    with fg.Graph() as graph:
        yield graph


def test_sqrt_at_zero_in_a_norms_gradient_draws_the_zero_from_x_to_the_division(g):
    x = fg.placeholder("x", (3,))
    xx = x * x
    s = fg.sum(xx)
    norm = fg.sqrt(s).named("norm")
    err = _caught(fg.grad(norm, x), {x: np.zeros(3)})
    div, denominator = err.node, err.node.inputs[1]     # v̄ / (2 · norm): 1 / 0
    assert div.op.name == "div" and denominator.op.name == "mul"
    assert norm in denominator.inputs
    texts, lines, caption = _drawn(err)
    # the zero vector, its square, their sum, its root, twice the root, the division:
    # not the seed 1, nor the rest of the backward graph (broadcast, x̄'s products)
    assert set(texts) == _ids(x, xx, s, norm, denominator, div)
    assert len(err.trace.nodes) > len(texts) + 4
    assert "div(1, 0) = inf" in texts[div.id] and CULPRIT in lines[div.id]
    assert texts[x.id] == "x placeholder (3,) [0 0 0]" and texts[norm.id] == "norm sqrt 0"
    assert [i for i, ln in lines.items() if CULPRIT in ln] == [div.id]
    assert f"backward: in v̄ of {s.name!r}" in texts[denominator.id]   # v̄ of s: 1 / (2 √s)
    assert "backward" not in texts[norm.id]
    assert "sqrt at 0 in the backward pass" in caption and "'norm'" in caption
    assert "sqrt(s + 1e-12)" in caption


def test_untaken_where_branch_in_the_backward_pass(g):
    x = fg.placeholder("x", (2,))
    root = fg.sqrt(x)
    y = fg.where(x > 0, root, 0.0)                 # forward finite at 0: sqrt(0) = 0
    err = _caught(fg.grad(fg.sum(y), x), {x: np.array([0.0, 4.0])})
    div = err.node
    routed, denominator = div.inputs                # where(c, v̄, 0) / (2 · sqrt(x))
    assert routed.op.name == "where" and denominator.op.name == "mul"
    texts, lines, caption = _drawn(err)
    assert set(texts) == _ids(x, root, denominator, routed, div)
    assert "at [0]: div(0, 0) = nan" in texts[div.id]
    assert "[0 4]" in texts[x.id] and "[0 2]" in texts[root.id]
    assert "[0 1]" in texts[routed.id] and "[nan 0.25]" in texts[div.id]
    assert "untaken where branch" in caption and "0 / 0 = NaN" in caption
    assert "double where" in caption


def test_untaken_where_branch_forward_draws_the_where_that_was_not_run(g):
    x = fg.placeholder("x", (3,))
    logx = fg.log(x).named("logx")
    safe = fg.where(x > 0, logx, 0.0).named("safe_log")   # x > 0: built after, not run
    loss = fg.sum(safe)
    err = _caught([loss, fg.grad(loss, x)], {x: np.array([-1.0, 0.5, 2.0])})
    assert err.node is logx
    texts, lines, caption = _drawn(err)
    assert set(texts) == _ids(x, logx, safe)
    assert "at [0]: log(-1) = nan" in texts[logx.id]
    assert "not run: the check stopped at the culprit" in texts[safe.id]
    assert "the where 'safe_log' discards it" in caption


def test_a_masked_row_draws_the_mask_inherited_and_the_log_as_the_one_culprit(g):
    z = fg.placeholder("z", (2, 3))
    mask = fg.constant(np.array([[0.0, 0.0, 0.0], [-np.inf, -np.inf, -np.inf]]))
    masked = (z + mask).named("masked")          # −inf: inherited from the mask
    e = fg.exp(masked)                           # exp(−inf) = 0: finite again
    total = fg.sum(e, axis=1)
    lse = fg.log(total).named("lse")             # log 0: the culprit
    other = fg.tanh(z)                           # not on the path
    err = _caught(fg.sum(lse) + fg.sum(other), {z: np.ones((2, 3))})
    assert err.node is lse
    texts, lines, caption = _drawn(err)
    assert set(texts) == _ids(mask, masked, e, total, lse)
    assert [i for i, ln in lines.items() if CULPRIT in ln] == [lse.id]
    assert INHERITED in lines[masked.id] and "NaN/Inf inherited" in texts[masked.id]
    assert "NaN/Inf here" not in texts[masked.id]
    assert INHERITED in lines[mask.id] and "holds NaN/Inf" in texts[mask.id]
    assert "at [1]: log(0) = -inf" in texts[lse.id] and "[8.155 0]" in texts[total.id]
    assert "log at 0" in caption and "log_softmax" in caption


def test_exp_overflow_caption_gives_the_input_and_the_limit(g):
    z = fg.placeholder("z", (2,))
    y = fg.exp(z)
    err = _caught(fg.sum(y * 2.0), {z: np.array([1.0, 710.0])})
    texts, _, caption = _drawn(err)
    assert set(texts) == _ids(z, y)
    assert "at [1]: exp(710) = inf" in texts[y.id]
    limit = np.log(np.finfo(np.float64).max)                  # 709.78…
    assert f"{limit:.5g}" in caption and "reaches 710" in caption


def test_division_by_zero_draws_the_denominator_only(g):
    a = fg.placeholder("a", (2,))
    d = fg.placeholder("d", (2,))
    q = a / d
    err = _caught(fg.sum(q), {a: np.ones(2), d: np.array([1.0, 0.0])})
    texts, _, caption = _drawn(err)
    assert set(texts) == _ids(d, q) and "at [1]: div(1, 0) = inf" in texts[q.id]
    assert "division by zero" in caption


def test_unrecognised_fed_and_traceless_errors(g):
    x = fg.placeholder("x", ())
    big = x * 1e308
    y = big * 10.0
    err = _caught(y, {x: 1.0})                     # overflow in a product: no known trap
    texts, _, caption = _drawn(err)
    assert set(texts) == _ids(big, y) and "mul(1e+308, 10) = inf" in texts[y.id]
    assert "no known trap recognised" in caption
    fed = _caught(x * 2.0, {x: np.nan})
    texts, lines, caption = _drawn(fed)
    assert set(texts) == {x.id} and CULPRIT in lines[x.id] and "fed" in caption
    with pytest.raises(fg.UsageError, match="carries no trace"):
        fg.viz.draw(fg.NumericsError("a loss of nan"))


def test_a_nan_in_a_loop_body_draws_the_bodys_path(g):
    xs = fg.placeholder("xs", (None,))
    hT, _ = fg.scan(lambda h, x: (fg.log(x) + h, None), fg.constant(0.0), xs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with fg.detect_anomaly(), pytest.raises(fg.NumericsError, match="iteration 2") as info:
            fg.compile(hT)(xs=np.array([1.0, 2.0, -1.0, 3.0]))
    err = info.value                       # raised at the loop node: the body's is its cause
    assert err.trace is None and err.__cause__.trace is not None
    body = err.__cause__.node
    texts, lines, caption = _drawn(err)
    assert set(texts) == {body.id, body.inputs[0].id}   # the body's x, log(x)
    assert "log(-1) = nan" in texts[body.id]
    assert caption.startswith(f"in the body of the loop {err.node.name!r}:")
    assert "log of a negative number" in caption


def test_the_path_is_bounded_on_a_long_chain_of_zeros(g):
    x = fg.placeholder("x", (2,))
    h = x
    for _ in range(60):
        h = h * 1.5                               # a zero passed down 60 times
    err = _caught(fg.sum(1.0 / h), {x: np.array([1.0, 0.0])})
    texts, _, _ = _drawn(err)
    assert len(texts) == anomaly.MAX_NODES and err.node.id in texts


@pytest.mark.skipif(not fg.viz.dot_available(), reason="needs Graphviz's dot")
def test_the_path_renders_with_its_caption(g):
    x = fg.placeholder("x", (3,))
    norm = fg.sqrt(fg.sum(x * x)).named("norm")
    err = _caught(fg.grad(norm, x), {x: np.zeros(3)})
    svg = fg.viz.draw(err).pipe(format="svg").decode()
    assert "likely cause (sqrt at 0 in the backward pass)" in svg
    assert "div(1, 0) = inf" in svg


def _zero_chain():
    """x → h1 → h2 → h3 → 1 / h3: a zero fed at x, passed down three products, divided by."""
    x = fg.placeholder("x", (2,))
    h1 = (x * 1.5).named("h1")
    h2 = (h1 * 2.0).named("h2")
    h3 = (h2 * 3.0).named("h3")
    q = (1.0 / h3).named("q")
    return x, [h1, h2, h3], q


def test_depth_counts_from_the_culprit_up_to_the_cause(g):
    # issue h27: depth was counted from the trace's outputs, which are not on the path,
    # so every depth drew nothing
    x, (h1, h2, h3), q = _zero_chain()
    err = _caught(fg.sum(q), {x: np.array([1.0, 0.0])})
    assert err.node is q
    full, _, _ = _drawn(err)
    assert set(full) == _ids(x, h1, h2, h3, q)
    expected = [_ids(q), _ids(q, h3), _ids(q, h3, h2), _ids(q, h3, h2, h1),
                _ids(q, h3, h2, h1, x), _ids(q, h3, h2, h1, x)]
    for depth, want in enumerate(expected):
        texts, lines, caption = _drawn(err, depth=depth)
        assert set(texts) == want, depth
        assert CULPRIT in lines[q.id] and "div(1, 0) = inf" in texts[q.id]
        assert "division by zero" in caption          # the caption is kept at every depth
    texts, lines, _ = _drawn(err, max_nodes=1)
    assert set(texts) == _ids(q)
    texts, lines, _ = _drawn(err, depth=1, max_nodes=3)
    assert set(texts) == _ids(q, h3)


def test_depth_cut_marks_the_hidden_input_of_the_path(g):
    x, (h1, h2, h3), q = _zero_chain()
    err = _caught(fg.sum(q), {x: np.array([1.0, 0.0])})
    src = fg.viz.draw(err, depth=1).source
    assert re.search(rf"x{h3.id} \[label=\"⋯ 1\"", src)       # h2, cut, shown as ⋯
    assert f"x{q.id} " not in src                              # q's other input: a constant


def test_depth_reaches_a_where_below_the_culprit(g):
    x = fg.placeholder("x", (3,))
    logx = fg.log(x).named("logx")
    safe = fg.where(x > 0, logx, 0.0).named("safe_log")
    loss = fg.sum(safe)
    err = _caught([loss, fg.grad(loss, x)], {x: np.array([-1.0, 0.5, 2.0])})
    assert set(_drawn(err, depth=0)[0]) == _ids(logx)
    assert set(_drawn(err, depth=1)[0]) == _ids(x, logx, safe)


def test_depth_in_a_loop_body_draws_the_body_culprit(g):
    xs = fg.placeholder("xs", (None,))
    hT, _ = fg.scan(lambda h, x: (fg.log(x) + h, None), fg.constant(0.0), xs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with fg.detect_anomaly(), pytest.raises(fg.NumericsError) as info:
            fg.compile(hT)(xs=np.array([1.0, 2.0, -1.0, 3.0]))
    body = info.value.__cause__.node
    assert set(_drawn(info.value, depth=0)[0]) == {body.id}
    assert set(_drawn(info.value, depth=1)[0]) == {body.id, body.inputs[0].id}


def test_a_negative_or_fractional_depth_is_refused_naming_it(g):
    x, _, q = _zero_chain()
    err = _caught(fg.sum(q), {x: np.array([1.0, 0.0])})
    assert set(_drawn(err, depth=0)[0]) == _ids(q)                  # 0: the boundary
    assert set(_drawn(err, depth=np.int64(0))[0]) == _ids(q)
    for bad in (-1, 1.5, 2.0, True, "2"):
        with pytest.raises(fg.UsageError, match=rf"depth must be a non-negative int or "
                                                rf"None, got {re.escape(repr(bad))}"):
            fg.viz.draw(err, depth=bad)
    with pytest.raises(fg.UsageError, match="max_nodes must be an int >= 1 .*got 0"):
        fg.viz.draw(err, max_nodes=0)
    with pytest.raises(fg.UsageError, match="depth .* got -1"):   # a plain graph too
        fg.viz.draw([q], depth=-1)
    assert f"n{q.id} " in fg.viz.draw([q], depth=0).source

