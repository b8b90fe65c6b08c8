"""A graph file's attributes are refused at load when the op's public function would
refuse them (each op's ``check_attrs``, io/opsig.py): a pool size of 0 or a stride of
True used to load and fail only when the program ran (or ran with another meaning), while
"a file that loads always compiles". Each edit keeps the declared shape equal to what the
loader infers, so only the attribute check can refuse it; the first bad value is refused
and the last good one loads and computes what numpy does."""
import json
import zipfile

import numpy as np
import pytest

import flowgrad as fg


def _saved(tmp_path, build, x_shape):
    with fg.Graph() as g:
        build(fg.placeholder("x", shape=x_shape)).named("y")
    return fg.save_graph(tmp_path / "ok.fg", g)


def _edited(tmp_path, path, attrs, shape=None, name="y"):
    """``path`` with node ``name``'s attributes updated by ``attrs`` (tagged JSON) and,
    when given, its declared shape replaced."""
    with zipfile.ZipFile(path) as zf:
        content = {n: zf.read(n) for n in zf.namelist()}
    doc = json.loads(content["graph.json"])
    rec = next(r for r in doc["nodes"] if r["name"] == name)
    rec["attrs"].update(attrs)
    if shape is not None:
        rec["shape"] = shape
    content["graph.json"] = json.dumps(doc).encode()
    out = tmp_path / "edited.fg"
    with zipfile.ZipFile(out, "w") as zf:
        for n, data in content.items():
            zf.writestr(n, data)
    return out


def _t(*items):
    return {"$tuple": list(items)}


def _pool(op):
    return lambda x: getattr(fg, op)(x, 2, 1)


def _conv(x):
    return fg.conv2d(x, fg.constant(np.ones((1, 1, 2, 2)), name="w"), stride=1, padding=1)


_X = (1, 1, 4, 4)
_BAD = [   # (label, builder, input shape, attribute edit, declared shape the loader infers)
    *[(f"{op} size {s}", _pool(op), _X, {"size": _t(s, s)}, [1, 1, 5 - s, 5 - s])
      for op in ("max_pool2d", "avg_pool2d") for s in (0, -2)],
    *[(f"{op} stride true", _pool(op), _X, {"stride": _t(True, True)}, None)
      for op in ("max_pool2d", "avg_pool2d")],
    ("max_pool2d stride 1 (an int, not the pair the builder stores)", _pool("max_pool2d"),
     _X, {"stride": 1}, None),
    ("conv2d pads -1", _conv, _X, {"pads": _t(-1, -1, -1, -1)}, [1, 1, 1, 1]),
    ("conv2d stride 2.0", _conv, _X, {"stride": _t(2.0, 2.0)}, [1, 1, 3, 3]),
    ("conv2d stride true", _conv, _X, {"stride": _t(True, True)}, None),
    ("var ddof -1", lambda x: fg.var(x, ddof=1), (3,), {"ddof": -1}, None),
    ("var ddof true", lambda x: fg.var(x, ddof=1), (3,), {"ddof": True}, None),
    ("pad value true", lambda x: fg.pad(x, 1), (3,), {"value": True}, None),
    ("elu alpha true", lambda x: fg.elu(x, 1.0), (3,), {"alpha": True}, None),
    ("qr part z", lambda x: fg.qr(x)[1], (3, 3), {"part": "z"}, None),
    ("einsum spec of another rank", lambda x: fg.einsum("ij->ji", x), (3, 3),
     {"spec": "i->i"}, [3]),
]


@pytest.mark.parametrize("label, build, x_shape, attrs, shape", _BAD,
                         ids=[c[0] for c in _BAD])
def test_an_attribute_the_public_function_refuses_is_refused_at_load(tmp_path, label, build,
                                                                     x_shape, attrs, shape):
    bad = _edited(tmp_path, _saved(tmp_path, build, x_shape), attrs, shape)
    with pytest.raises(fg.GraphFileError, match=r"node 'y': an attribute of \w+ is refused"):
        fg.load_graph(bad)


def _windows(x, k):
    return np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))


@pytest.mark.parametrize("label, build, attrs, want", [
    ("max_pool2d size 1", _pool("max_pool2d"), {"size": _t(1, 1)}, lambda x: x),
    ("avg_pool2d stride (1, 1)", _pool("avg_pool2d"), {"stride": _t(1, 1)},
     lambda x: _windows(x, 2).mean(axis=(-2, -1))),
    ("conv2d pads 0", _conv, {"pads": _t(0, 0, 0, 0)},
     lambda x: _windows(x, 2).sum(axis=(-2, -1))),
])
def test_the_last_good_attribute_loads_and_computes(tmp_path, label, build, attrs, want):
    x = np.arange(16.0).reshape(_X)
    shape = list(want(x).shape)
    g = fg.load_graph(_edited(tmp_path, _saved(tmp_path, build, _X), attrs, shape))
    np.testing.assert_allclose(fg.compile(g.by_name("y"))(x=x), want(x), rtol=1e-12)


@pytest.mark.parametrize("dtype", ["float128", "complex256"])
def test_a_dtype_flowgrad_does_not_know_is_a_graph_file_error(tmp_path, dtype):
    """A placeholder of float128 in a file was a UsageError from placeholder()."""
    path = _saved(tmp_path, lambda x: x * 2, (2,))
    with zipfile.ZipFile(path) as zf:
        doc = json.loads(zf.read("graph.json"))
    doc["nodes"][0]["dtype"] = dtype
    bad = tmp_path / "bad.fg"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("graph.json", json.dumps(doc))
    with pytest.raises(fg.GraphFileError, match=f"node 'x': dtype '{dtype}' is not one"):
        fg.load_graph(bad)
