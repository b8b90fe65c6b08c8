"""fg.import_onnx of a long chain of nodes at the top level of a model against the same
chain as the body of a Loop (a fixed trip count: a scan), a while-Loop (a condition
computed in the body) and a Scan, in one process, alternating.

The chain repeats a mix of the ops models are made of: elementwise ops on the carry
and on a weight read from the enclosing graph (a loop body captures it), a Constant,
Reshape, Slice and ReduceSum with constant operands, Gather, Cast and Where. Each
import is timed in CPU seconds (``time.process_time``: the machine may be shared), the
best of ``--repeats``, and reported per node; the ``loop/top`` column is what a node
costs in a body against the top level.

    python benchmarks/bench_onnx_import.py [--nodes 5000 50000] [--repeats 3]
"""
from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time

import numpy as np

import flowgrad as fg

F, I64, B = 1, 7, 9       # onnx.TensorProto.FLOAT, INT64, BOOL


def _links(h, nh, cur, k):
    """The nodes of link ``k`` of the chain from tensor ``cur``: (nodes, its output)."""
    o = f"t{k}"
    kind = k % 9
    if kind == 0:
        return [h.make_node("Add", [cur, "W"], [o])], o
    if kind == 1:
        return [h.make_node("Tanh", [cur], [o])], o
    if kind == 2:
        return [h.make_node("Constant", [], [o + "c"],
                            value=nh.from_array(np.full(4, 0.5, np.float32))),
                h.make_node("Mul", [cur, o + "c"], [o])], o
    if kind == 3:
        return [h.make_node("Reshape", [cur, "shape4"], [o])], o
    if kind == 4:
        return [h.make_node("Slice", [cur, "start0", "end4"], [o])], o
    if kind == 5:
        return [h.make_node("ReduceSum", [cur, "axes0"], [o + "r"], keepdims=1),
                h.make_node("Sub", [cur, o + "r"], [o])], o
    if kind == 6:
        return [h.make_node("Gather", [cur, "perm"], [o])], o
    if kind == 7:
        return [h.make_node("Cast", [cur], [o + "d"], to=11),
                h.make_node("Cast", [o + "d"], [o], to=F)], o
    return [h.make_node("Greater", [cur, "W"], [o + "g"]),
            h.make_node("Where", [o + "g", cur, "W"], [o])], o


def chain(n, src):
    """About ``n`` nodes from tensor ``src``: (nodes, the last tensor)."""
    import onnx
    h, nh = onnx.helper, onnx.numpy_helper
    nodes, cur, k = [], src, 0
    while len(nodes) < n:
        more, cur = _links(h, nh, cur, k)
        nodes += more
        k += 1
    return nodes, cur


def _weights(nh):
    return [nh.from_array(np.array([0.1, -0.2, 0.3, 0.05], np.float32), "W"),
            nh.from_array(np.array([4], np.int64), "shape4"),
            nh.from_array(np.array([0], np.int64), "start0"),
            nh.from_array(np.array([4], np.int64), "end4"),
            nh.from_array(np.array([0], np.int64), "axes0"),
            nh.from_array(np.array([3, 2, 1, 0], np.int64), "perm")]


def model(n, where):
    """A model of an ``n``-node chain at the top level or in a loop body (``where``:
    "top", "loop", "while" or "scan"), bytes."""
    import onnx
    h, nh = onnx.helper, onnx.numpy_helper
    vi = h.make_tensor_value_info
    if where == "top":
        nodes, last = chain(n, "x")
        nodes.append(h.make_node("Identity", [last], ["y"]))
        graph = h.make_graph(nodes, "top", [vi("x", F, [4])], [vi("y", F, [4])], _weights(nh))
    elif where == "scan":
        nodes, last = chain(n, "c_in")
        nodes += [h.make_node("Add", [last, "x_t"], ["c_out"])]
        body = h.make_graph(nodes, "body", [vi("c_in", F, [4]), vi("x_t", F, [4])],
                            [vi("c_out", F, [4])])
        graph = h.make_graph([h.make_node("Scan", ["x", "xs"], ["y"], body=body,
                                          num_scan_inputs=1)], "scan",
                             [vi("x", F, [4]), vi("xs", F, [2, 4])], [vi("y", F, [4])],
                             _weights(nh))
    else:
        nodes, last = chain(n, "c_in")
        if where == "while":
            nodes += [h.make_node("ReduceSum", [last], ["s"], keepdims=0),
                      h.make_node("Less", ["s", "big"], ["cond_out"])]
        else:
            nodes.append(h.make_node("Identity", ["cond_in"], ["cond_out"]))
        nodes.append(h.make_node("Identity", [last], ["c_out"]))
        body = h.make_graph(nodes, "body", [vi("i", I64, []), vi("cond_in", B, []),
                                            vi("c_in", F, [4])],
                            [vi("cond_out", B, []), vi("c_out", F, [4])])
        graph = h.make_graph([h.make_node("Loop", ["M", "", "x"], ["y"], body=body)], where,
                             [vi("x", F, [4])], [vi("y", F, [4])],
                             _weights(nh) + [nh.from_array(np.array(2, np.int64), "M"),
                                             nh.from_array(np.array(1e9, np.float32), "big")])
    m = h.make_model(graph, opset_imports=[h.make_opsetid("", 18)])
    return m.SerializeToString()


def cpu_seconds(path):
    """CPU seconds of one import of ``path`` (the collector run first, not timed)."""
    gc.collect()
    t0 = time.process_time()
    fg.import_onnx(path, max_bytes=1 << 30)
    return time.process_time() - t0


def check(paths):
    """Each model imports and gives onnxruntime's value (where installed)."""
    x = np.array([0.5, -1.0, 2.0, 0.25], np.float32)
    feed = {"x": x}
    try:
        import onnxruntime as ort
    except ImportError:
        return
    for where, path in paths.items():
        f = {**feed, "xs": np.ones((2, 4), np.float32)} if where == "scan" else feed
        want = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, f)[0]
        g = fg.import_onnx(path, max_bytes=1 << 30)
        got = fg.run(g.by_name("y"), {g.by_name(k): v for k, v in f.items()})
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, nargs="+", default=[5000, 50000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--where", nargs="+", default=["top", "loop", "while", "scan"])
    args = ap.parse_args()
    print(f"{'nodes':>7} " + " ".join(f"{w + ' ms/node':>15}" for w in args.where)
          + f" {'loop/top':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.nodes:
            paths = {}
            for where in args.where:
                paths[where] = os.path.join(tmp, f"{where}{n}.onnx")
                with open(paths[where], "wb") as f:
                    f.write(model(n, where))
            if n <= 5000:
                check(paths)
            best = {w: float("inf") for w in args.where}
            for _ in range(args.repeats):          # alternating: the same load for each
                for w in args.where:
                    best[w] = min(best[w], cpu_seconds(paths[w]))
            row = " ".join(f"{best[w] / n * 1e3:15.4f}" for w in args.where)
            ratio = best["loop"] / best["top"] if {"loop", "top"} <= set(best) else float("nan")
            print(f"{n:7d} {row} {ratio:9.2f}")


if __name__ == "__main__":
    main()
