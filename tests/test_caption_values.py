"""Every drawn reverse rule is the number drawn beside it (issue 18, §4).

For every op flowgrad registers, small graphs are traced (values and adjoints); for each
edge into an op, the rule the drawing prints is taken from ``draw(..., edge_labels="rule")``,
the same declaration is *evaluated* with the traced values and v̄, and compared with the
op's own adjoint contribution along that edge (rtol 1e-10, float64). An op whose caption
cannot be evaluated fails here, naming it, unless listed in ``IN_WORDS`` with a reason.
"""
import numpy as np
import pytest

import flowgrad as fg
from flowgrad.ops import REGISTRY
from flowgrad.viz import labels as L
from flowgrad.viz import rules as R
from flowgrad.viz.local import edge_terms
from flowgrad.viz.rule_expr import NotEvaluable

from op_cases import CASES
from test_viz_draw import _parse_dot

#: ops that only ever take integer inputs: no adjoint edge exists to draw a caption on
INTEGER_ONLY = {"embedding_index": "its input is the integer indices of an Embedding"}

#: ops whose caption states the rule in words only, and why
IN_WORDS = {"basis_map": "its rule is the body's own reverse rule mapped over a basis: "
                         "a whole program, not a formula",
            "custom_call": "it is the user's own rule, drawn with its docstring's first line",
            "einsum": "its adjoint is an einsum whose subscripts depend on the spec",
            "cholesky": "a matrix program (Murray's formula), not a formula of the operands",
            "qr": "a matrix program (copyltu of a product), not a formula of the operands",
            "svd": "a matrix program over the singular vectors, not a formula",
            # issue 20: a loop's adjoint is another loop over the body's vjp
            "loop": "the body's vjp, run backwards through time",
            "loop_out": "the body's own rule, run backwards through time",
            # a node only for a complex x (of a real one: x itself, or zeros), while the
            # traces here are float64; their numbers: tests/test_complex_grad.py
            "conj": "complex values only", "real": "complex values only",
            "imag": "complex values only"}

_r = np.random.default_rng(18)


def _library_ops():
    return sorted(n for n, op in REGISTRY.items()
                  if getattr(op.forward, "__module__", "").startswith("flowgrad."))


@fg.custom_vjp
def _clipped_identity(x):
    return x * 1.0


@_clipped_identity.defvjp
def _clipped_identity_vjp(g, ans, x):
    """x̄ = clip(v̄, −1, 1)"""
    return (fg.clip(g, -1.0, 1.0),)


def _extra_cases():
    """Cases for what op_cases leaves out: each loss under each reduction, 0-d losses,
    the piecewise-constant ops, and the ops the rules build (second order below)."""
    z, t = _r.normal(size=(4, 3)), _r.uniform(0.1, 0.9, (4, 3))
    labels = np.array([0, 2, 1, 1])
    out = []
    for red in ("mean", "sum", "none"):
        out += [
            (f"bce {red}", lambda a, b, r=red: fg.bce_with_logits(a, b, reduction=r), [z, t]),
            (f"mse {red}", lambda a, b, r=red: fg.mse(a, b, reduction=r), [z, t]),
            (f"sce one-hot {red}", lambda a, b, r=red: fg.softmax_cross_entropy(
                a, b, reduction=r), [z, np.eye(3)[labels]]),
            (f"sce labels {red}", lambda a, r=red: fg.softmax_cross_entropy(
                a, labels, reduction=r), [z]),
            (f"sce axis 0 {red}", lambda a, b, r=red: fg.softmax_cross_entropy(
                a, b, reduction=r, axis=0), [z, t / t.sum(0)]),
        ]
    out += [
        ("bce 0-d", fg.bce_with_logits, [np.array(0.7), np.array(0.2)]),
        ("mse 0-d", fg.mse, [np.array(0.7), np.array(0.2)]),
        ("linear 0-d", fg.linear, [np.array(1.5), np.array(0.8), np.array(-0.3)]),
        ("linear (4,3)", fg.linear, [z, _r.normal(size=(3, 2)), _r.normal(size=(2,))]),
        ("seed-like scalars", lambda w, x: fg.sigmoid(w * x + 1.0) ** 2 + fg.tanh(w) / x
         - fg.exp(-w) + fg.log1p(x) * fg.sqrt(x) + fg.softplus(w) + fg.sin(x) * fg.cos(w)
         + fg.abs(w) + fg.relu(x) + fg.log(x) + fg.maximum(w, x) + fg.minimum(w, x),
         [np.array(0.8), np.array(1.5)]),
        ("piecewise", lambda a, b: fg.where(a > b, a, b) * fg.sign(a) + fg.zeros_like(a)
         + fg.ones_like(b) * fg.where(a <= b, a, 0.0) + fg.where(a >= b, b, 0.0)
         + fg.where(a < b, 1.0, b) + fg.where(fg.equal(a, b), a, 0.0)
         + fg.where(fg.not_equal(a, b), b, 1.0), [z, _r.normal(size=(4, 3))]),
        ("argmax one_hot", lambda a: fg.one_hot(fg.argmax(a), 3) * a, [z]),
        ("random like", lambda a: a * fg.random.normal(like=a, seed=1)
         + a * fg.random.uniform(like=a, seed=2) + a * fg.random.bernoulli(like=a, seed=3),
         [z]),
        ("maximum tie", fg.maximum, [np.array([1.0, 2.0, 3.0]), np.array([1.0, 0.0, 3.0])]),
        ("max tie", lambda a: fg.max(a, axis=1), [np.array([[1.0, 3.0, 3.0], [2.0, 0.0, 1.0]])]),
        ("reshape None", lambda a: fg.reshape(a, (-1,)), [z]),
        ("stop_gradient", lambda a, b: a * fg.stop_gradient(b) + b, [z, _r.normal(size=(4, 3))]),
        ("remat", lambda a: fg.remat(lambda x: fg.tanh(x) * 2.0)(a), [z]),
        ("custom_vjp", lambda a: _clipped_identity(a) * a, [z]),
        # a derivative's seed held to its input's shape (flowgrad/seeds.py)
        ("shaped_like", lambda a, b: fg.ops.base.apply(REGISTRY["shaped_like"], fg.tanh(a), b)
         * b, [z, _r.normal(size=(4, 3))]),
        ("astype there and back", lambda a: fg.astype(fg.astype(a, "float32"), "float64"), [z]),
        # fg.nn.BatchNorm's checked count of the values a channel averages
        ("batch_norm_count", lambda a: a * fg.ops.base.apply(
            REGISTRY["batch_norm_count"], a, fg.constant(np.bool_(True)), axis=(0,)), [z]),
    ]
    return out


