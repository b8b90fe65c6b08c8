"""Hostile ONNX files: a seeded mutation fuzz of ``fg.import_onnx``.

Valid models are the starting points: flowgrad's own exports across the op vocabulary
(tests/op_cases.py, in groups), the wave-3 graphs with scans, while loops, fori loops and
conds (tests/fuzz_wave3.py), an LSTM layer, and models written with ``onnx.helper``
(an MLP with the shape ops, conv and pooling, a Scan with axes and directions, a Loop of
a fixed count, a while-Loop, nested Ifs). Each mutant changes one to three protobuf
fields anywhere in the model, subgraphs included: dims, data types, raw data lengths,
typed data fields, strings in tensors, attribute types and values, input and output
names, node order (uses before definitions, cycles), duplicated names, opset versions,
body inputs and outputs, huge or negative declared shapes, external data.

Every mutant must be one of:

* refused at import with a typed ``fg.FlowgradError`` (``OnnxImportError`` is one),
  within a second, without reading any file but the model (an audit hook watches) and
  without allocating more than the file's budget allows (tracemalloc watches);
* or imported into a graph that compiles and runs (or refuses to run with a typed
  error), and — where onnxruntime accepts the same model and feed — gives onnxruntime's
  outputs: the same shapes, dtypes and values. A disagreement is a silent wrong.

Seeds are fixed; ``FLOWGRAD_ONNXFUZZ`` sets the number of mutants (default 2500).
"""
import os
import random
import signal
import sys
import threading
import time
import tracemalloc
import warnings

import numpy as np
import pytest

import flowgrad as fg

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import AttributeProto, TensorProto, helper, numpy_helper  # noqa: E402

N_MUTANTS = int(os.environ.get("FLOWGRAD_ONNXFUZZ", "2500"))
D, F, I64, B = TensorProto.DOUBLE, TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL

#: the largest array (elements) a mutant is run with: a model may ask for any size at run
#: time (an Expand to a 10^6 x 10^6 shape imports as a node); running it is not the point
RUN_MAX_ELEMENTS = 1 << 20
#: seconds a mutant's run may take in flowgrad, and then in onnxruntime
RUN_SECONDS = 2.0


# -- the valid models the mutants start from ----------------------------------------------

