"""Mutation fuzzing of the two readers of files from outside: ``fg.load_graph`` and
``fg.import_onnx``. A real file is mutated many times (values, types, arity, nulls,
huge ints, negative ids, swapped ops); each mutant must either be refused with a
``GraphFileError`` (``OnnxImportError`` is one) or load into a graph that compiles and
runs. Seeded and bounded, so it runs in CI in seconds and fails the same way each time.
"""
import copy
import io
import json
import random
import zipfile

import numpy as np
import pytest

import flowgrad as fg
from op_cases import CASES

GRAPH_MUTANTS = 300
ONNX_MUTANTS = 300

#: values a mutation writes in place of another: nulls, wrong types, edges, huge ints
ODD = [None, True, False, 0, 1, -1, 2, 3, 2 ** 31, 2 ** 62, 2 ** 63, 2 ** 70, -2 ** 70, 1.5,
       1e308, "", "x", "float64", [], [0], [None], {}, {"$tuple": []}, {"$tuple": [0, 1]},
       {"$tuple": [-1]}, {"$slice": [None, None, 0]}, {"$array": "arrays/0.npy"},
       {"$scalar": ["int64", 2 ** 70]}, {"$scalar": ["int8", 300]}, {"$dtype": "int8"},
       {"$float": "nan"}, {"$body": {}}, {"$stream": -1}]


def _base_graph():
    """Every 4th op case with its gradient, and a class-index loss: ~300 nodes."""
    g = fg.Graph()
    with g:
        for i, (_, fn, arrays, _) in enumerate(CASES[::4]):
            with fg.name_scope(f"c{i}"):
                xs = [fg.placeholder(f"a{j}", shape=np.shape(a)) for j, a in enumerate(arrays)]
                fg.grad(fg.sum(fn(*xs)), xs)
        z = fg.placeholder("z", shape=(None, 3))
        t = fg.placeholder("t", shape=(None,), dtype=np.int64)
        fg.softmax_cross_entropy(z, t)
        fg.concatenate([z, z * 2.0], axis=1)[:, 1:4]
        v = fg.placeholder("v", shape=(3,))
        fg.hessian(fg.sum(fg.sin(v) * v), v)                  # a basis_map and its body
        fg.random.normal(like=z, seed=1) * fg.random.bernoulli((3,), 0.5, seed=2)
    return g


def _npy(arr):
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _mutate_member(members, rng):
    """An array member replaced: another dtype or shape, truncated, or a header byte
    flipped."""
    names = sorted(n for n in members if n.startswith("arrays/"))
    name = rng.choice(names)
    data, c = members[name], rng.random()
    if c < 0.3:
        members[name] = _npy(np.zeros(rng.choice([(), (2,), (3, 3), (0,)]),
                                      rng.choice(["f4", "f8", "i8", "?", "c16", ">f8"])))
    elif c < 0.6:
        members[name] = data[: rng.randrange(len(data))]
    else:       # in the header: a flipped value in the data is merely other data
        at = rng.randrange(min(len(data), 128))
        members[name] = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]


def _mutate(doc, rng):
    nodes = doc["nodes"]
    k = rng.randrange(len(nodes))
    rec = nodes[k]
    r = rng.random()
    if r < 0.3 and rec["attrs"]:                       # an attribute's value
        name = rng.choice(list(rec["attrs"]))
        v = rec["attrs"][name]
        if isinstance(v, dict) and len(v) == 1 and rng.random() < 0.5:
            (tag, payload), = v.items()
            if isinstance(payload, list) and payload:
                payload = list(payload)
                payload[rng.randrange(len(payload))] = rng.choice(ODD)
                rec["attrs"][name] = {tag: payload}
                return
        rec["attrs"][name] = rng.choice(ODD)
    elif r < 0.45:                                     # arity and ids
        ins, c = rec["inputs"], rng.random()
        if c < 0.3:
            ins.append(rng.randrange(-2, k + 2))
        elif c < 0.6 and ins:
            ins.pop(rng.randrange(len(ins)))
        elif ins:
            ins[rng.randrange(len(ins))] = rng.choice([rng.randrange(k), k, -1, 2 ** 70, None])
    elif r < 0.55:
        rec["shape"] = rng.choice([[], [None], [2 ** 70], [-1], [0], None,
                                   list(rec["shape"] or []) + [1]])
    elif r < 0.62:                                     # another op of the file
        rec["op"] = rng.choice(sorted({n["op"] for n in nodes if isinstance(n["op"], str)})
                               + [None, 3])
    elif r < 0.72:
        field = rng.choice(["kind", "name", "scope", "dtype", "value", "weak", "group"])
        rec[field] = rng.choice(ODD + ["placeholder", "constant", "variable", "op", "int32"])
    elif r < 0.8 and rec["attrs"]:
        name = rng.choice(list(rec["attrs"]))
        if rng.random() < 0.5:
            del rec["attrs"][name]
        else:
            rec["attrs"][name + "_"] = 1
    elif r < 0.85:
        doc[rng.choice(["gradients", "outputs", "version", "format"])] = rng.choice(ODD)
    else:                                              # another node's attributes
        rec["attrs"] = copy.deepcopy(rng.choice(nodes)["attrs"])