#: case ids whose gradient graphs are traced again as forward graphs (second order),
#: so the ops the rules build (sum_to, scatter_add, max_weights …) are checked too
SECOND_ORDER = {"add (3,1)+(1,4)", "maximum (3,1),(1,4)", "getitem int array repeats",
                "max axis=1", "trace offset rect", "eigh V diag(w^2) V^T", "mean axis=-1",
                "bce none", "sce labels mean", "norm vector", "concatenate axis=0",
                "det", "solve matrix", "where (list condition)", "log_softmax",
                "conv2d stride 2 pad (1,0) bias", "max_pool2d (2,3) stride (2,1)",
                "avg_pool2d 3 stride 2", "gelu", "remat"}
#: case ids also built with placeholders of unknown lengths (None), as a batch would be
UNKNOWN_LENGTHS = {"bce mean", "concatenate axis=0", "mse mean", "mean axis=-1",
                   "reshape None", "sub (2,3)-(3,)", "shaped_like"}


def _all_cases():
    cases = [(cid, fn, inputs) for cid, fn, inputs, _ in CASES] + _extra_cases()
    out = []
    for cid, fn, inputs in cases:
        out.append((cid, fn, inputs, False, 0))
        if cid in SECOND_ORDER:
            out.append((cid + " (grad)", fn, inputs, False, 1))
        if cid in UNKNOWN_LENGTHS:
            out.append((cid + " (None lengths)", fn, inputs, True, 0))
            out.append((cid + " (None lengths, grad)", fn, inputs, True, 1))
    # the block of a concatenation of open lengths, and its adjoint (concat_unpart)
    cid, fn, inputs, _ = next(c for c in CASES if c[0] == "concatenate axis=0")
    out.append((cid + " (None lengths, grad of grad)", fn, inputs, True, 2))
    # max pooling's scatter is differentiated into its gather only at third order
    cid, fn, inputs, _ = next(c for c in CASES if c[0] == "max_pool2d (2,3) stride (2,1)")
    out.append((cid + " (grad of grad)", fn, inputs, False, 2))
    return out


def _weights(node):
    """Weights that vary entry by entry (so v̄ is no plain 1), for any run-time shape."""
    return fg.cos(node) + 0.5


def _trace(fn, inputs, unknown, second):
    """(trace, placeholders) of Σ(fn(...) ⊙ W) — W varying, so v̄ is no plain 1 — or of
    its gradient weighted again, ``second`` times over."""
    with fg.Graph():
        ps = [fg.placeholder(f"p{k}", shape=(None,) * np.ndim(v) if unknown else np.shape(v))
              for k, v in enumerate(inputs)]
        out = fn(*ps)
        loss = fg.sum(out * _weights(out)) if out.dtype.kind == "f" else fg.sum(ps[0])
        for _ in range(second):
            grads = fg.grad(loss, ps)
            loss = sum(fg.sum(g * _weights(g)) for g in grads)
        return fg.compile(loss).trace(**{f"p{k}": v for k, v in enumerate(inputs)}), ps