def _vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def _model(nodes, inputs, outputs, inits=(), opset=18):
    graph = helper.make_graph(nodes, "g", inputs, outputs,
                              [numpy_helper.from_array(v, k) for k, v in dict(inits).items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _mlp():
    """Gemm, activations, Softmax, shape ops with constant operands, Gather, Concat, Cast,
    ConstantOfShape, Expand, Where, Split, Pad, CumSum, Einsum."""
    rng = np.random.default_rng(5)
    init = {"W1": rng.standard_normal((6, 4)), "b1": rng.standard_normal(6),
            "W2": rng.standard_normal((6, 3)), "flat": np.array([-1], np.int64),
            "starts": np.array([1], np.int64), "ends": np.array([3], np.int64),
            "axes": np.array([1], np.int64), "idx": np.array([2, 0], np.int64),
            "shape2": np.array([2, 3], np.int64), "ax0": np.array([0], np.int64),
            "sp": np.array([1, 2], np.int64), "pads": np.array([0, 1, 0, 2], np.int64)}
    mk = helper.make_node
    nodes = [
        mk("Gemm", ["x", "W1", "b1"], ["z1"], transB=1, alpha=0.5),
        mk("Tanh", ["z1"], ["h1"]),
        mk("MatMul", ["h1", "W2"], ["z2"]),
        mk("Softmax", ["z2"], ["p"], axis=-1),
        mk("Sigmoid", ["z2"], ["s"]),
        mk("Mul", ["p", "s"], ["y"]),
        mk("Slice", ["y", "starts", "ends", "axes"], ["tail"]),
        mk("ReduceSum", ["tail", "axes"], ["row"], keepdims=0),
        mk("Transpose", ["y"], ["yt"], perm=[1, 0]),
        mk("Reshape", ["yt", "flat"], ["flat_y"]),
        mk("ReduceLogSumExp", ["flat_y"], ["score"], keepdims=0),
        mk("Gather", ["W2", "idx"], ["gw"], axis=1),
        mk("Constant", [], ["c"], value=numpy_helper.from_array(np.ones(3))),
        mk("ConstantOfShape", ["shape2"], ["zeros"],
           value=numpy_helper.from_array(np.array([0.5]))),
        mk("Concat", ["zeros", "zeros"], ["cat"], axis=0),
        mk("Cast", ["idx"], ["idx_f"], to=D),
        mk("Unsqueeze", ["idx_f", "ax0"], ["u"]),
        mk("Expand", ["c", "shape2"], ["e"]),
        mk("Add", ["e", "zeros"], ["e2"]),
        mk("Greater", ["e2", "c"], ["gt"]),
        mk("Where", ["gt", "e2", "c"], ["w"]),
        mk("Split", ["z2", "sp"], ["s1", "s2"], axis=1),
        mk("Pad", ["s2", "pads"], ["padded"], mode="constant"),
        mk("CumSum", ["padded", "ax0"], ["cum"]),
        mk("Einsum", ["h1", "W2"], ["ein"], equation="ij,jk->ik"),
    ]
    outs = [_vi(n, D, None) for n in ("y", "row", "score", "gw", "u", "w", "cat", "s1",
                                       "cum", "ein")]
    return _model(nodes, [_vi("x", D, ["batch", 4])], outs, init)


def _conv():
    rng = np.random.default_rng(6)
    init = {"Wc": rng.standard_normal((2, 1, 2, 2)), "bc": rng.standard_normal(2),
            "scale": rng.uniform(0.5, 1.5, 2), "bias": rng.standard_normal(2),
            "mean": rng.standard_normal(2), "var": rng.uniform(0.5, 1.5, 2)}
    init = {k: v.astype(np.float32) for k, v in init.items()}   # onnxruntime's Conv
    mk = helper.make_node
    nodes = [mk("Conv", ["x", "Wc", "bc"], ["cv"], pads=[1, 1, 0, 0], strides=[1, 1]),
             mk("BatchNormalization", ["cv", "scale", "bias", "mean", "var"], ["bn"]),
             mk("Relu", ["bn"], ["r"]),
             mk("MaxPool", ["r"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
             mk("AveragePool", ["r"], ["ap"], kernel_shape=[2, 1]),
             mk("GlobalAveragePool", ["bn"], ["gap"]),
             mk("Flatten", ["mp"], ["fl"], axis=1)]
    return _model(nodes, [_vi("x", F, ["N", 1, 4, 4])],
                  [_vi(n, F, None) for n in ("fl", "ap", "gap")], init)


def _scan():
    body = helper.make_graph(
        [helper.make_node("MatMul", ["h_in", "U"], ["hu"]),
         helper.make_node("Add", ["hu", "x_t"], ["z"]),
         helper.make_node("Tanh", ["z"], ["h_out"]),
         helper.make_node("Mul", ["h_out", "x_t"], ["y1"]),
         helper.make_node("ReduceSum", ["h_out"], ["y2"], keepdims=0)],
        "step", [_vi("h_in", D, [3]), _vi("x_t", D, [3])],
        [_vi("h_out", D, [3]), _vi("y1", D, [3]), _vi("y2", D, [])])
    node = helper.make_node("Scan", ["h0", "x"], ["hT", "ys1", "ys2"], body=body,
                            num_scan_inputs=1, scan_input_axes=[1],
                            scan_input_directions=[1], scan_output_axes=[1, 0],
                            scan_output_directions=[0, 1])
    return _model([node], [_vi("h0", D, [3]), _vi("x", D, [3, "T"])],
                  [_vi("hT", D, [3]), _vi("ys1", D, [3, "T"]), _vi("ys2", D, ["T"])],
                  {"U": np.random.default_rng(8).standard_normal((3, 3)) * 0.5})


def _loops():
    """A Loop of a fixed count with a scan output, then a while-Loop over its result."""
    mk = helper.make_node
    counted = helper.make_graph(
        [mk("Cast", ["i"], ["fi"], to=D), mk("Mul", ["v_in", "fi"], ["yv"]),
         mk("Add", ["v_in", "w"], ["v_out"]), mk("Identity", ["c"], ["c_out"])],
        "counted", [_vi("i", I64, []), _vi("c", B, []), _vi("v_in", D, [2])],
        [_vi("c_out", B, []), _vi("v_out", D, [2]), _vi("yv", D, [2])])
    cond = helper.make_graph(
        [mk("Cast", ["j"], ["fj"], to=D), mk("Mul", ["fj", "s"], ["step"]),
         mk("Add", ["u_in", "step"], ["u_out"]), mk("ReduceMax", ["u_out"], ["umax"],
                                                    keepdims=0),
         mk("Less", ["umax", "limit"], ["go"]), mk("Identity", ["u_in"], ["seen"])],
        "cond", [_vi("j", I64, []), _vi("k", B, []), _vi("u_in", D, [2])],
        [_vi("go", B, []), _vi("u_out", D, [2]), _vi("seen", D, [2])])
    nodes = [mk("Loop", ["M", "", "v0"], ["vT", "ys"], body=counted),
             mk("Loop", ["M2", "", "vT"], ["uT", "seen_all"], body=cond)]
    return _model(nodes, [_vi("v0", D, [2]), _vi("w", D, [2]), _vi("s", D, []),
                          _vi("limit", D, [])],
                  [_vi("ys", D, [4, 2]), _vi("uT", D, [2]), _vi("seen_all", D, ["n", 2])],
                  {"M": np.array(4, np.int64), "M2": np.array(6, np.int64)})


def _ifs():
    """If p: (If q: log(x)·w else w·x) else x·x, w read from the outer scope."""
    mk = helper.make_node
    inner = helper.make_node(
        "If", ["q"], ["nest"],
        then_branch=helper.make_graph([mk("Log", ["x"], ["lx"]), mk("Mul", ["lx", "w"],
                                                                     ["t_out"])],
                                      "then", [], [_vi("t_out", D, [2])]),
        else_branch=helper.make_graph([mk("Mul", ["x", "w"], ["o_out"])], "other", [],
                                      [_vi("o_out", D, [2])]))
    then_g = helper.make_graph([inner], "outer_then", [], [_vi("nest", D, [2])])
    else_g = helper.make_graph([mk("Mul", ["x", "x"], ["e_out"])], "else", [],
                               [_vi("e_out", D, [2])])
    node = helper.make_node("If", ["p"], ["y"], then_branch=then_g, else_branch=else_g)
    return _model([node], [_vi("x", D, [2]), _vi("w", D, []), _vi("p", B, []),
                           _vi("q", B, [])], [_vi("y", D, [2])])


def _exported(tmp):
    """flowgrad's exports: the op cases in groups, wave-3 graphs with loops, an LSTM."""
    from fuzz_wave3 import build_case, nn_case
    from op_cases import CASES
    models, group = [], []

    def flush():
        if group:
            with fg.Graph():
                outs = [fn(*[fg.placeholder(f"c{k}_{j}", shape=np.shape(a))
                             for j, a in enumerate(arrays)]) for k, fn, arrays in group]
            models.append(_export(outs, tmp))
            group.clear()
    for k, (_, fn, arrays, _) in enumerate(CASES):
        with fg.Graph():         # only the cases ONNX has operators for
            outs = fn(*[fg.placeholder(f"a{j}", shape=np.shape(a))
                         for j, a in enumerate(arrays)])
            try:
                _imports(_export(outs, tmp), tmp)
            except fg.FlowgradError:   # (an op the importer lacks: ScatterElements …)
                continue
        group.append((k, fn, arrays))
        if len(group) == 10:
            flush()
    flush()
    for seed in (31, 133, 27, 200, 411, 21, 3, 12):
        case = build_case(seed, max_steps=4)
        for outs in (case.outs, case.outs[:2]):     # with gradients, or without
            try:
                models.append(_imports(_export(outs, tmp), tmp))
                break
            except fg.FlowgradError:   # complex64; a gradient's scatter (ScatterElements)
                continue
    try:   # (an LSTM on a run-time batch: zeros_like of it is a ConstantOfShape of Shape)
        models.append(_imports(_export(nn_case("lstm", "float32").outs[:1], tmp), tmp))
    except fg.FlowgradError:
        pass
    return [m for m in models if sum(1 for _ in _graphs(m)) and _size(m) <= 400]


def _imports(model, tmp):
    """``model``, after checking that it imports (or the import's error)."""
    path = tmp / "check.onnx"
    path.write_bytes(model.SerializeToString())
    fg.import_onnx(path)
    return model


def _size(model):
    return sum(len(gr.node) for gr in _graphs(model))


def _export(outs, tmp):
    path = tmp / "export.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fg.export_onnx(outs, path)
    return onnx.load_model_from_string(path.read_bytes())


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("onnxfuzz")
    return [_mlp(), _conv(), _scan(), _loops(), _ifs()] + _exported(tmp)


# -- running a model: flowgrad and onnxruntime -------------------------------------------

REFUSALS = [None]


class _Slow(Exception):
    pass


def _on_alarm(signum, frame):
    raise _Slow()


def _feed(model, rng):
    """Arrays for the model's graph inputs (not initializers): every symbolic length 2,
    floats standard normal, ints in [0, 2) (valid indices and class labels), bools drawn;
    None when one would be too large."""
    inits = {t.name for t in model.graph.initializer}
    feed = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        t = vi.type.tensor_type
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type))
        shape = tuple(d.dim_value if d.HasField("dim_value") else 2 for d in t.shape.dim)
        if np.prod(shape, dtype=float) > RUN_MAX_ELEMENTS or min(shape, default=1) < 0:
            return None
        if dtype.kind == "f":
            feed[vi.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            feed[vi.name] = np.asarray(rng.random(shape) < 0.5)
        else:
            feed[vi.name] = rng.integers(0, 2, shape).astype(dtype)
    return feed


def _too_large(g, feed):
    """Whether a node of ``g`` would hold more than RUN_MAX_ELEMENTS on ``feed`` (a
    run-time length counted as the longest fed length)."""
    longest = max([max(np.shape(v), default=1) for v in feed.values()], default=1)
    for n in g.nodes:
        size = np.prod([longest if d is None else d for d in n.shape], dtype=float)
        if size > RUN_MAX_ELEMENTS:
            return True
    return False


def _run_flowgrad(g, outs, feed):
    """The outputs, or the typed FlowgradError the run raised, or _Slow."""
    fed = {g.by_name(k): v for k, v in feed.items()}
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, RUN_SECONDS)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            return fg.compile(outs)(fed)
    except fg.FlowgradError as err:
        return err
    except _Slow as err:
        return err
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _run_onnxruntime(data, feed):
    """onnxruntime's outputs, or None where it refuses the model or the feed (the
    reason in ``REFUSALS[0]``)."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    try:
        sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    except Exception as err:   # noqa: BLE001  (onnxruntime refuses the model: its right)
        REFUSALS[0] = err
        return None
    run_opts = ort.RunOptions()
    run_opts.log_severity_level = 4
    timer = threading.Timer(RUN_SECONDS, lambda: setattr(run_opts, "terminate", True))
    timer.start()
    try:
        return sess.run(None, feed, run_opts)
    except Exception as err:   # noqa: BLE001
        REFUSALS[0] = err
        return None
    finally:
        timer.cancel()


def _agree(name, got, want):
    """A message when flowgrad's ``got`` is not onnxruntime's ``want``, else None."""
    got = np.asarray(got)
    if got.shape != want.shape or got.dtype != want.dtype:
        return f"{name}: flowgrad gives {got.dtype}{got.shape}, onnxruntime " \
               f"{want.dtype}{want.shape}"
    if want.dtype.kind in "iub":
        same = np.array_equal(got, want)
    else:
        # float16 products and sums round differently (onnxruntime accumulates in float32)
        tol = {2: 1e-2, 4: 1e-3}.get(want.dtype.itemsize, 1e-9)
        same = np.allclose(got, want, rtol=tol, atol=tol, equal_nan=True) and \
            np.array_equal(np.isnan(got), np.isnan(want))
    return None if same else f"{name}: flowgrad gives {got!r:.300}, onnxruntime {want!r:.300}"


# -- watching the import: files opened, memory taken ----------------------------------------

_OPENED = []
_WATCHING = [False]


def _audit(event, args):
    if _WATCHING[0] and event == "open":
        _OPENED.append(args[0])


sys.addaudithook(_audit)


def _import(path, size, traced):
    """Import ``path``: (graph, None) or (None, the typed error); a bare exception, a
    second file opened, a slow import or (``traced``: watched by tracemalloc, which
    slows it threefold) more than the budget allocated fail the test."""
    _OPENED.clear()
    if traced:
        tracemalloc.start()
    _WATCHING[0] = True
    start = time.perf_counter()
    try:
        return fg.import_onnx(path), None
    except fg.FlowgradError as err:
        return None, err
    finally:
        took = time.perf_counter() - start
        _WATCHING[0] = False
        _, peak = tracemalloc.get_traced_memory()     # (0, 0) when not traced
        tracemalloc.stop()
        others = [p for p in _OPENED if not isinstance(p, int) and
                  os.fspath(p) != os.fspath(path) and not str(p).endswith((".py", ".pyc"))]
        assert not others, f"import_onnx opened {others}"
        # the budget (64× the file, at least 1 MiB) plus the graph's own objects
        assert peak < 64 * size + (8 << 20), f"import_onnx took {peak} bytes"
        assert took < (3.0 if traced else 1.0), f"import_onnx took {took:.2f} s"


def check_model(model, path, rng, traced=True):
    """Import ``model`` and judge it (module docstring): returns (outcome, message), the
    message set for a silent wrong or a bare exception."""
    data = model.SerializeToString()
    path.write_bytes(data)
    try:
        g, err = _import(path, len(data), traced)
    except AssertionError:
        raise
    except Exception as e:     # noqa: BLE001
        return "bare", f"import_onnx raised {type(e).__name__}: {e}"
    if g is None:
        return "refused", None
    feed = _feed(model, rng)
    if feed is None:
        return "imported", None
    try:
        outs = [g.by_name(o.name) for o in model.graph.output]
        if _too_large(g, feed):
            return "imported", None
        got = _run_flowgrad(g, outs, feed)
    except fg.FlowgradError:
        return "run refused", None
    except Exception as e:     # noqa: BLE001
        return "bare", f"the imported graph raised {type(e).__name__}: {e}"
    if isinstance(got, (fg.FlowgradError, _Slow)):
        return "run refused", None
    want = _run_onnxruntime(data, feed)
    if want is None:
        return "ran", None
    for o, a, b in zip(model.graph.output, got, want):
        msg = _agree(o.name, a, b)
        if msg:
            return "wrong", msg
    return "agreed", None


# -- mutations -------------------------------------------------------------------------------

ODD_INTS = [0, 1, -1, 2, 3, 7, -7, 2 ** 31 - 1, 2 ** 31, 2 ** 62, 2 ** 63 - 1, -2 ** 63,
            10 ** 12]
ODD_DIMS = [0, 1, 2, 3, 5, -1, -3, 10 ** 6, 2 ** 31, 2 ** 40, 2 ** 62]
ODD_FLOATS = [0.0, -0.0, 1.0, -1.0, 0.5, 1e300, float("nan"), float("inf"), -float("inf")]
DATA_TYPES = list(range(0, 24)) + [999, -1]
OPSETS = [1, 6, 7, 8, 9, 10, 11, 12, 13, 16, 17, 18, 19, 20, 21, 22, 99, 0, -1]
OP_TYPES = ["Add", "Sub", "Mul", "Div", "Pow", "MatMul", "Gemm", "Neg", "Exp", "Log",
            "Sqrt", "Abs", "Tanh", "Relu", "Sigmoid", "Softplus", "Identity", "Not",
            "Where", "Constant", "ConstantOfShape", "Cast", "ReduceSum", "ReduceMean",
            "ReduceMax", "ReduceProd", "Softmax", "LogSoftmax", "Reshape", "Flatten",
            "Transpose", "Unsqueeze", "Squeeze", "Concat", "Expand", "Gather", "Slice",
            "Shape", "Size", "Equal", "Less", "Greater", "And", "Or", "IsNaN", "Clip", "Pad",
            "Split", "CumSum", "Einsum", "Conv", "MaxPool", "AveragePool", "Loop", "Scan",
            "If", "Floor", "Erf", "Gelu", "Elu", "LeakyRelu", "Det", "Sum", "Max", "Min",
            "LSTM", "Nope"]
ATTR_NAMES = ["axis", "axes", "perm", "to", "keepdims", "value", "body", "then_branch",
              "else_branch", "num_scan_inputs", "scan_input_axes", "scan_output_axes",
              "scan_input_directions", "transA", "transB", "alpha", "beta", "equation",
              "mode", "pads", "strides", "kernel_shape", "split", "num_outputs",
              "allowzero", "noop_with_empty_axes", "start", "end", "exclusive", "epsilon"]


def _graphs(model):
    """Every graph of ``model``: its own and its nodes' subgraphs, walked with a stack."""
    out, stack = [], [model.graph]
    while stack:
        gr = stack.pop()
        out.append(gr)
        for n in gr.node:
            for a in n.attribute:
                if a.HasField("g"):
                    stack.append(a.g)
                stack.extend(a.graphs)
    return out


def _tensors(model):
    """Every TensorProto of ``model``: initializers and tensor attributes, anywhere."""
    out = []
    for gr in _graphs(model):
        out += list(gr.initializer)
        for n in gr.node:
            for a in n.attribute:
                out += ([a.t] if a.HasField("t") else []) + list(a.tensors)
    return out


def _names(model):
    names = set()
    for gr in _graphs(model):
        names |= {v.name for v in (*gr.input, *gr.output)} | {t.name for t in gr.initializer}
        names |= {o for n in gr.node for o in (*n.input, *n.output)}
    return sorted(names - {""})


def _odd_tensor(rng):
    arr = rng.choice([np.zeros((0,)), np.array([10 ** 6, 10 ** 6], np.int64), np.array(-1),
                      np.array([2.5, np.nan]), np.array([1, 2], np.int32), np.array(True),
                      np.full((2, 3), 0.5, np.float32)])
    return numpy_helper.from_array(np.asarray(arr))


def _m_dims(model, rng, t):
    c = rng.random()
    if c < 0.5 and len(t.dims):
        t.dims[rng.randrange(len(t.dims))] = rng.choice(ODD_DIMS)
    elif c < 0.7:
        t.dims.append(rng.choice(ODD_DIMS))
    elif c < 0.85 and len(t.dims):
        del t.dims[rng.randrange(len(t.dims))]
    else:
        t.dims[:] = [rng.choice(ODD_DIMS) for _ in range(rng.randrange(1, 4))]
    return "dims"


def _m_data(model, rng, t):
    c = rng.random()
    if c < 0.35:
        t.data_type = rng.choice(DATA_TYPES)
        return "data_type"
    if c < 0.6 and t.raw_data:
        cut = rng.randrange(len(t.raw_data) + 8)
        t.raw_data = t.raw_data[:cut] if cut < len(t.raw_data) else t.raw_data + b"\x07" * 8
        return "raw_data length"
    if c < 0.75:       # the data moved to (or added in) a typed field
        values = np.frombuffer(t.raw_data, np.uint8)[:4].tolist() if t.raw_data else [1]
        field = rng.choice(["float_data", "int32_data", "int64_data", "double_data",
                            "uint64_data"])
        getattr(t, field).extend(values)
        if rng.random() < 0.5:
            t.ClearField("raw_data")
        return f"typed data {field}"
    if c < 0.85:
        t.string_data.extend([b"x", b"\xff" * 3])
        if rng.random() < 0.5:
            t.data_type = TensorProto.STRING
        return "strings"
    t.data_location = TensorProto.EXTERNAL
    entry = t.external_data.add()
    entry.key, entry.value = "location", rng.choice([_SECRET[0], "../secret.bin",
                                                      "secret.bin"])
    return "external data"


def _m_tensor(model, rng):
    tensors = _tensors(model)
    if not tensors:
        return None
    t = rng.choice(tensors)
    if rng.random() < 0.1:          # a name another tensor has (or none)
        t.name = rng.choice(_names(model) + [""])
        return "tensor name"
    if t.data_type == TensorProto.INT64 and len(t.dims) <= 1 and rng.random() < 0.4:
        # shape, axes, pads, bounds, trip counts: huge, negative or odd, as many or not
        count = t.dims[0] if len(t.dims) and 0 < t.dims[0] <= 8 else rng.randrange(1, 5)
        values = np.array([rng.choice(ODD_INTS + [10 ** 6]) for _ in range(count)], np.int64)
        t.CopyFrom(numpy_helper.from_array(values.reshape(tuple(t.dims)) if len(t.dims) and
                                           t.dims[0] == count else values, t.name))
        return "int operand values"
    return (_m_dims if rng.random() < 0.4 else _m_data)(model, rng, t)


def _copy(message):
    """A copy of a protobuf message (copying a graph into its own subgraph in place
    would crash protobuf)."""
    out = type(message)()
    out.CopyFrom(message)
    return out


def _node(model, rng):
    graphs = [gr for gr in _graphs(model) if len(gr.node)]
    gr = rng.choice(graphs)
    return gr, rng.randrange(len(gr.node))


def _m_node(model, rng):
    gr, k = _node(model, rng)
    n, c = gr.node[k], rng.random()
    names = _names(model) + ["", "ghost"]
    if c < 0.12:
        n.op_type = rng.choice(OP_TYPES + [m.op_type for m in gr.node])
        return "op_type"
    if c < 0.3 and len(n.input):
        n.input[rng.randrange(len(n.input))] = rng.choice(names)
        return "input name"
    if c < 0.38:
        n.input.append(rng.choice(names))
        return "extra input"
    if c < 0.46 and len(n.input):
        del n.input[rng.randrange(len(n.input))]
        return "input removed"
    if c < 0.56 and len(n.output):
        n.output[rng.randrange(len(n.output))] = rng.choice(names)
        return "output name"
    if c < 0.62:
        n.output.append(rng.choice(names + ["fresh"]))
        return "extra output"
    if c < 0.7:
        node = gr.node[k]
        copy = type(node)()
        copy.CopyFrom(node)
        gr.node.insert(rng.randrange(len(gr.node) + 1), copy)
        return "node duplicated"
    if c < 0.78:
        del gr.node[k]
        return "node removed"
    if c < 0.9:      # node order: a use before its definition, or a cycle
        moved = _copy(n)
        del gr.node[k]
        at = rng.randrange(len(gr.node) + 1)
        gr.node.insert(at, moved)
        other = gr.node[rng.randrange(len(gr.node))]
        if len(moved.input) and len(other.output) and rng.random() < 0.5:
            gr.node[at].input[0] = other.output[0]      # (itself: a self-loop)
        return "node order"
    n.domain = rng.choice(["com.microsoft", "ai.onnx.ml", "ai.onnx", "x"])
    return "domain"


def _m_attribute(model, rng):
    gr, k = _node(model, rng)
    n, c = gr.node[k], rng.random()
    if c < 0.2 or not len(n.attribute):
        a = n.attribute.add()
        a.name = rng.choice(ATTR_NAMES + [x.name for x in n.attribute])
    else:
        a = rng.choice(n.attribute)
        if c < 0.3:
            n.attribute.remove(a)
            return "attribute removed"
    for field in ("i", "f", "s", "t", "g", "ints", "floats", "strings", "tensors", "graphs"):
        a.ClearField(field)
    kind = rng.choice(["INT", "INT", "FLOAT", "INTS", "INTS", "STRING", "TENSOR", "GRAPH",
                       "UNDEFINED", "FLOATS"])
    a.type = getattr(AttributeProto, kind)
    if kind == "INT":
        a.i = rng.choice(ODD_INTS)
    elif kind == "FLOAT":
        a.f = rng.choice(ODD_FLOATS)
    elif kind == "INTS":
        a.ints.extend(rng.choice(ODD_INTS + [0, 1]) for _ in range(rng.randrange(5)))
    elif kind == "FLOATS":
        a.floats.extend(rng.choice(ODD_FLOATS) for _ in range(rng.randrange(3)))
    elif kind == "STRING":
        a.s = rng.choice([b"x", b"tanh", b"reflect", b"SAME_LOWER", b"ij,jk->ik", b"\xff"])
    elif kind == "TENSOR":
        a.t.CopyFrom(_odd_tensor(rng))
    elif kind == "GRAPH":
        a.g.CopyFrom(_copy(rng.choice(_graphs(model))))
    return f"attribute {a.name}={kind}"


def _m_value_info(model, rng):
    gr = rng.choice(_graphs(model))
    infos = [v for v in (*gr.input, *gr.output)]
    if not infos:
        return None
    vi, c = rng.choice(infos), rng.random()
    t = vi.type.tensor_type
    if c < 0.25:
        t.elem_type = rng.choice(DATA_TYPES[:24])
        return "elem_type"
    if c < 0.55 and len(t.shape.dim):
        d = t.shape.dim[rng.randrange(len(t.shape.dim))]
        if rng.random() < 0.7:
            d.dim_value = rng.choice(ODD_DIMS)
        else:
            d.dim_param = "sym"
        return "declared dim"
    if c < 0.65:
        t.shape.dim.add().dim_value = rng.choice(ODD_DIMS)
        return "declared rank"
    if c < 0.72:
        t.ClearField("shape")
        return "no shape"
    if c < 0.8:
        vi.name = rng.choice(_names(model))
        return "value_info name"
    if c < 0.9:
        seq = gr.input if rng.random() < 0.5 else gr.output
        if len(seq):
            del seq[rng.randrange(len(seq))]
        return "value_info removed"
    seq = gr.input if rng.random() < 0.5 else gr.output
    seq.add().CopyFrom(rng.choice(infos))
    return "value_info duplicated"


def _m_opset(model, rng):
    c = rng.random()
    if c < 0.7:
        model.opset_import[0].version = rng.choice(OPSETS)
    elif c < 0.8:
        model.opset_import[0].domain = rng.choice(["ai.onnx", "x", "ai.onnx.ml"])
    elif c < 0.9:
        model.opset_import.add().CopyFrom(helper.make_opsetid("", rng.choice(OPSETS)))
    else:
        del model.opset_import[:]
    return "opset"


def _m_subgraph(model, rng):
    holders = [(n, a) for gr in _graphs(model) for n in gr.node for a in n.attribute
               if a.HasField("g")]
    if not holders:
        return None
    n, a = rng.choice(holders)
    c = rng.random()
    if c < 0.3:
        a.g.CopyFrom(_copy(rng.choice(_graphs(model))))
        return "subgraph swapped"
    if c < 0.5:       # the node nested in its own body, a few levels deep
        inner = _copy(n)
        for _ in range(rng.randrange(20)):
            outer = _copy(n)
            next(x for x in outer.attribute if x.name == a.name).g.node.append(inner)
            inner = outer
        a.g.node.append(inner)
        return "subgraph nested"
    if c < 0.7 and len(a.g.node):
        a.g.node[rng.randrange(len(a.g.node))].input.append(rng.choice(_names(model)))
        return "subgraph reads outside"
    seq = a.g.input if rng.random() < 0.5 else a.g.output
    if len(seq) and rng.random() < 0.5:
        del seq[rng.randrange(len(seq))]
    elif len(seq):
        seq.add().CopyFrom(seq[rng.randrange(len(seq))])
    return "subgraph arity"


MUTATIONS = [(_m_tensor, 0.26), (_m_node, 0.24), (_m_attribute, 0.2),
             (_m_value_info, 0.14), (_m_opset, 0.05), (_m_subgraph, 0.11)]


def mutate(model, rng):
    """One mutation of ``model`` in place; its label (None: nothing to mutate)."""
    fns, weights = zip(*MUTATIONS)
    fn = rng.choices(fns, weights)[0]
    try:
        return fn(model, rng)
    except (ValueError, TypeError, IndexError):   # a value the protobuf field cannot hold
        return None


_SECRET = [""]      # the absolute path of a file no import may read
#: the mutations that change sizes: their mutants' imports are watched by tracemalloc
SIZED = {"dims", "raw_data length", "int operand values", "declared dim", "declared rank",
         "subgraph nested"}


def test_mutants_are_refused_typed_or_agree_with_onnxruntime(bases, tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"api-key-12345678" * 4)
    _SECRET[0] = str(secret)
    rng = random.Random(2024)
    data_rng = np.random.default_rng(7)
    outcomes = {}
    for i in range(N_MUTANTS):
        model = onnx.ModelProto()
        model.CopyFrom(rng.choice(bases))
        labels = [mutate(model, rng) for _ in range(rng.choice([1, 1, 2, 3]))]
        # memory is watched where a mutant asks for sizes, and on every fourth besides
        traced = i % 4 == 0 or any(x in SIZED for x in labels)
        outcome, msg = check_model(model, tmp_path / "m.onnx", data_rng, traced)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        assert msg is None, f"mutant {i} ({labels}): {msg}"
    # the mutants reach both sides: refusals, and imports that run as onnxruntime does
    assert outcomes.get("refused", 0) > N_MUTANTS // 4, outcomes
    assert outcomes.get("agreed", 0) > N_MUTANTS // 20, outcomes


# -- the defects the fuzz found, at their boundaries ----------------------------------------

from flowgrad.io.onnx_import import OnnxImportError  # noqa: E402

INT64_MAX, INT64_MIN = 2 ** 63 - 1, -2 ** 63


def _save(tmp_path, nodes, inputs, outputs, inits=(), opset=18):
    path = tmp_path / "m.onnx"
    path.write_bytes(_model(nodes, inputs, outputs, inits, opset).SerializeToString())
    return path


def _onnxruntime(path, feed):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)


def test_every_graph_output_is_found_by_name(tmp_path):
    """An output that is an Identity of a graph input, of a weight or of another output
    (flowgrad's own export writes ``p:out = Identity(p)``, and ``sum`` of a 0-d input)
    had no node of its name: g.by_name(output) was a KeyError."""
    nodes = [helper.make_node("Identity", ["x"], ["x:out"]),
             helper.make_node("Identity", ["w"], ["w:out"]),
             helper.make_node("Sin", ["x"], ["s"]),
             helper.make_node("Identity", ["s"], ["s:out"]),
             helper.make_node("Identity", ["b"], ["b:out"])]
    path = _save(tmp_path, nodes, [_vi("x", D, [4]), _vi("b", B, [2])],
                 [_vi(n, D, [4]) for n in ("x:out", "w:out", "s", "s:out")] +
                 [_vi("b:out", B, [2])], {"w": np.array([1.5, -0.0, np.inf, 2.0])})
    g = fg.import_onnx(path)
    x = np.array([-0.0, np.nan, 1e-310, -3.0])
    b = np.array([True, False])
    names = ["x:out", "w:out", "s", "s:out", "b:out"]
    got = dict(zip(names, fg.run([g.by_name(n) for n in names], {"x": x, "b": b})))
    want = dict(zip(names, _onnxruntime(path, {"x": x, "b": b})))
    for n in ("x:out", "w:out", "b:out"):      # bit for bit: -0.0, NaN, subnormals
        assert got[n].dtype == want[n].dtype and got[n].tobytes() == want[n].tobytes(), n
    with np.errstate(invalid="ignore"):
        np.testing.assert_allclose(got["s"], np.sin(x), rtol=1e-15)
    assert got["s:out"].tobytes() == got["s"].tobytes()
    with g:                                    # x:out is x: d(sum(c·x:out))/dx = c
        c = np.array([1.0, 2.0, 3.0, 4.0])
        dx = fg.run(fg.grad(fg.sum(g.by_name("x:out") * c), g.by_name("x")), {"x": x})
    np.testing.assert_array_equal(dx, c)


def _reduce(tmp_path, keepdims, axes=(1,)):
    node = helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=keepdims)
    return _save(tmp_path, [node], [_vi("x", D, [2, 3])], [_vi("y", D, None)],
                 {"axes": np.array(axes, np.int64)})


