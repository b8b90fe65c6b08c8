"""fg.viz.formula: what a node computes, after the plan's simplification, in the user's names."""
import importlib

import numpy as np
import pytest

import flowgrad as fg

formula_mod = importlib.import_module("flowgrad.viz.formula")   # the module, not the function


def _batch_logistic(loss_kind="bce"):
    x = fg.placeholder("X", shape=(None, 3))
    t = fg.placeholder("t", shape=(None,))
    w = fg.variable(np.zeros(3), name="w")
    b = fg.variable(0.0, name="b")
    z = fg.linear(x, w, b)
    data = fg.bce_with_logits(z, t) if loss_kind == "bce" else fg.mse(fg.sigmoid(z), t)
    return data + 0.1 * fg.l2(w), w, b


def test_seed_example_dL_dw_reads_like_the_lecture():
    with fg.Graph():
        s = fg.worked_example.univariate_logistic(lam=0.1)
        gw = fg.grad(s["loss"], s["w"])
        f = fg.viz.formula(gw, lhs="∂L/∂w", symbols={"λ": 0.1})
        assert f.text == "∂L/∂w = (y − t) · y(1 − y) · x + λ w   where y = σ(w x + b)"
        assert f.body == "(y − t) · y(1 − y) · x + λ w"
        assert f.bindings == [("y", "σ(w x + b)")]
        assert f.latex == (r"\frac{\partial L}{\partial w} = \left(y - t\right) \cdot y "
                           r"\left(1 - y\right) \cdot x + \lambda w \quad\text{where}\quad "
                           r"y = \sigma\left(w x + b\right)")
        # without a symbol for it, the folded coefficient shows as its value
        assert fg.viz.formula(gw).body == "(y − t) · y(1 − y) · x + 0.1 w"
        assert str(fg.viz.formula(fg.grad(s["loss"], s["b"]))) == \
            "(y − t) · y(1 − y)   where y = σ(w x + b)"
        assert fg.viz.formula(fg.grad(s["loss"], s["x"])).body == "(y − t) · y(1 − y) · w"


def test_seed_forward_formula_inlines_single_uses():
    with fg.Graph():
        s = fg.worked_example.univariate_logistic(lam=0.1)
        f = fg.viz.formula(s["loss"])
        assert f.text == "½(σ(w x + b) − t)² + 0.05 w²"   # 0.1 · ½ folded by the plan
        assert f.bindings == []
        assert repr(f) == f.text and f == f.text


def test_formula_evaluates_to_the_programs_number():
    """The formula's numbers are the graph's: evaluate the printed seed gradient by hand."""
    w0, b0, x0, t0, lam = 0.8, -0.3, 1.5, 1.0, 0.1
    with fg.Graph():
        s = fg.worked_example.univariate_logistic(w0, b0, lam)
        gw = fg.grad(s["loss"], s["w"])
        assert fg.viz.formula(gw, symbols={"λ": lam}).body == "(y − t) · y(1 − y) · x + λ w"
        y = 1 / (1 + np.exp(-(w0 * x0 + b0)))
        by_formula = (y - t0) * y * (1 - y) * x0 + lam * w0
        assert np.isclose(fg.run(gw, {s["x"]: x0, s["t"]: t0}), by_formula, rtol=1e-14)


def test_batch_logistic_gradient_is_matrix_algebra():
    with fg.Graph():
        loss, w, b = _batch_logistic()
        gw, gb = fg.grad(loss, [w, b])
        f = fg.viz.formula(gw, symbols={"λ": 0.1})
        assert f.text == "Xᵀ(σ(X w + b) − t) / n + λ w"
        assert "sum_to" not in f.text and "transpose" not in f.text
        assert f.latex == (r"\frac{X^\top \left(\sigma\left(X w + b\right) - t\right)}{n} "
                           r"+ \lambda w")
        assert fg.viz.formula(gb).text == "Σ(σ(X w + b) − t) / n"     # broadcast undone: Σ


def test_batch_mse_gradient_binds_the_shared_sigmoid():
    with fg.Graph():
        loss, w, b = _batch_logistic("mse")
        gw = fg.grad(loss, w)
        f = fg.viz.formula(gw, symbols={"λ": 0.1})
        assert f.text == ("2 Xᵀ((u − t) ⊙ u ⊙ (1 − u)) / n + λ w   "
                          "where u = σ(X w + b)")
        assert fg.viz.formula(loss).text == "mean((σ(X w + b) − t)²) + 0.05 ‖w‖²"