def _feed(g, rng, length):
    feed = {}
    for n in g.nodes:
        if n.kind == "placeholder":
            shape = tuple(length if s is None else s for s in n.shape)
            feed[n] = (rng.standard_normal(shape) + 3.0).astype(n.dtype) \
                if n.dtype.kind == "f" else np.zeros(shape, n.dtype)
    return feed


def _compiles_and_runs(g):
    """Compile every node, then run on a feed that fits the placeholders. A mutant may
    tie a run-time length to a fixed one (a reshape to (2, 3), a squeezed batch axis),
    which only some feeds satisfy, so the run is tried with each run-time length 1, 2
    and 3: one of them must run clean (the feed is the fuzzer's, not the file's)."""
    prog = fg.compile(list(g.nodes))
    for length in (1, 2, 3):
        try:
            with np.errstate(all="ignore"):
                prog(_feed(g, np.random.default_rng(0), length))
            return
        except (fg.FeedError, fg.RunError):
            if length == 3:
                raise


@pytest.fixture(scope="module")
def saved_graph(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "base.fg"
    g = _base_graph()
    fg.save_graph(path, g)
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    return path, members, json.loads(members["graph.json"])


def test_the_base_file_loads_compiles_and_runs(saved_graph):
    path, _, doc = saved_graph
    assert len(doc["nodes"]) > 250
    _compiles_and_runs(fg.load_graph(path))


def test_load_graph_mutants_are_refused_or_compile_and_run(saved_graph, tmp_path):
    _, members, doc0 = saved_graph
    rng = random.Random(18)
    outcomes = {"refused": 0, "loaded": 0}
    for i in range(GRAPH_MUTANTS):
        doc = copy.deepcopy(doc0)
        mutant = dict(members)
        if rng.random() < 0.15:
            _mutate_member(mutant, rng)
        else:
            for _ in range(rng.randint(1, 2)):
                _mutate(doc, rng)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for n, data in mutant.items():
                zf.writestr(n, json.dumps(doc) if n == "graph.json" else data)
        path = tmp_path / "m.fg"
        path.write_bytes(buf.getvalue())
        try:
            g = fg.load_graph(path)
        except fg.GraphFileError:
            outcomes["refused"] += 1
            continue
        except Exception as e:        # noqa: BLE001
            pytest.fail(f"mutant {i}: load_graph raised {type(e).__name__}: {e}")
        outcomes["loaded"] += 1
        try:
            _compiles_and_runs(g)
        except Exception as e:        # noqa: BLE001
            pytest.fail(f"mutant {i} loaded but then {type(e).__name__}: {e}")
    assert outcomes["refused"] > GRAPH_MUTANTS // 2 and outcomes["loaded"] > 10, outcomes


# -- import_onnx -------------------------------------------------------------------------------

def _base_model():
    """A model written with the onnx helper API (not by flowgrad) using most importers."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(5)
    init = {"W1": rng.standard_normal((6, 4)), "b1": rng.standard_normal(6),
            "W2": rng.standard_normal((6, 3)), "flat": np.array([-1], np.int64),
            "starts": np.array([1], np.int64), "ends": np.array([3], np.int64),
            "axes": np.array([1], np.int64), "idx": np.array([2, 0], np.int64),
            "shape2": np.array([2, 3], np.int64), "ax0": np.array([0], np.int64)}
    mk = helper.make_node
    nodes = [
        mk("Gemm", ["x", "W1", "b1"], ["z1"], name="gemm", transB=1, alpha=0.5),
        mk("Tanh", ["z1"], ["h1"], name="tanh"),
        mk("MatMul", ["h1", "W2"], ["z2"], name="mm"),
        mk("Softmax", ["z2"], ["p"], name="softmax", axis=-1),
        mk("Sigmoid", ["z2"], ["s"], name="sig"),
        mk("Mul", ["p", "s"], ["y"], name="mul"),
        mk("Slice", ["y", "starts", "ends", "axes"], ["tail"], name="slice"),
        mk("ReduceSum", ["tail", "axes"], ["row"], name="rsum", keepdims=0),
        mk("Transpose", ["y"], ["yt"], name="tr", perm=[1, 0]),
        mk("Reshape", ["yt", "flat"], ["flat_y"], name="reshape"),
        mk("ReduceLogSumExp", ["flat_y"], ["score"], name="lse", keepdims=0),
        mk("Gather", ["W2", "idx"], ["g"], name="gather", axis=1),
        mk("Constant", [], ["c"], name="const", value=numpy_helper.from_array(np.ones(3))),
        mk("ConstantOfShape", ["shape2"], ["zeros"], name="cos",
           value=numpy_helper.from_array(np.array([0.5]))),
        mk("Concat", ["zeros", "zeros"], ["cat"], name="concat", axis=0),
        mk("Cast", ["idx"], ["idx_f"], name="cast", to=TensorProto.DOUBLE),
        mk("Unsqueeze", ["idx_f", "ax0"], ["u"], name="unsq"),
        mk("Squeeze", ["u", "ax0"], ["sq"], name="sq"),
        mk("Expand", ["c", "shape2"], ["e"], name="expand"),
        mk("Add", ["e", "zeros"], ["e2"], name="add"),
        mk("Flatten", ["e2"], ["f"], name="flatten", axis=1),
        mk("Relu", ["f"], ["r"], name="relu"),
        mk("Greater", ["r", "c"], ["gt"], name="gt"),
        mk("Where", ["gt", "r", "c"], ["w"], name="where"),
    ] + _vocab_nodes(mk, init, rng)
    vi = helper.make_tensor_value_info
    outs = [vi(n, TensorProto.DOUBLE, None) for n in ("y", "row", "score", "g", "sq", "w", "cat")]
    outs += [vi(n, TensorProto.DOUBLE, None) for n in ("v_pool", "v_avg", "v_cum", "v_ein",
                                                       "v_s1", "v_prod", "v_act")]
    outs.append(vi("v_cast", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "fuzz", [vi("x", TensorProto.DOUBLE, ["batch", 4])],
                              outs, [numpy_helper.from_array(v, k) for k, v in init.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


ONNX_ODD_INTS = [0, 1, -1, 2, 7, -7, 2 ** 31, 2 ** 62, -2 ** 63]


def _mutate_onnx(model, rng):
    from onnx import AttributeProto, TensorProto
    graph = model.graph
    r = rng.random()
    names = [o for n in graph.node for o in n.output] + [i.name for i in graph.initializer]
    if r < 0.3:
        n = rng.choice(graph.node)
        c = rng.random()
        if c < 0.25:
            n.op_type = rng.choice([m.op_type for m in graph.node] + ["Nope"])
        elif c < 0.5 and n.input:
            n.input[rng.randrange(len(n.input))] = rng.choice(names + ["", "ghost"])
        elif c < 0.7:
            n.input.append(rng.choice(names + [""]))
        elif n.input:
            del n.input[rng.randrange(len(n.input))]
    elif r < 0.55:
        n = rng.choice([m for m in graph.node if m.attribute] or list(graph.node))
        if not n.attribute:
            return
        a = rng.choice(n.attribute)
        c = rng.random()
        if c < 0.4:
            a.type, a.i = AttributeProto.INT, rng.choice(ONNX_ODD_INTS)
        elif c < 0.55:
            a.type, a.f = AttributeProto.FLOAT, rng.choice([0.0, -1.0, float("nan"), 1e300])
        elif c < 0.7:
            a.type = AttributeProto.INTS
            a.ints[:] = [rng.choice(ONNX_ODD_INTS) for _ in range(rng.randrange(4))]
        elif c < 0.8:
            a.type, a.s = AttributeProto.STRING, b"x"
        elif c < 0.9:
            n.attribute.remove(a)
        elif a.type == AttributeProto.TENSOR:
            a.t.data_type = rng.choice([0, 8, 16, 999, TensorProto.INT64])
    elif r < 0.8:
        t = rng.choice(graph.initializer)
        c = rng.random()
        if c < 0.4:
            t.dims[:] = [rng.choice(ONNX_ODD_INTS + [3, 6]) for _ in range(rng.randrange(4))]
        elif c < 0.7:
            t.data_type = rng.choice([0, 1, 2, 7, 8, 9, 10, 16, 999])
        else:
            t.raw_data = t.raw_data[: rng.randrange(len(t.raw_data) + 1)]
    elif r < 0.92:
        x = graph.input[0].type.tensor_type
        if rng.random() < 0.5:
            x.elem_type = rng.choice([0, 1, 7, 8, 9, 11, 999])
        else:
            dim = rng.choice(x.shape.dim)
            dim.dim_value = rng.choice(ONNX_ODD_INTS[:6])
    else:
        model.opset_import[0].version = rng.choice([1, 7, 11, 13, 99])


def _vocab_nodes(mk, init, rng):
    """Issue 22's importers: conv, pooling, pad, cumsum, einsum, split, activations."""
    init.update({"img": np.array([-1, 1, 2, 2], np.int64), "Wc": rng.standard_normal((2, 1, 2, 2)),
                 "bc": rng.standard_normal(2), "pads4": np.array([0, 0, 0, 1, 0, 0, 1, 0]),
                 "sp": np.array([1, 2], np.int64), "lo": np.array(-0.5), "hi": np.array(0.7)})
    return [
        mk("Reshape", ["x", "img"], ["v_img"], name="v_reshape"),
        mk("Conv", ["v_img", "Wc", "bc"], ["v_conv"], name="v_conv", pads=[1, 1, 0, 0]),
        mk("Pad", ["v_conv", "pads4"], ["v_pad"], name="v_pad", mode="constant"),
        mk("MaxPool", ["v_pad"], ["v_pool"], name="v_maxpool", kernel_shape=[2, 2],
           strides=[2, 2]),
        mk("AveragePool", ["v_pad"], ["v_avg"], name="v_avgpool", kernel_shape=[2, 1]),
        mk("CumSum", ["z2", "axes"], ["v_cum"], name="v_cumsum"),
        mk("Einsum", ["h1", "W2"], ["v_ein"], name="v_einsum", equation="ij,jk->ik"),
        mk("Split", ["z2", "sp"], ["v_s1", "v_s2"], name="v_split", axis=1),
        mk("ReduceProd", ["h1", "axes"], ["v_prod"], name="v_rprod", keepdims=0),
        mk("LeakyRelu", ["z2"], ["v_lr"], name="v_leaky", alpha=0.1),
        mk("Elu", ["v_lr"], ["v_elu"], name="v_elu", alpha=0.5),
        mk("Clip", ["v_elu", "lo", "hi"], ["v_clip"], name="v_clip"),
        mk("Erf", ["v_clip"], ["v_erf"], name="v_erf"),
        mk("Tan", ["v_erf"], ["v_tan"], name="v_tan"),
        mk("Floor", ["v_tan"], ["v_act"], name="v_floor"),
        mk("Cast", ["v_s2"], ["v_cast"], name="v_cast", to=1),   # to float32
    ]


def test_import_onnx_mutants_are_refused_or_compile_and_run(tmp_path):
    onnx = pytest.importorskip("onnx")
    base = _base_model()
    path = tmp_path / "base.onnx"
    onnx.save(base, path)
    _compiles_and_runs(fg.import_onnx(path))
    rng = random.Random(18)
    outcomes = {"refused": 0, "loaded": 0}
    for i in range(ONNX_MUTANTS):
        model = onnx.ModelProto()
        model.CopyFrom(base)
        for _ in range(rng.randint(1, 2)):
            _mutate_onnx(model, rng)
        path.write_bytes(model.SerializeToString())
        try:
            g = fg.import_onnx(path)
        except fg.GraphFileError:
            outcomes["refused"] += 1
            continue
        except Exception as e:        # noqa: BLE001
            pytest.fail(f"mutant {i}: import_onnx raised {type(e).__name__}: {e}")
        outcomes["loaded"] += 1
        try:
            _compiles_and_runs(g)
        except Exception as e:        # noqa: BLE001
            pytest.fail(f"mutant {i} imported but then {type(e).__name__}: {e}")
    assert outcomes["refused"] > ONNX_MUTANTS // 4 and outcomes["loaded"] > 10, outcomes