@pytest.mark.parametrize("keepdims", [0, 1])
def test_keepdims_0_and_1_are_numpy_keepdims(keepdims, tmp_path):
    x = np.arange(6.0).reshape(2, 3)
    g = fg.import_onnx(_reduce(tmp_path, keepdims))
    np.testing.assert_array_equal(fg.run(g.by_name("y"), {"x": x}),
                                  x.sum(axis=1, keepdims=bool(keepdims)))


@pytest.mark.parametrize("keepdims", [2, -1])
def test_a_flag_other_than_0_or_1_is_refused(keepdims, tmp_path):
    """keepdims=2 imported as keepdims (a truth test) where onnxruntime keeps the
    dimension only for exactly 1: a (2, 1) result against onnxruntime's (2,)."""
    path = _reduce(tmp_path, keepdims)
    assert _onnxruntime(path, {"x": np.ones((2, 3))})[0].shape == (2,)
    with pytest.raises(OnnxImportError, match=f"keepdims={keepdims} must be 0 or 1"):
        fg.import_onnx(path)


def _slice(tmp_path, start, end, step, n=5):
    inits = {k: np.array([v], np.int64) for k, v in
             (("s", start), ("e", end), ("a", 0), ("st", step))}
    node = helper.make_node("Slice", ["x", "s", "e", "a", "st"], ["y"])
    return _save(tmp_path, [node], [_vi("x", D, [n])], [_vi("y", D, None)], inits)


