"""Issue 21: fg.stop_gradient, @fg.custom_vjp and @fg.custom_jvp — values, first and
second derivatives in both modes against closed forms (and central differences through
check_grads), drawings, graph files, ONNX, and the errors at their boundaries."""
import numpy as np
import pytest

import flowgrad as fg
from flowgrad.custom import registered

RTOL = 1e-12
X = np.array([0.3, -1.2, 2.0])
V = np.array([0.5, 1.5, -0.25])


def sigmoid(x):
    from scipy.special import expit
    return expit(x)


# -- stop_gradient ---------------------------------------------------------------------------

def test_stop_gradient_value_and_no_derivative_in_either_mode():
    with fg.Graph():
        x = fg.placeholder("x", shape=(3,))
        s = fg.sum(fg.stop_gradient(x) * x * x)          # d/dx = sg(x) · 2x = 2x², not 3x²
        g = fg.grad(s, x)
        d = fg.jvp(s, x, V)
        h_fr = fg.hvp(s, x, V)
        h_rr = fg.hvp(s, x, V, mode="rev-rev")
        J = fg.jacobian(fg.stop_gradient(x) * x, x)
        vals = fg.run([s, g, d, h_fr, h_rr, J], {x: X})
    np.testing.assert_allclose(vals[0], np.sum(X ** 3), rtol=RTOL)
    np.testing.assert_allclose(vals[1], 2 * X ** 2, rtol=RTOL)
    np.testing.assert_allclose(vals[2], np.sum(2 * X ** 2 * V), rtol=RTOL)
    np.testing.assert_allclose(vals[3], 2 * X * V, rtol=RTOL)     # H = diag(2 sg(x))
    np.testing.assert_allclose(vals[4], 2 * X * V, rtol=RTOL)
    np.testing.assert_allclose(vals[5], np.diag(X), rtol=RTOL)


def test_stop_gradient_of_a_0d_value_and_a_constant_path():
    with fg.Graph():
        a = fg.placeholder("a")
        y = fg.stop_gradient(a) * fg.sin(a)
        g = fg.grad(y, a)
        out = fg.run([y, g], {a: 0.7})
        ref = fg.compile([y, g], codegen=False)(a=0.7)
    np.testing.assert_allclose(out, [0.7 * np.sin(0.7), 0.7 * np.cos(0.7)], rtol=RTOL)
    np.testing.assert_allclose(ref, out, rtol=0, atol=0)
    with fg.Graph():
        a = fg.placeholder("a")
        assert fg.run(fg.grad(fg.stop_gradient(a) * 2.0, a), {a: 1.0}) == 0.0


def test_stop_gradient_never_hands_back_the_callers_array():
    with fg.Graph():
        x = fg.placeholder("x", shape=(3,))
        out = fg.run(fg.stop_gradient(x), {x: X.copy()})
    feed = X.copy()
    with fg.Graph():
        x = fg.placeholder("x", shape=(3,))
        out = fg.run(fg.stop_gradient(x), {x: feed})
    out[0] = 99.0
    np.testing.assert_array_equal(feed, X)


def test_check_grads_passes_a_target_network_and_names_a_stop_gradient_on_the_path():
    with fg.Graph():
        w = fg.placeholder("w", shape=(3,))
        target = fg.placeholder("target", shape=(3,))
        loss = fg.sum((fg.tanh(w) - fg.stop_gradient(fg.sin(target))) ** 2)
        fg.check_grads(loss, [w], {w: X, target: V}, rtol=1e-8, atol=1e-9)   # target unchecked
        bad = fg.sum(fg.stop_gradient(w) * w)
        with pytest.raises(fg.GradientCheckError, match="stop_gradient"):
            fg.check_grads(bad, [w], {w: X, target: V}, order=1)