def _edges(tr):
    """Every (input id, op node id) pair of the trace's forward graph that a drawing
    labels with a rule: from a non-constant input (float, or into an op no v̄ flows
    through, whose rule is x̄ += 0)."""
    ids = {n.id for n in tr.nodes}
    return [(i.id, n.id) for n in tr.nodes if n.op is not None
            for i in dict.fromkeys(n.inputs) if i.id in ids and i.kind != "constant"
            and (i.dtype.kind == "f" or n.op.name in R.NO_FLOW)]


class _Checker:
    """Checks the drawn rules of one trace; appends what disagrees to ``failures`` and
    the op names it checked to ``seen``."""

    def __init__(self, tr, ps, seen, failures):
        self.tr, self.ps, self.seen, self.failures = tr, ps, seen, failures
        self.edges = _edges(tr)
        self.actual = edge_terms(tr, self.edges, "adjoint")
        self.ones = edge_terms(tr, [(i, j) for i, j in self.edges if not self.value(i).shape
                                    and not self.value(j).shape], "one")
        self.drawn = {(a, b): e.get("label") for a, b, e in
                      _parse_dot(fg.viz.draw(tr, edge_labels="rule", expand=True).source)[1]}
        self.users, self.leaf_checks = {}, 0
        for i, j in self.edges:
            self.users.setdefault(i, set()).add(j)

    def node(self, i):
        return self.tr.graph.node(i)

    def value(self, i):
        return np.asarray(fg.to_numpy(self.tr[self.node(i)]))

    def context(self, c, child):
        """Fill ``c`` with the traced values and the child's v̄."""
        c.args = [self.value(x.id) for x in child.inputs]
        c.out = self.value(child.id)
        c.g = np.asarray(fg.to_numpy(self.tr.adjoint(child))) \
            if self.tr.has_adjoint(child) else np.zeros(c.out.shape)
        return c

    def run(self):
        for i, j in self.edges:
            self.edge(i, j)

    def edge(self, i, j):
        child, fail = self.node(j), self.failures.append
        op, names = child.op.name, [L.display_name(n) for n in child.inputs]
        shapes = [self.value(n.id).shape for n in child.inputs]
        total, texts = None, []
        for k in (k for k, n in enumerate(child.inputs) if n.id == i):
            rule, c = L.drawn_rule(child, k, names, L.display_name(child), shapes,
                                   self.value(j).shape)
            texts.append(f"{L.bar(names[k])} {rule.rhs(self.context(c, child))}")
            if op in IN_WORDS:
                continue
            try:
                v = rule.value(c)
            except NotEvaluable as e:
                fail(f"{op}: caption not evaluable ({e})")
                continue
            _check_shape_note(op, rule, c, texts[-1], self.failures)
            total = v if total is None else total + v
        if op in IN_WORDS or total is None:
            return
        self.seen.add(op)
        label = self.drawn.get((f"n{i}", f"n{j}"))
        if label is not None and set(label.split("\n")) - set(texts) - {
                f"{t}  (×{texts.count(t)})" for t in texts}:
            fail(f"{op}: drawn {label!r}, declared {texts}")
        want = self.actual.get((i, j), np.zeros(self.value(i).shape))
        if not np.allclose(total, want, rtol=1e-10, atol=1e-12):
            fail(f"{op}: {texts} gives {total}, the adjoint term is {want}")
        if (i, j) in self.ones:
            self.local(child, i, names, self.ones[(i, j)])
        if i in {p.id for p in self.ps} and len(self.users[i]) == 1 \
                and self.node(i).dtype.kind == "f":
            self.leaf_checks += 1
            # a leaf read by this op alone: its whole adjoint is this one term
            whole = fg.to_numpy(self.tr.adjoint(self.node(i)))
            if not np.allclose(total, whole, rtol=1e-10, atol=1e-12):
                fail(f"{op}: {texts} gives {total}, v̄ of the input is {whole}")

    def local(self, child, i, names, want):
        """A scalar edge's local derivative, drawn as formula = number ("∂y/∂z =
        σ(z)(1 − σ(z)) = 0.2055"): the formula, evaluated, is ∂child/∂input there."""
        op = child.op.name
        for k in (k for k, n in enumerate(child.inputs) if n.id == i):
            expr, c = L.drawn_local(child, k, names, L.display_name(child))
            text = L.node_local_formula(child, k, names=names)
            if expr is None:      # no formula is drawn: the number stands alone
                if text is not None:
                    self.failures.append(f"{op}: a local formula drawn without a declaration")
                continue
            self.context(c, child)
            if text != expr.text(c)[0]:
                self.failures.append(f"{op}: walkthrough shows {text!r}, declared "
                                     f"{expr.text(c)[0]!r}")
            if [n.id for n in child.inputs].count(i) == 1 and not np.allclose(
                    expr.value(c), want, rtol=1e-10, atol=1e-12):
                self.failures.append(f"{op}: ∂/∂{names[k]} = {text} gives {expr.value(c)}, "
                                     f"the op's local derivative is {want}")