@pytest.mark.parametrize("start, end, step, want", [
    (INT64_MAX, 1, 1, []),              # was x[0:1]: a huge start read as "from 0"
    (INT64_MIN, INT64_MIN, 1, []),      # was all of x: a huge end read as "to the end"
    (-6, INT64_MIN, -1, [0.0]),         # a start below -5 clamps to 0 (numpy: nothing)
    (-5, INT64_MIN, -1, [0.0]),
    (-2, INT64_MIN, -1, [3.0, 2.0, 1.0, 0.0]),
    (INT64_MAX, INT64_MIN, -1, [4.0, 3.0, 2.0, 1.0, 0.0]),
    (2 ** 31 - 2, 2, -1, [4.0, 3.0])])
def test_slice_bounds_are_clamped_as_onnx_says(start, end, step, want, tmp_path):
    path = _slice(tmp_path, start, end, step)
    x = np.arange(5.0)
    np.testing.assert_array_equal(_onnxruntime(path, {"x": x})[0], want)
    g = fg.import_onnx(path)
    np.testing.assert_array_equal(fg.run(g.by_name("y"), {"x": x}), want)


@pytest.mark.parametrize("end", [2 ** 31 - 1, INT64_MAX])
def test_an_end_of_int_max_going_backwards_is_refused(end, tmp_path):
    """onnxruntime reads it as numpy's None (x[4::-1], all of x), the standard clamps it
    to the last element (nothing); an end of 2**31 - 2 is clamped alike by both."""
    with pytest.raises(OnnxImportError, match=f"end of {end} with step -1"):
        fg.import_onnx(_slice(tmp_path, INT64_MAX, end, -1))