def test_user_names_are_used_for_bindings_and_fresh_names_avoid_clashes():
    with fg.Graph():
        X = fg.placeholder("X", shape=(None, 4))
        T = fg.placeholder("T", shape=(None, 3))
        W1 = fg.variable(np.ones((4, 5)), name="W1")
        W2 = fg.variable(np.ones((5, 3)), name="W2")
        u = fg.placeholder("u", shape=())                  # takes the first fresh name
        h = fg.tanh(X @ W1).named("h")
        loss = fg.mse(h @ W2, T) * u
        f = fg.viz.formula(fg.grad(loss, W2))
        assert "h" in dict(f.bindings) or "hᵀ" in f.body
        assert all(name != "u" for name, _ in f.bindings)  # u is a user's leaf


def test_precedence_and_parentheses():
    with fg.Graph():
        a, b, c = (fg.placeholder(n) for n in "abc")
        cases = [
            (a - (b - c), "a − (b − c)"),
            ((a - b) - c, "a − b − c"),
            (a * (b + c), "a(b + c)"),
            ((a + b) * c, "(a + b) c"),
            ((a + b) * (b * c), "(a + b) · b c"),
            (a / (b * c), "a / (b c)"),
            (-(a + b), "−(a + b)"),
            ((a + b) ** 2, "(a + b)²"),
            (a ** b, "a^b"),
            (fg.exp(a) * b, "exp(a) b"),
            (2 * a * b, "2 a b"),
        ]
        for node, want in cases:
            assert fg.viz.formula(node).text == want


def test_a_deep_graph_prints_without_recursion():
    with fg.Graph():
        x = fg.placeholder("x")
        y = x
        for _ in range(3000):
            y = fg.sin(y) + x
        text = fg.viz.formula(y).text
        assert text.startswith("sin(" * 3000) and text.count("+ x") == 3000


def test_notebook_reprs():
    with fg.Graph():
        s = fg.worked_example.univariate_logistic()
        f = fg.viz.formula(fg.grad(s["loss"], s["w"]), lhs="∂L/∂w")
        assert f._repr_latex_() == f"${f.latex}$"
        html = f._repr_html_()
        assert "flowgrad-formula" in html and "σ(w x + b)" in html and "where" in html


@pytest.mark.parametrize("op, args, want", [
    ("linear", ["X", "w", "b"], "X w + b"),
    ("linear", ["X", "w"], "X w"),
    ("mse", ["y", "t"], "mean((y − t)²)"),
    ("l2", ["w"], "½ ‖w‖²"),
    ("bce_with_logits", ["z", "t"], "mean(softplus(z) − t ⊙ z)"),
    ("softmax_cross_entropy", ["Z", "T"], "mean(−Σ[class](T ⊙ log softmax(Z)))"),
])
def test_model_op_nodes_print_as_their_formulas(op, args, want):
    """The model ops as single op nodes (after the op-node merge) print as the same algebra."""
    E = formula_mod._E
    exprs = [E("name", (), n, False, k) for k, n in enumerate(args)]
    attrs = {} if op in ("linear", "l2") else {"reduction": "mean"}
    e = formula_mod._from_op(op, attrs, exprs, op != "linear", None, ())
    text, _ = formula_mod._print(e, {}, {})
    assert text == want


# -- the printed algebra computes the program's numbers ---------------------------------------

_FN = {"sigmoid": lambda v: 1 / (1 + np.exp(-v)), "tanh": np.tanh, "exp": np.exp,
       "log": np.log, "softplus": lambda v: np.logaddexp(0, v)}