def test_stop_gradient_draws_and_round_trips_a_graph_file(tmp_path):
    with fg.Graph():
        x = fg.placeholder("x", shape=(3,))
        y = fg.sum(fg.stop_gradient(x) * fg.exp(x))
        g = fg.grad(y, x)
        assert "stop_gradient" in fg.viz.draw(y).source
        path = fg.save_graph(tmp_path / "sg.fg", [y, g])
        want = fg.run([y, g], {x: X})
    g2 = fg.load_graph(path)
    y2, x2 = g2.by_name(y.name), g2.by_name("x")
    got = fg.run([y2, fg.grad(y2, x2)], {x2: X})
    np.testing.assert_allclose(got[0], want[0], rtol=RTOL)
    np.testing.assert_allclose(got[1], want[1], rtol=RTOL)       # a new gradient: no flow
    np.testing.assert_allclose(got[1], X * np.exp(X), rtol=RTOL)


def test_stop_gradient_exports_to_onnx_as_identity(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    with fg.Graph():
        x = fg.placeholder("x", shape=(3,))
        y = fg.stop_gradient(x) * fg.sin(x)
        g = fg.grad(fg.sum(y), x)
        path = fg.export_onnx([y, g], tmp_path / "sg.onnx")
    model = onnx.load(str(path))
    assert "Identity" in {n.op_type for n in model.graph.node}
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    yv, gv = sess.run(None, {"x": X})
    np.testing.assert_allclose(yv, X * np.sin(X), rtol=1e-12)
    np.testing.assert_allclose(gv, X * np.cos(X), rtol=1e-12)


# -- custom_vjp ------------------------------------------------------------------------------

@fg.custom_vjp
def scaled_sin(x, a):
    return a * fg.sin(x)


@scaled_sin.defvjp
def scaled_sin_vjp(g, ans, x, a):
    """x̄ = v̄ a cos x, ā = Σ v̄ sin x"""
    return g * a * fg.cos(x), fg.sum(g * fg.sin(x))


def test_custom_vjp_values_and_first_derivatives_in_both_modes():
    with fg.Graph():
        x = fg.placeholder("x", shape=(3,))
        a = fg.placeholder("a")
        y = scaled_sin(x, a)
        s = fg.sum(y * y)
        gx, ga = fg.grad(s, [x, a])
        dx = fg.jvp(s, x, V)          # forward mode: the vjp rule transposed
        da = fg.jvp(s, a, 0.5)
        vals = fg.run([y, gx, ga, dx, da], {x: X, a: 1.7})
    A = 1.7
    np.testing.assert_allclose(vals[0], A * np.sin(X), rtol=RTOL)
    np.testing.assert_allclose(vals[1], 2 * A ** 2 * np.sin(X) * np.cos(X), rtol=RTOL)
    np.testing.assert_allclose(vals[2], 2 * A * np.sum(np.sin(X) ** 2), rtol=RTOL)
    np.testing.assert_allclose(vals[3], np.sum(A ** 2 * np.sin(2 * X) * V), rtol=RTOL)
    np.testing.assert_allclose(vals[4], 0.5 * 2 * A * np.sum(np.sin(X) ** 2), rtol=RTOL)


def test_custom_vjp_second_derivatives_in_every_mode_and_check_grads():
    with fg.Graph():
        x = fg.placeholder("x", shape=(3,))
        a = fg.placeholder("a")
        s = fg.sum(scaled_sin(x, a) ** 2)
        feed = {x: X, a: 1.7}
        h_fr = fg.hvp(s, x, V)
        h_rr = fg.hvp(s, x, V, mode="rev-rev")
        H = fg.hessian(s, x)
        H_rev = fg.hessian(s, x, mode="rev")
        vals = fg.run([h_fr, h_rr, H, H_rev], feed)
        fg.check_grads(s, [x, a], feed, order=2, rtol=1e-8, atol=1e-9)
    diag = 2 * 1.7 ** 2 * np.cos(2 * X)              # d²/dx² a² sin² x
    for v in vals[:2]:
        np.testing.assert_allclose(v, diag * V, rtol=1e-12)
    for v in vals[2:]:
        np.testing.assert_allclose(v, np.diag(diag), rtol=1e-12, atol=1e-15)


@fg.custom_vjp
def clip_gradient(x):
    return x * 1.0


@clip_gradient.defvjp
def clip_gradient_vjp(g, ans, x):
    """x̄ = clip(v̄, −1, 1)"""
    return (fg.maximum(fg.minimum(g, 1.0), -1.0),)


def test_the_users_rule_is_what_both_modes_use_not_the_forwards_derivative():
    with fg.Graph():
        x = fg.placeholder("x", shape=(3,))
        s = fg.sum(clip_gradient(x) * np.array([3.0, 0.5, -2.0]))
        g = fg.grad(s, x)
        J = fg.jacobian(clip_gradient(x) * 4.0, x, mode="rev")
        vals = fg.run([s, g, J], {x: X})
    np.testing.assert_allclose(vals[1], [1.0, 0.5, -1.0], rtol=0)
    np.testing.assert_allclose(vals[2], np.eye(3), rtol=0)     # the rule at v̄ = 4 eₖ: 1
    with fg.Graph():
        x = fg.placeholder("x", shape=(3,))
        y = clip_gradient(x)
        # forward mode transposes the rule at a zero cotangent: ẏ = ẋ (clip is the identity
        # near 0, which is where a linear rule is read) — and check_grads says it is right
        np.testing.assert_allclose(fg.run(fg.jvp(fg.sum(y), x, V), {x: X}), V.sum(), rtol=RTOL)


def test_none_in_the_rule_means_no_gradient_for_that_input():
    @fg.custom_vjp
    def half(x, y):
        return x * y

    @half.defvjp
    def half_vjp(g, ans, x, y):
        return g * y, None

    with fg.Graph():
        x, y = fg.placeholder("x", shape=(3,)), fg.placeholder("y", shape=(3,))
        s = fg.sum(half(x, y))
        gx, gy = fg.grad(s, [x, y])
        dy = fg.jvp(s, y, V)
        vals = fg.run([gx, gy, dy], {x: X, y: V})
    np.testing.assert_allclose(vals[0], V, rtol=RTOL)
    np.testing.assert_array_equal(vals[1], np.zeros(3))
    assert vals[2] == 0.0


def test_check_grads_catches_a_wrong_rule_and_names_the_function():
    @fg.custom_vjp(name="tests.wrong_square")
    def square(x):
        return x * x

    @square.defvjp
    def square_vjp(g, ans, x):
        return (g * x,)                     # wrong: should be 2 g x

    with fg.Graph():
        x = fg.placeholder("x", shape=(3,))
        loss = fg.sum(fg.tanh(square(x)))
        with pytest.raises(fg.GradientCheckError) as err:
            fg.check_grads(loss, x, {x: X}, order=1)
    text = str(err.value)
    assert "tests.wrong_square" in text and "square_vjp" in text
    assert "disagrees with finite differences of its own forward" in text


def test_a_correct_rule_is_not_blamed():
    with fg.Graph():
        w = fg.placeholder("w", shape=(3,))
        loss = fg.sum(scaled_sin(w, 2.0) * fg.stop_gradient(w))
        with pytest.raises(fg.GradientCheckError) as err:
            fg.check_grads(loss, w, {w: X}, order=1)
    assert "stop_gradient" in str(err.value) and "scaled_sin" not in str(err.value)


def test_name_and_registry():
    assert registered(f"{__name__}.scaled_sin") is scaled_sin
    assert scaled_sin.label == "scaled_sin" and scaled_sin.__doc__ == scaled_sin.fn.__doc__
    with pytest.raises(ValueError, match="non-empty string"):
        fg.custom_vjp(name="")
    assert fg.custom_jvp(lambda x: x, name="n" * 1000).name == "n" * 1000   # the limit
    with pytest.raises(ValueError, match="at most 1000"):
        fg.custom_jvp(lambda x: x, name="n" * 1001)
    with pytest.raises(ValueError, match="non-empty string"):
        fg.custom_vjp(lambda x: x, name=7)
    import functools
    part = fg.custom_vjp(functools.partial(lambda x, k: x * k, k=2.0))   # no __name__
    assert part.label == "partial" and part.name == "functools.partial"
    part.defvjp(lambda g, ans, x: (2.0 * g,))
    with fg.Graph():
        x = fg.placeholder("x", shape=(3,))
        np.testing.assert_allclose(fg.run(fg.grad(fg.sum(part(x)), x), {x: X}), 2.0)

    @fg.custom_vjp(name="tests.named")
    def f(x):
        return x

    assert registered("tests.named") is f and f.label == "tests.named"


# -- custom_jvp ------------------------------------------------------------------------------

@fg.custom_jvp
def log1pexp(x):
    return fg.maximum(x, 0.0) + fg.log1p(fg.exp(-fg.abs(x)))


@log1pexp.defjvp
def log1pexp_jvp(tangents, ans, x):
    """ẏ = σ(x) ẋ"""
    return tangents[0] * fg.sigmoid(x)


XL = np.array([-800.0, -3.0, 0.0, 0.5, 40.0, 800.0])


def test_custom_jvp_values_and_derivatives_in_both_modes():
    VL = np.linspace(-1.0, 1.0, XL.size)
    with fg.Graph():
        x = fg.placeholder("x", shape=XL.shape)
        y = log1pexp(x)
        s = fg.sum(y)
        g = fg.grad(s, x)                 # reverse mode: the jvp rule transposed
        d = fg.jvp(y, x, VL)
        h_fr = fg.hvp(s, x, VL)
        h_rr = fg.hvp(s, x, VL, mode="rev-rev")
        J = fg.jacobian(y, x)
        vals = fg.run([y, g, d, h_fr, h_rr, J], {x: XL})
    np.testing.assert_allclose(vals[0], np.logaddexp(0.0, XL), rtol=RTOL)
    np.testing.assert_allclose(vals[1], sigmoid(XL), rtol=RTOL, atol=1e-300)
    np.testing.assert_allclose(vals[2], sigmoid(XL) * VL, rtol=RTOL, atol=1e-300)
    second = sigmoid(XL) * (1 - sigmoid(XL))
    np.testing.assert_allclose(vals[3], second * VL, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(vals[4], second * VL, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(vals[5], np.diag(sigmoid(XL)), rtol=RTOL, atol=1e-300)
    assert np.all(np.isfinite(vals[1]))


def test_custom_jvp_with_two_inputs_against_torch_and_check_grads():
    torch = pytest.importorskip("torch")

    @fg.custom_jvp
    def layer(x, W):
        return fg.tanh(x @ W)

    @layer.defjvp
    def layer_jvp(tangents, ans, x, W):
        tx, tW = tangents
        return (tx @ W + x @ tW) * (1.0 - ans * ans)

    rng = np.random.default_rng(3)
    Xv, Wv = rng.standard_normal((2, 3)), rng.standard_normal((3, 4))
    with fg.Graph():
        x, W = fg.placeholder("x", shape=(2, 3)), fg.placeholder("W", shape=(3, 4))
        loss = fg.sum(layer(x, W) ** 2)
        gx, gW = fg.run(fg.grad(loss, [x, W]), {x: Xv, W: Wv})
        fg.check_grads(loss, [x, W], {x: Xv, W: Wv}, order=2, rtol=1e-8, atol=1e-9)
    xt = torch.tensor(Xv, requires_grad=True)
    Wt = torch.tensor(Wv, requires_grad=True)
    (torch.tanh(xt @ Wt) ** 2).sum().backward()
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(gW, Wt.grad.numpy(), rtol=1e-12)


def test_check_grads_catches_a_wrong_jvp_rule():
    @fg.custom_jvp(name="tests.wrong_exp")
    def my_exp(x):
        return fg.exp(x)

    @my_exp.defjvp
    def my_exp_jvp(tangents, ans, x):
        return tangents[0] * ans * 1.01

    with fg.Graph():
        x = fg.placeholder("x", shape=(3,))
        with pytest.raises(fg.GradientCheckError, match="tests.wrong_exp"):
            fg.check_grads(fg.sum(my_exp(x)), x, {x: X}, order=1)


# -- drawings ---------------------------------------------------------------------------------

def test_a_custom_function_draws_as_one_box_with_its_rule_on_the_edges():
    with fg.Graph():
        x = fg.placeholder("x", shape=(3,))
        y = fg.sum(clip_gradient(fg.exp(x)))
        src = fg.viz.draw(y).source
        assert 'id=g_clip_gradient' in src
        assert "x̄ = clip(v̄, −1, 1)" in src                 # the rule's docstring line
        assert "mul" not in src                               # the forward is boxed
        opened = fg.viz.draw(y, expand=True).source
        assert "mul" in opened and "cluster_clip_gradient" in opened


def test_a_rule_without_docstring_is_captioned_by_its_name():
    with fg.Graph():
        x = fg.placeholder("x", shape=(3,))
        a = fg.placeholder("a")
        src = fg.viz.draw(fg.sum(scaled_sin(x, a))).source
        assert "x̄ = v̄ a cos x, ā = Σ v̄ sin x" in src
        w = fg.placeholder("w", shape=(2, 3))
        src = fg.viz.draw(scaled_layer(w)).source
        assert "scaled_layer_vjp(…)" in src


@fg.custom_vjp
def scaled_layer(w):
    return 2.0 * w


@scaled_layer.defvjp
def scaled_layer_vjp(g, ans, w):
    return (2.0 * g,)


def test_a_trace_draws_the_box_with_values_and_adjoints():
    with fg.Graph():
        x = fg.placeholder("x")
        y = log1pexp(x) * 3.0
        tr = fg.compile(y).trace(x=0.5)
        src = fg.viz.draw(tr).source
    assert tr.adjoint(x) == pytest.approx(3.0 * sigmoid(0.5), rel=1e-12)
    assert "log1pexp" in src and "ẏ = σ(x) ẋ" in src


# -- graph files ------------------------------------------------------------------------------

def test_a_custom_function_round_trips_a_graph_file(tmp_path):
    with fg.Graph():
        x = fg.placeholder("x", shape=(3,))
        a = fg.placeholder("a")
        s = fg.sum(scaled_sin(x, a) ** 2) + fg.sum(log1pexp(x))
        path = fg.save_graph(tmp_path / "custom.fg", s)
        want = fg.run([s, *fg.grad(s, [x, a]), fg.hvp(s, x, V)], {x: X, a: 1.7})
    g2 = fg.load_graph(path)
    s2, x2, a2 = g2.by_name(s.name), g2.by_name("x"), g2.by_name("a")
    calls = [n for n in g2.nodes if n.op is not None and n.op.name == "custom_call"]
    assert {n.attrs["fn"] for n in calls} == {scaled_sin, log1pexp}
    got = fg.run([s2, *fg.grad(s2, [x2, a2]), fg.hvp(s2, x2, V)], {x2: X, a2: 1.7})
    for w, v in zip(want, got):
        np.testing.assert_allclose(v, w, rtol=RTOL)


def test_loading_refuses_an_unregistered_function_and_names_it(tmp_path):
    @fg.custom_vjp(name="tests.soon_gone")
    def gone(x):
        return fg.sin(x)

    @gone.defvjp
    def gone_vjp(g, ans, x):
        return (g * fg.cos(x),)

    with fg.Graph():
        x = fg.placeholder("x", shape=(3,))
        path = fg.save_graph(tmp_path / "gone.fg", gone(x))
    from flowgrad.custom import unregister
    unregister("tests.soon_gone")
    with pytest.raises(fg.GraphFileError, match="tests.soon_gone"):
        fg.load_graph(path)


def test_saving_refuses_a_function_redefined_under_its_name(tmp_path):
    def make():
        @fg.custom_vjp(name="tests.twice")
        def f(x):
            return x * 2.0

        @f.defvjp
        def f_vjp(g, ans, x):
            return (2.0 * g,)
        return f

    first = make()
    with fg.Graph():
        x = fg.placeholder("x", shape=(3,))
        y = first(x)
        make()
        with pytest.raises(fg.GraphFileError, match="tests.twice"):
            fg.save_graph(tmp_path / "twice.fg", y)


def test_a_custom_function_exports_its_forward_to_onnx(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    with fg.Graph():
        x = fg.placeholder("x", shape=(3,))
        y = clip_gradient(fg.sin(x))
        g = fg.grad(fg.sum(y * 5.0), x)          # the gradient program: the user's rule
        path = fg.export_onnx([y, g], tmp_path / "custom.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    yv, gv = sess.run(None, {"x": X})
    np.testing.assert_allclose(yv, np.sin(X), rtol=1e-12)
    np.testing.assert_allclose(gv, np.cos(X), rtol=1e-12)   # clip(5) = 1


# -- errors -----------------------------------------------------------------------------------

def _graph_x():
    g = fg.Graph()
    with g:
        x = fg.placeholder("x", shape=(3,))
    return g, x


def test_a_rule_returning_the_wrong_number_of_gradients_names_function_and_inputs():
    @fg.custom_vjp(name="tests.arity")
    def f(x, y):
        return x * y

    @f.defvjp
    def f_vjp(g, ans, x, y):
        return (g * y,)

    g, x = _graph_x()
    with g:
        y = fg.placeholder("y", shape=(3,))
        s = fg.sum(f(x, y))
        with pytest.raises(fg.DifferentiationError, match=r"tests.arity.*1 values.*2 inputs.*x, y"):
            fg.grad(s, x)
        with pytest.raises(fg.DifferentiationError, match="tests.arity"):
            fg.jvp(s, x, V)                      # forward mode runs the rule too


def test_a_rule_gradient_of_the_wrong_shape_names_the_argument():
    @fg.custom_vjp(name="tests.shape")
    def f(x, scale):
        return x * scale

    @f.defvjp
    def f_vjp(g, ans, x, scale):
        return g * scale, g * x                  # scale's gradient must be summed to ()

    g, x = _graph_x()
    with g:
        scale = fg.placeholder("scale")
        s = fg.sum(f(x, scale))
        for wrt in (scale, x):                    # a wrong rule is refused whatever is asked
            with pytest.raises(fg.DifferentiationError,
                               match=r"tests.shape.*'scale'.*\(3,\).*\(\)"):
                fg.grad(s, wrt)


def test_a_jvp_rule_of_the_wrong_shape_and_non_node_rules_are_refused():
    @fg.custom_jvp(name="tests.jshape")
    def f(x):
        return fg.sum(x)

    @f.defjvp
    def f_jvp(tangents, ans, x):
        return tangents[0]                      # (3,), but the output is ()

    @fg.custom_vjp(name="tests.notnode")
    def h(x):
        return x * 1.0

    @h.defvjp
    def h_vjp(g, ans, x):
        return (np.ones(3),)

    g, x = _graph_x()
    with g:
        with pytest.raises(fg.DifferentiationError, match=r"tests.jshape.*tangent.*\(3,\)"):
            fg.jvp(f(x), x, V)
        with pytest.raises(fg.DifferentiationError, match=r"tests.jshape"):
            fg.grad(f(x), x)
        with pytest.raises(fg.DifferentiationError, match=r"tests.notnode.*ndarray"):
            fg.grad(fg.sum(h(x)), x)


def test_no_rule_yet_closures_and_the_wrong_definer_are_refused():
    @fg.custom_vjp(name="tests.norule")
    def f(x):
        return x * 2.0

    g, x = _graph_x()
    with g:
        y = f(x)                                 # the forward needs no rule
        np.testing.assert_allclose(fg.run(y, {x: X}), 2 * X)
        with pytest.raises(fg.DifferentiationError, match="tests.norule.*no rule"):
            fg.grad(fg.sum(y), x)
        with pytest.raises(fg.DifferentiationError, match="defvjp, not defjvp"):
            f.defjvp(lambda t, ans, x: t[0])
        w = fg.placeholder("w", shape=(3,))

        @fg.custom_vjp(name="tests.closure")
        def c(x):
            return x * w                         # w is not an input: no gradient could reach it

        with pytest.raises(fg.DifferentiationError, match=r"tests.closure.*'w'"):
            c(x)

        @fg.custom_vjp(name="tests.constant_closure")
        def k(x):
            return x * np.array([1.0, 2.0, 3.0])  # a constant is fine

        assert k(x).shape == (3,)
        with pytest.raises(TypeError, match="positionally"):
            k(x=x)


def test_the_sweeps_never_walk_into_the_forward():
    """A custom rule is most needed where the forward's ops lack one: forward mode must
    not walk the forward's nodes (it would fail there, and build unused tangents)."""
    from flowgrad.ops import REGISTRY, Op, apply
    no_fwd = REGISTRY.get("test_custom_no_forward_rule") or Op(
        "test_custom_no_forward_rule", lambda xp, x: x * x, lambda x: (x.shape, x.dtype),
        vjp=(lambda g, ans, x: 2.0 * g * x,))

    @fg.custom_jvp(name="tests.wrapped")
    def square(x):
        return apply(no_fwd, x)

    @square.defjvp
    def square_jvp(tangents, ans, x):
        return 2.0 * x * tangents[0]

    with fg.Graph() as g:
        x = fg.placeholder("x", shape=(3,))
        with pytest.raises(fg.DifferentiationError, match="forward-mode"):
            fg.jvp(fg.sum(apply(no_fwd, x)), x, V)
        y = fg.sum(square(x))
        before = len(g)
        d = fg.jvp(y, x, V)
        assert len(g) - before < 12          # the rule's few nodes, nothing for the forward
        h = fg.hvp(y, x, V)
        vals = fg.run([y, d, h], {x: X})
    for got, want in zip(vals, [np.sum(X ** 2), 2 * X @ V, 2 * V]):
        np.testing.assert_allclose(got, want, rtol=RTOL)


@pytest.mark.parametrize("which", ["vjp", "jvp"])
def test_a_chain_of_custom_calls_differentiates_in_linear_time(which, monkeypatch):
    """The transposed rule's sweep visits only the rule's own nodes: summed over a chain of
    N calls, the ancestor walks stay O(graph), where a whole-graph walk per call was O(N²)."""
    act = fg.custom_vjp(lambda x: fg.tanh(x), name="tests.act_vjp") if which == "vjp" else \
        fg.custom_jvp(lambda x: fg.tanh(x), name="tests.act_jvp")
    if which == "vjp":
        act.defvjp(lambda g, ans, x: (g * (1.0 - ans * ans),))
    else:
        act.defjvp(lambda t, ans, x: t[0] * (1.0 - ans * ans))
    walked = []
    real = fg.Graph.ancestors
    monkeypatch.setattr(fg.Graph, "ancestors",
                        lambda self, ids: walked.append(len(r := real(self, ids))) or r)
    with fg.Graph() as g:
        x = fg.placeholder("x", shape=(2,))
        h = x
        for _ in range(300):
            h = act(h * 1.01)
        loss = fg.sum(h)
        walked.clear()
        grad = fg.grad(loss, x) if which == "jvp" else fg.jvp(loss, x, np.ones(2))
        assert sum(walked) < 3 * len(g), (sum(walked), len(g))
        value = fg.run(grad, {x: np.array([0.1, -0.2])})
    h = np.array([0.1, -0.2])
    d = np.ones(2)
    for _ in range(300):
        h = np.tanh(h * 1.01)
        d = d * 1.01 * (1 - h * h)
    np.testing.assert_allclose(value, d if which == "jvp" else d.sum(), rtol=1e-10)


# -- every execution path -------------------------------------------------------------------

def _mixed_graph(shape):
    x = fg.placeholder("x", shape=shape)
    y = scaled_sin(x, 1.5) + log1pexp(x) * fg.stop_gradient(fg.exp(x))
    y = fg.remat(lambda a, b: fg.tanh(a * b))(y, x)
    loss = fg.sum(clip_gradient(y) * 3.0)
    return x, [loss, fg.grad(loss, x), fg.hvp(loss, x, fg.ones_like(x))]


@pytest.mark.parametrize("shape", [(), (5,)])
def test_generated_code_reference_interpreter_and_dask_agree(shape):
    from flowgrad.backends.dask_backend import DaskBackend
    X = np.linspace(-1.0, 1.5, 5).reshape(shape) if shape else np.float64(0.7)
    with fg.Graph():
        x, outs = _mixed_graph(shape)
        gen = fg.compile(outs, codegen=True)
        ref = fg.compile(outs, codegen=False)
        checked = fg.compile(outs, check_numerics=True)
        lazy = fg.compile(outs, backend=DaskBackend(chunks=2))
        want = ref(x=X)
        for prog in (gen, checked, lazy):
            for _ in range(2):                               # first call and later ones
                for a, b in zip(prog(x=X), want):
                    got = np.asarray(fg.to_numpy(a))
                    assert got.dtype == np.asarray(b).dtype
                    np.testing.assert_allclose(got, b, rtol=1e-13, atol=0)


def test_float32_and_run_time_lengths():
    Xb = np.array([[0.3, -1.2, 2.0], [1.0, 0.5, -0.5]])
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, 3), dtype=np.float32)
        a = fg.placeholder("a", dtype=np.float32)
        s = fg.sum(scaled_sin(x, a) ** 2) + fg.sum(log1pexp(x))
        gx, ga = fg.grad(s, [x, a])
        d = fg.jvp(s, x, fg.ones_like(x))
        for rows in (1, 2):
            X32 = Xb[:rows].astype(np.float32)
            vals = fg.run([gx, ga, d], {x: X32, a: np.float32(1.7)})
            assert all(np.asarray(v).dtype == np.float32 for v in vals)
            want = 2 * 1.7 ** 2 * np.sin(Xb[:rows]) * np.cos(Xb[:rows]) + sigmoid(Xb[:rows])
            np.testing.assert_allclose(vals[0], want, rtol=2e-6)
            np.testing.assert_allclose(vals[2], want.sum(), rtol=2e-6)


def test_walkthrough_backward_drawing_and_formula_read_custom_calls(tmp_path):
    with fg.Graph():
        x = fg.placeholder("x")
        w = fg.variable(0.5, name="w")
        y = clip_gradient(log1pexp(x * w)) * scaled_sin(w, 2.0)
        y = fg.remat(lambda a: fg.tanh(a) * 2.0)(y)
        tr = fg.compile(y).trace(x=0.3)
        back = fg.viz.draw(tr, backward=True).source
        frames = fg.viz.walkthrough(tr, tmp_path, format="svg")
        text = str(fg.viz.formula(y))
    X, W = 0.3, 0.5
    u = np.logaddexp(0.0, X * W)
    inner = u * 2.0 * np.sin(W)
    outer = 2.0 * (1 - np.tanh(inner) ** 2)            # v̄ of the block's input
    clipped = np.clip(outer * 2.0 * np.sin(W), -1, 1)  # v̄ reaching clip_gradient, clipped
    assert clipped == 1.0
    want = clipped * sigmoid(X * W) * X + outer * u * 2.0 * np.cos(W)
    assert tr.adjoint(w) == pytest.approx(want, rel=1e-12)
    assert "x̄ = clip(v̄, −1, 1)" in back and len(frames) > 5
    assert text == "remat(clip_gradient(log1pexp(x w)) scaled_sin(w, 2))"


def test_a_hostile_custom_name_in_a_file_is_refused(tmp_path):
    import json
    import zipfile
    with fg.Graph():
        x = fg.placeholder("x", shape=(3,))
        path = fg.save_graph(tmp_path / "ok.fg", clip_gradient(x))
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    doc = json.loads(members["graph.json"])
    call = next(r for r in doc["nodes"] if r["op"] == "custom_call")
    assert call["attrs"]["fn"] == {"$custom": f"{__name__}.clip_gradient"}
    for bad, why in [(7, "malformed"), ("x" * 1001, "malformed"),
                     ("os.system", "'os.system', which is not registered")]:
        call["attrs"]["fn"] = {"$custom": bad}
        out = tmp_path / "bad.fg"
        with zipfile.ZipFile(out, "w") as zf:
            for name, data in members.items():
                zf.writestr(name, json.dumps(doc) if name == "graph.json" else data)
        with pytest.raises(fg.GraphFileError, match=why):
            fg.load_graph(out)


def test_an_optimizer_steps_through_a_clipped_gradient_and_a_remat_block():
    with fg.Graph():
        w = fg.variable(np.array([3.0, -0.25]), name="w")
        y = fg.remat(lambda a: a * a)(clip_gradient(w))
        loss = 0.5 * fg.sum(y)                      # ∂/∂w = clip(w) (w² / 2 → w, clipped)
        prog = fg.compile([loss, *fg.grad(loss, [w])])
        opt = fg.optim.SGD([w], lr=0.5)
        opt.step(prog)
    np.testing.assert_allclose(w.value, [3.0 - 0.5 * 1.0, -0.25 - 0.5 * -0.25], rtol=1e-15)