def test_a_backward_start_below_minus_one_on_a_run_time_length_is_refused(tmp_path):
    node = helper.make_node("Slice", ["x", "s", "e", "a", "st"], ["y"])
    for start, ok in ((-1, True), (-2, False)):
        inits = {"s": np.array([start], np.int64), "e": np.array([INT64_MIN], np.int64),
                 "a": np.array([0], np.int64), "st": np.array([-1], np.int64)}
        path = _save(tmp_path, [node], [_vi("x", D, ["n"])], [_vi("y", D, None)], inits)
        if ok:
            g = fg.import_onnx(path)
            np.testing.assert_array_equal(fg.run(g.by_name("y"), {"x": np.arange(3.0)}),
                                          [2.0, 1.0, 0.0])
        else:
            with pytest.raises(OnnxImportError, match="start of -2 with step -1"):
                fg.import_onnx(path)


@pytest.mark.parametrize("axis, ok", [(1, True), (-2, True), (2, False), (-3, False)])
def test_an_axis_out_of_range_is_refused_not_wrapped(axis, ok, tmp_path):
    """axes=[2] of a 2-d input was taken modulo 2: a sum over axis 0."""
    path = _reduce(tmp_path, 0, axes=(axis,))
    x = np.arange(6.0).reshape(2, 3)
    if ok:
        g = fg.import_onnx(path)
        np.testing.assert_array_equal(fg.run(g.by_name("y"), {"x": x}), x.sum(axis=axis))
    else:
        with pytest.raises(OnnxImportError, match=f"axis {axis} is out of range"):
            fg.import_onnx(path)