def _evaluate(root, leaves, n):
    """Evaluate the displayed expression DAG (after the display rewrites) with numpy,
    bottom-up with an explicit stack; Σ without a note sums the leading (batch) axis."""
    done, stack = {}, [(root, False)]
    while stack:
        e, expanded = stack.pop()
        if id(e) in done:
            continue
        if not expanded:
            stack.append((e, True))
            stack.extend((c, False) for c in e.args)
            continue
        a = [done[id(c)] for c in e.args]
        k = e.kind
        if k == "num":
            v = e.val
        elif k == "name":
            v = n[e.val] if (e.val in n and e.src is None) else leaves[e.val]
        elif k in ("add", "sub", "mul", "div", "matmul", "pow"):
            v = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
                 "matmul": np.matmul, "pow": np.power}[k](a[0], a[1])
        elif k == "neg":
            v = -a[0]
        elif k == "T":
            v = np.swapaxes(a[0], -1, -2)
        elif k == "sum":
            assert e.val is None
            v = np.sum(a[0]) if e.scalar else np.sum(a[0], axis=0)
        elif k == "mean":
            v = np.mean(a[0])
        elif k == "func":
            v = _FN[e.val](a[0])
        else:
            raise AssertionError(f"no evaluator for {k}")
        done[id(e)] = v
    return done[id(root)]


def _mlp():
    X = fg.placeholder("X", shape=(None, 4))
    T = fg.placeholder("T", shape=(None, 2))
    W1 = fg.variable(np.linspace(-1, 1, 20).reshape(4, 5), name="W1")
    b1 = fg.variable(np.linspace(0, 0.4, 5), name="b1")
    W2 = fg.variable(np.linspace(1, -1, 10).reshape(5, 2), name="W2")
    h = fg.tanh(fg.linear(X, W1, b1)).named("h")
    return fg.mse(h @ W2, T) + 0.01 * fg.l2(W1), [W1, b1, W2]


@pytest.mark.parametrize("build", ["seed", "bce", "mse", "mlp"])
def test_displayed_formula_evaluates_to_the_gradient(build, rng):
    with fg.Graph() as g:
        if build == "seed":
            s = fg.worked_example.univariate_logistic()
            loss, wrt, feed = s["loss"], [s["w"], s["b"], s["x"]], {"x": 1.5, "t": 1.0}
        elif build == "mlp":
            (loss, wrt), feed = _mlp(), {"X": rng.normal(size=(7, 4)),
                                         "T": rng.normal(size=(7, 2))}
        else:
            (loss, w, b) = _batch_logistic(build)
            wrt = [w, b]
            feed = {"X": rng.normal(size=(9, 3)), "t": (rng.random(9) > 0.5) * 1.0}
        for v in wrt:
            if v.kind == "variable":
                v.value = v.value + rng.normal(size=v.shape) * 0.3
        last = list(feed.values())[-1]             # the targets: n rows, N entries
        n = {"n": np.shape(last)[0] if np.ndim(last) else 1, "N": np.size(last)}
        leaves = dict(feed, **{v.name: v.value for v in g.nodes if v.kind == "variable"})
        for gnode in fg.grad(loss, wrt):
            root = formula_mod._convert(g, gnode)
            want = fg.run(gnode, feed)
            got = _evaluate(root, leaves, n)
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_two_layer_network_reads_as_backprop_by_hand():
    with fg.Graph():
        loss, (W1, b1, W2) = _mlp()
        f1, fb, f2 = (fg.viz.formula(g, symbols={"λ": 0.01}).text
                      for g in fg.grad(loss, [W1, b1, W2]))
        assert f1 == "2 Xᵀ(((h W2 − T) W2ᵀ) ⊙ (1 − h²)) / N + λ W1   where h = tanh(X W1 + b1)"
        assert fb == "2 Σ(((h W2 − T) W2ᵀ) ⊙ (1 − h²)) / N   where h = tanh(X W1 + b1)"
        assert f2 == "2 hᵀ(h W2 − T) / N   where h = tanh(X W1 + b1)"


def test_cross_entropy_of_class_indices_picks_each_rows_label():
    with fg.Graph():
        z = fg.placeholder("z", shape=(4, 3))
        t = fg.placeholder("t", shape=(4,), dtype="int64")
        p = fg.placeholder("p", shape=(4, 3))
        assert fg.viz.formula(fg.softmax_cross_entropy(z, t)).text == \
            "mean(−log softmax(z)[t])"
        assert fg.viz.formula(fg.softmax_cross_entropy(z, p)).text == \
            "mean(−Σ[class](p ⊙ log softmax(z)))"
        assert fg.viz.formula(fg.softmax_cross_entropy(z, t, reduction="sum")).latex == \
            r"\sum \left(-\log\operatorname{softmax}\left(z\right)_{t}\right)"
