"""A hypothesis strategy for small random graphs over the op table, shared by the
graph-file and ONNX round-trip property tests."""
import numpy as np
from hypothesis import strategies as st

import flowgrad as fg

# every op keeps the shape (None, 2), so any two nodes combine
UNARY = [fg.exp, fg.tanh, fg.sin, fg.sigmoid, fg.softplus, fg.neg, lambda a: a * a,
         lambda a: a * fg.sum(a, axis=-1, keepdims=True),
         lambda a: a - fg.logsumexp(a, -1, True),
         lambda a: fg.mean(a, axis=0, keepdims=True) + a, lambda a: fg.softmax(a),
         lambda a: a[..., ::-1], fg.relu, lambda a: a - fg.max(a, axis=-1, keepdims=True),
         lambda a: fg.concatenate([a[:, 1:], a[:, :1]], axis=1)]
BINARY = [fg.add, fg.sub, fg.mul, fg.maximum, lambda a, b: fg.where(a > b, a, b * 2.0),
          lambda a, b: a / (1.5 + b * b), lambda a, b: a @ fg.transpose(b[:2])]


@st.composite
def programs(draw):
    """(number of placeholders, steps): each step picks an op and its operands."""
    n = draw(st.integers(1, 3))
    steps = draw(st.lists(st.tuples(st.booleans(), st.integers(0, 100), st.integers(0, 100),
                                     st.integers(0, 100)), min_size=1, max_size=12))
    return n, steps


def build(program):
    """The graph of ``program`` over placeholders p0… of shape (None, 2): a scalar loss
    and its gradients. Returns (graph, placeholders, [loss, *grads], feed arrays)."""
    n, steps = program
    rng = np.random.default_rng(len(steps))
    arrays = [rng.standard_normal((3, 2)) for _ in range(n)]
    with fg.Graph() as g:
        nodes = [fg.placeholder(f"p{i}", shape=(None, 2)) for i in range(n)]
        for binary, k, i, j in steps:
            a, b = nodes[i % len(nodes)], nodes[j % len(nodes)]
            nodes.append(BINARY[k % len(BINARY)](a, b) if binary
                         else UNARY[k % len(UNARY)](a))
        loss = fg.sum(nodes[-1] * nodes[-1]).named("loss")
        grads = fg.grad(loss, nodes[:n])
    return g, nodes[:n], [loss, *grads], arrays