@pytest.mark.parametrize("axis, ok", [(2, True), (-2, True), (3, False), (-3, False)])
def test_flatten_takes_axes_up_to_the_rank(axis, ok, tmp_path):
    node = helper.make_node("Flatten", ["x"], ["y"], axis=axis)
    path = _save(tmp_path, [node], [_vi("x", D, [2, 3])], [_vi("y", D, None)])
    if ok:
        x = np.arange(6.0).reshape(2, 3)
        g = fg.import_onnx(path)
        a = axis + 2 if axis < 0 else axis       # [-r, r], a negative one from r
        want = x.reshape(int(np.prod(x.shape[:a])), -1)
        np.testing.assert_array_equal(_onnxruntime(path, {"x": x})[0], want)
        np.testing.assert_array_equal(fg.run(g.by_name("y"), {"x": x}), want)
    else:
        with pytest.raises(OnnxImportError, match=f"axis {axis} is out of range"):
            fg.import_onnx(path)


def _schema_case(case):
    """(nodes, inputs, inits, opset, the refusal's message) of a malformed node that
    used to import as some graph; each has a well-formed twin (``case + "_ok"``)."""
    mk, x2 = helper.make_node, [_vi("x", D, [2, 3])]
    f32 = {"f": np.ones(3, np.float32)}
    table = {
        # numpy would promote; ONNX has no promotion (onnxruntime refuses the model)
        "promotion": ([mk("Add", ["x", "f"], ["y"])], x2, f32, 18, "no type promotion"),
        "promotion_ok": ([mk("Cast", ["f"], ["f64"], to=D), mk("Add", ["x", "f64"], ["y"])],
                         x2, f32, 18, None),
        "unknown attribute": ([mk("Relu", ["x"], ["y"], alpha=0.5)], x2, {}, 18,
                              "Relu has no attribute 'alpha'"),
        "unknown attribute_ok": ([mk("LeakyRelu", ["x"], ["y"], alpha=0.5)], x2, {}, 18, None),
        "attribute type": ([mk("Softmax", ["x"], ["y"], axis=1.0)], x2, {}, 18,
                           "'axis' is FLOAT, but Softmax takes INT"),
        "attribute type_ok": ([mk("Softmax", ["x"], ["y"], axis=1)], x2, {}, 18, None),
        "variadic left out": ([mk("Concat", ["x", "", "x"], ["y"], axis=0)], x2, {}, 18,
                              "required input 'inputs' .* is left out"),
        "variadic left out_ok": ([mk("Concat", ["x", "x"], ["y"], axis=0)], x2, {}, 18, None),
        "too many inputs": ([mk("Neg", ["x", "x"], ["y"])], x2, {}, 18,
                            "it has 2 inputs, but Neg takes 1"),
        "too many inputs_ok": ([mk("Neg", ["x"], ["y"])], x2, {}, 18, None),
        "operator at opset": ([mk("Gelu", ["x"], ["y"])], [_vi("x", F, [2, 3])], {}, 19,
                              "not defined at opset 19 \\(only from opset 20 on\\)"),
        "operator at opset_ok": ([mk("Gelu", ["x"], ["y"])], [_vi("x", F, [2, 3])], {}, 20,
                                 None),
        "float operand": ([mk("Reshape", ["x", "s"], ["y"])], x2,
                          {"s": np.array([-1.0])}, 18, "'s' is float64"),
        "float operand_ok": ([mk("Reshape", ["x", "s"], ["y"])], x2,
                             {"s": np.array([-1])}, 18, None),
        "2-d operand": ([mk("ReduceSum", ["x", "a"], ["y"])], x2,
                        {"a": np.array([[1]])}, 18, "'a' is 2-d, not a 1-d tensor"),
        "2-d operand_ok": ([mk("ReduceSum", ["x", "a"], ["y"])], x2,
                           {"a": np.array([1])}, 18, None),
        # zip() cut starts, ends to the shorter: one axis sliced, the other bound ignored
        "slice lengths": ([mk("Slice", ["x", "s", "e"], ["y"])], x2,
                          {"s": np.array([0, 1]), "e": np.array([1])}, 18,
                          "have 2, 1, 2 and 2 entries"),
        "slice lengths_ok": ([mk("Slice", ["x", "s", "e"], ["y"])], x2,
                             {"s": np.array([0, 1]), "e": np.array([1, 3])}, 18, None),
        # a tensor bound clipped elementwise; ONNX's Clip takes 0-d bounds
        "clip bound": ([mk("Clip", ["x", "lo"], ["y"])], x2,
                       {"lo": np.array([0.0, 1.0, 2.0])}, 18, "bounds must be 0-d"),
        "clip bound_ok": ([mk("Clip", ["x", "lo"], ["y"])], x2, {"lo": np.array(1.0)}, 18,
                          None),
        "split sizes": ([mk("Split", ["x"], ["y", "z"], axis=1)], x2, {}, 18,
                        "either its split input or num_outputs"),
        "split sizes_ok": ([mk("Split", ["x"], ["y", "z"], axis=1, num_outputs=2)], x2, {},
                           18, None),
        "fill value": ([mk("ConstantOfShape", ["s"], ["y"],
                           value=numpy_helper.from_array(np.ones((1, 1))))], [],
                       {"s": np.array([2, 3])}, 18, "1-d tensor of one element"),
        "fill value_ok": ([mk("ConstantOfShape", ["s"], ["y"],
                              value=numpy_helper.from_array(np.ones(1)))], [],
                          {"s": np.array([2, 3])}, 18, None),
    }
    return table[case]