def _check_shape_note(op, rule, c, text, failures):
    """No hidden summing: without "summed to" in the caption, the formula's value already
    has the input's shape."""
    raw = np.shape(rule.expr.value(c))
    target = np.shape(c.args[c.argnum])
    if "summed to" not in text and raw != target:
        failures.append(f"{op}: {text!r} has shape {raw}, summed to {target} unsaid")
    if "summed to" in text and raw == target:
        failures.append(f"{op}: {text!r} says 'summed to' but nothing is summed")


def test_every_caption_evaluates_to_its_adjoint_term():
    seen, failures = set(), []
    with np.errstate(all="ignore"):
        for cid, fn, inputs, unknown, second in _all_cases():
            before = len(failures)
            tr, ps = _trace(fn, inputs, unknown, second)
            try:
                _Checker(tr, ps, seen, failures).run()
            except Exception as e:      # report every op's trouble at once, not the first
                failures.append(f"{type(e).__name__}: {e}")
            failures[before:] = [f"[{cid}] {f}" for f in failures[before:]]
    assert not failures, "\n".join(failures[:40])
    problem = _coverage(set(_library_ops()), seen)
    assert not problem, problem


def _coverage(library, seen):
    """What is wrong with the coverage of ``library`` (op names), or "" when nothing."""
    undeclared = sorted(library - set(R.TABLE) - set(IN_WORDS))
    if undeclared:
        return (f"ops without an evaluable caption: {undeclared} — declare each one's "
                "rule in viz/rules.py (or list it in IN_WORDS with a reason)")
    unchecked = sorted(library - seen - set(IN_WORDS) - set(INTEGER_ONLY))
    if unchecked:
        return f"ops no case traced: {unchecked} — add a case to tests/test_caption_values.py"
    return ""


def test_a_new_op_without_a_caption_is_named():
    library = set(_library_ops())
    assert _coverage(library | {"an_op_of_tomorrow"}, library) == (
        "ops without an evaluable caption: ['an_op_of_tomorrow'] — declare each one's rule in "
        "viz/rules.py (or list it in IN_WORDS with a reason)")
    assert "['sin']" in _coverage(library, library - {"sin"})


def test_ops_in_words_say_so_honestly():
    from flowgrad.viz.rule_expr import Ctx
    for op in IN_WORDS:
        assert op in _library_ops()
        c = Ctx(["x"], "y", [(2,)], (2,), {}, 0)
        text = R.rule(op, c).rhs(c)
        assert text.startswith("+= v̄ · ∂y/∂x (") and text.endswith(")")
        assert text[len("+= v̄ · ∂y/∂x ("):-1] == R.IN_WORDS[op]
        with pytest.raises(NotEvaluable):
            R.rule(op, c).value(c)


def test_bce_with_logits_mean_divides_by_n_in_its_caption():
    z, t = np.array([0.3, -1.2, 2.0, 0.1, 0.5]), np.array([1.0, 0.0, 1.0, 0.0, 1.0])
    for red, want_z, want_t in (
            ("mean", "z̄ += v̄ · (σ(z) − t) / n, n = 5", "t̄ −= v̄ · z / n, n = 5"),
            ("sum", "z̄ += v̄ · (σ(z) − t)", "t̄ −= v̄ · z"),
            ("none", "z̄ += v̄ · (σ(z) − t)", "t̄ −= v̄ · z")):
        with fg.Graph():
            zp, tp = fg.placeholder("z", shape=(None,)), fg.placeholder("t", shape=(None,))
            loss = fg.sum(fg.bce_with_logits(zp, tp, reduction=red)).named("loss")
            tr = fg.compile(loss).trace(z=z, t=t)
        _, edges = _parse_dot(fg.viz.draw(tr, edge_labels="rule").source)
        labels = {e.get("label") for a, b, e in edges}
        assert want_z in labels and want_t in labels, (red, labels)
        assert not any("summed to" in (lab or "") for lab in labels)
    # the structure alone: the length is open, so n is said in words
    with fg.Graph():
        zp, tp = fg.placeholder("z", shape=(None,)), fg.placeholder("t", shape=(None,))
        src = fg.viz.draw(fg.bce_with_logits(zp, tp)).source
    assert "z̄ += v̄ · (σ(z) − t) / n, n = the entries averaged" in src