_SCHEMA_CASES = ["promotion", "unknown attribute", "attribute type", "variadic left out",
                 "too many inputs", "operator at opset", "float operand", "2-d operand",
                 "slice lengths", "clip bound", "split sizes", "fill value"]


@pytest.mark.parametrize("case", _SCHEMA_CASES)
def test_a_malformed_node_is_refused_and_its_twin_agrees(case, tmp_path):
    """Each imported as some graph, none the one onnxruntime runs (it refuses them all)."""
    for name in (case + "_ok", case):
        nodes, inputs, inits, opset, match = _schema_case(name)
        elem = inputs[0].type.tensor_type.elem_type if inputs else D
        outs = [_vi(o, elem, None) for o in nodes[-1].output]
        path = _save(tmp_path, nodes, inputs, outs, inits, opset)
        x = np.arange(6.0).reshape(2, 3) - 2.5
        feed = {"x": x.astype(np.float32 if elem == F else np.float64)} if inputs else {}
        if match is None:
            g = fg.import_onnx(path)
            got = fg.run([g.by_name(o) for o in nodes[-1].output], feed)
            for a, b in zip(got, _onnxruntime(path, feed)):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)   # (float32 Gelu)
            continue
        with pytest.raises(Exception):              # noqa: B017  (what onnxruntime says)
            _onnxruntime(path, feed)
        with pytest.raises(OnnxImportError, match=match):
            fg.import_onnx(path)


def test_the_standard_opset_is_imported_once_and_known(tmp_path):
    """Two default-domain opsets: flowgrad read the first, onnxruntime another."""
    model = _model([helper.make_node("Neg", ["x"], ["y"])], [_vi("x", D, [2])],
                   [_vi("y", D, [2])])
    path = tmp_path / "m.onnx"
    latest = onnx.defs.onnx_opset_version()
    for versions, match in (([18, 8], "2 times"), ([0], "opset 0 is not"),
                            ([latest + 1], f"opset {latest + 1} is not"), ([latest], None)):
        del model.opset_import[:]
        model.opset_import.extend(helper.make_opsetid("", v) for v in versions)
        path.write_bytes(model.SerializeToString())
        if match is None:
            g = fg.import_onnx(path)
            np.testing.assert_array_equal(fg.run(g.by_name("y"), {"x": np.array([1.0, -2])}),
                                          [-1.0, 2.0])
        else:
            with pytest.raises(OnnxImportError, match=match):
                fg.import_onnx(path)


@pytest.mark.parametrize("extra", ["named", "empty"])
def test_a_scan_with_another_count_of_outputs_than_its_body_is_refused(extra, tmp_path):
    """A Scan given one output more than its body's (named, or ""): the import made the
    scan of its body's, onnxruntime refuses the model."""
    model = _scan()
    model.graph.node[0].output.append("more" if extra == "named" else "")
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(OnnxImportError, match="it has 4 outputs, but computes 3"):
        fg.import_onnx(path)


@pytest.mark.parametrize("field", ["double_data", "segment", "float_data"])
def test_a_tensor_is_held_in_one_field_of_its_type(field, tmp_path):
    """onnx reads raw_data and ignores a second data field (or a segment): which of two
    values the tensor holds was the reader's choice; the checker refuses both."""
    w = numpy_helper.from_array(np.array([1.0, 2.0]), "w")
    path = _save(tmp_path, [helper.make_node("Add", ["x", "w"], ["y"])],
                 [_vi("x", D, [2])], [_vi("y", D, [2])])
    model = onnx.load(path)
    model.graph.initializer.append(w)
    path.write_bytes(model.SerializeToString())
    g = fg.import_onnx(path)          # as written: raw data alone
    np.testing.assert_array_equal(fg.run(g.by_name("y"), {"x": np.zeros(2)}), [1.0, 2.0])
    t = model.graph.initializer[0]
    if field == "segment":
        t.segment.begin, t.segment.end = 0, 1
    elif field == "float_data":        # the data in another type's field
        t.ClearField("raw_data")
        t.float_data.extend([5.0, 6.0])
    else:
        t.double_data.extend([5.0, 6.0])
    path.write_bytes(model.SerializeToString())
    with pytest.raises(OnnxImportError, match="a malformed tensor"):
        fg.import_onnx(path)


def test_a_graph_output_declared_of_another_type_is_refused(tmp_path):
    for elem, ok in ((D, True), (F, False)):
        path = _save(tmp_path, [helper.make_node("Neg", ["x"], ["y"])], [_vi("x", D, [2])],
                     [_vi("y", elem, [2])])
        if ok:
            fg.import_onnx(path)
        else:
            with pytest.raises(OnnxImportError, match="'y' is declared float32, but the "
                                                      "graph computes float64"):
                fg.import_onnx(path)


def test_a_body_input_shadowing_an_enclosing_constant_is_not_read_as_it(tmp_path):
    """A Loop body's input named like an enclosing int constant ("s"): its Reshape read
    the enclosing constant's value ([6]) as its shape, where the body's "s" is the
    carry ([3, 2], what onnxruntime reshapes by). The carry is no constant: refused."""
    mk = helper.make_node
    body = helper.make_graph(
        [mk("Reshape", ["x", "s"], ["y"]), mk("Identity", ["s"], ["s_out"]),
         mk("Identity", ["c"], ["c_out"])], "body",
        [_vi("i", I64, []), _vi("c", B, []), _vi("s", I64, [2])],
        [_vi("c_out", B, []), _vi("s_out", I64, [2]), _vi("y", D, [3, 2])])
    path = _save(tmp_path, [mk("Loop", ["M", "", "s0"], ["sT", "ys"], body=body),
                            mk("Reshape", ["x", "s"], ["flat"])],
                 [_vi("x", D, [6])], [_vi("ys", D, [2, 3, 2]), _vi("flat", D, [6])],
                 {"M": np.array(2, np.int64), "s": np.array([6], np.int64),
                  "s0": np.array([3, 2], np.int64)})
    x = np.arange(6.0)
    np.testing.assert_array_equal(_onnxruntime(path, {"x": x})[0],
                                  np.stack([x.reshape(3, 2)] * 2))
    with pytest.raises(OnnxImportError, match="its shape 's' must be a constant"):
        fg.import_onnx(path)


def _many_carries(nv):
    """A while-Loop of ``nv`` carries (each negated), with the carries each trip began
    with stacked as scan outputs, stopping when the first carry's sum passes lim."""
    mk = helper.make_node
    nodes = [mk("ReduceSum", ["v0"], ["s"], keepdims=0), mk("Less", ["s", "lim"], ["go"])]
    nodes += [mk("Neg", [f"v{k}"], [f"w{k}"]) for k in range(nv)]
    nodes += [mk("Identity", [f"v{k}"], [f"seen{k}"]) for k in range(nv)]
    body = helper.make_graph(
        nodes, "body", [_vi("i", I64, []), _vi("c", B, [])] +
        [_vi(f"v{k}", D, [2]) for k in range(nv)],
        [_vi("go", B, [])] + [_vi(f"w{k}", D, [2]) for k in range(nv)] +
        [_vi(f"seen{k}", D, [2]) for k in range(nv)])
    loop = mk("Loop", ["M", "", *[f"x{k}" for k in range(nv)]],
              [f"y{k}" for k in range(nv)] + [f"st{k}" for k in range(nv)], body=body)
    return _model([loop], [_vi(f"x{k}", D, [2]) for k in range(nv)] + [_vi("lim", D, [])],
                  [_vi(f"y{nv - 1}", D, [2]), _vi(f"st{nv - 1}", D, ["n", 2])],
                  {"M": np.array(5, np.int64)})


def test_a_while_loop_of_many_carries_imports_in_linear_time(tmp_path):
    """Which carry each scan output passes through was found by searching the body for
    each output and carry: cubic, 400 carries took half a minute (2,000: an hour)."""
    path = tmp_path / "m.onnx"
    path.write_bytes(_many_carries(400).SerializeToString())
    start = time.process_time()
    g = fg.import_onnx(path)
    assert time.process_time() - start < 3.0
    feed = {f"x{k}": np.array([k, -1.0]) for k in range(400)}
    feed["lim"] = np.array(0.5)
    want = _onnxruntime(path, feed)
    got = fg.run([g.by_name("y399"), g.by_name("st399")], feed)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    # two trips (the second begins with sum(-x0) = 1, past lim): x negated twice, and
    # the carries the two trips began with
    np.testing.assert_array_equal(got[0], [399.0, -1.0])
    np.testing.assert_array_equal(got[1], [[399.0, -1.0], [-399.0, 1.0]])


def test_a_loops_results_times_inputs_are_charged_to_the_budget(tmp_path):
    """Each result of a flowgrad loop node reads all its inputs: an If of 2,000 outputs
    reading 2,000 enclosing tensors (a 0.2 MB file) took 32 MB of references, past its
    13 MB budget, and a while-Loop of as many carries more. Refused by default; a caller
    who trusts the file raises max_bytes."""
    mk, k = helper.make_node, 2000
    branch = [helper.make_graph([mk(op, [f"x{j}"], [f"{op}{j}"]) for j in range(k)], op, [],
                                [_vi(f"{op}{j}", D, [1]) for j in range(k)])
              for op in ("Neg", "Abs")]
    node = mk("If", ["p"], [f"y{j}" for j in range(k)], then_branch=branch[0],
              else_branch=branch[1])
    path = _save(tmp_path, [node], [_vi("p", B, [])] + [_vi(f"x{j}", D, [1]) for j in range(k)],
                 [_vi(f"y{j}", D, [1]) for j in range(k)])
    with pytest.raises(OnnxImportError, match="results .* each reading its 2002 inputs.*"
                                              "budget"):
        fg.import_onnx(path)
    g = fg.import_onnx(path, max_bytes=1 << 27)
    feed = {"p": np.array(False), **{f"x{j}": np.array([-j - 0.5]) for j in range(k)}}
    np.testing.assert_array_equal(fg.run(g.by_name("y1999"), feed), [1999.5])
