"""Graph files holding random draws and custom calls, edited to say what no builder
would: each is refused when loaded (GraphFileError naming the node), where it used to
load and then draw from a distribution the builder refuses, fail only when run, or
make fg.grad build a range as long as a count the file gave."""
import json
import zipfile

import numpy as np
import pytest

import flowgrad as fg


def _doc(g, path):
    fg.save_graph(path, g)
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    return members, json.loads(members["graph.json"])


def _write(path, members, doc):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for n, data in members.items():
            zf.writestr(n, json.dumps(doc) if n == "graph.json" else data)
    return path


def _draws(tmp_path):
    with fg.Graph() as g:
        x = fg.placeholder("x", shape=(None, 3))
        fg.random.normal((None, 3), mean=1.0, std=2.0, like=x, seed=7, name="n")
        fg.random.uniform((2,), low=-1.0, high=1.0, seed=8, name="u")
        fg.random.bernoulli((2,), p=0.3, seed=9, name="b")
    return _doc(g, tmp_path / "draws.fg")


def _node(doc, name):
    return next(n for n in doc["nodes"] if n["name"] == name)


def _params(value):
    return {"$tuple": value}


# (node, attribute, the first value refused, the last accepted): boundaries, not far-outs
BOUNDARIES = [
    ("n", "params", _params([1.0, -1e-300]), _params([1.0, 0.0])),
    ("n", "params", _params([1.0, float("nan")]), _params([1.0, 1e300])),
    ("n", "params", _params([float("inf"), 1.0]), _params([-1e300, 1.0])),
    ("u", "params", _params([0.5, 0.4999]), _params([0.5, 0.5])),
    ("b", "params", _params([1.0000001]), _params([1.0])),
    ("b", "params", _params([-1e-300]), _params([0.0])),
    ("b", "params", _params([float("nan")]), _params([0.5])),
    ("n", "stream", {"$stream": -1}, {"$stream": 0}),
]


@pytest.mark.parametrize("name, attr, bad, good", BOUNDARIES)
def test_a_draws_parameters_and_seed_are_the_builders(tmp_path, name, attr, bad, good):
    members, doc = _draws(tmp_path)
    _node(doc, name)["attrs"][attr] = bad
    with pytest.raises(fg.GraphFileError, match=f"'{_node(doc, name)['name']}'"):
        fg.load_graph(_write(tmp_path / "bad.fg", members, doc))
    _node(doc, name)["attrs"][attr] = good
    fg.load_graph(_write(tmp_path / "good.fg", members, doc))


def test_a_normal_draw_of_ints_is_refused_a_bernoulli_one_loads(tmp_path):
    members, doc = _draws(tmp_path)
    for name in ("n", "b"):
        _node(doc, name)["attrs"]["dtype"] = {"$dtype": "int64"}
        _node(doc, name)["dtype"] = "int64"
    with pytest.raises(fg.GraphFileError, match="'n'.*dtype must be a float"):
        fg.load_graph(_write(tmp_path / "bad.fg", members, doc))
    _node(doc, "n")["attrs"]["dtype"], _node(doc, "n")["dtype"] = {"$dtype": "float32"}, \
        "float32"
    g = fg.load_graph(_write(tmp_path / "good.fg", members, doc))
    assert g.by_name("b").dtype == np.int64


def test_a_run_time_length_needs_a_like_of_as_many_axes(tmp_path):
    members, doc = _draws(tmp_path)
    b = _node(doc, "b")
    b["attrs"]["shape"], b["shape"] = {"$tuple": [None]}, [None]       # no like to read
    with pytest.raises(fg.GraphFileError, match="'b'.*needs like="):
        fg.load_graph(_write(tmp_path / "bad.fg", members, doc))


def _remat_doc(tmp_path):
    with fg.Graph() as g:
        x = fg.placeholder("x", shape=(3,))
        w = fg.variable(np.ones(3), name="w")
        fg.sum(fg.remat(lambda h: fg.sin(h) * w)(x)).named("loss")
    members, doc = _doc(g, tmp_path / "remat.fg")
    return members, doc, next(n for n in doc["nodes"] if n["op"] == "custom_call")


def test_a_calls_lifted_count_is_bounded_by_its_inputs(tmp_path):
    """lifted = 10⁹ loaded, and fg.grad then built a range of 10⁹ inputs (hanging, or an
    IndexError past the inputs for a smaller count)."""
    members, doc, call = _remat_doc(tmp_path)
    n_inputs = len(call["inputs"])
    assert call["attrs"]["lifted"] == 1
    for bad in (n_inputs, 10 ** 9, -1):
        call["attrs"]["lifted"] = bad
        with pytest.raises(fg.GraphFileError, match="custom_call"):
            fg.load_graph(_write(tmp_path / "bad.fg", members, doc))
    call["attrs"]["lifted"] = n_inputs - 1         # every input after the forward's
    fg.load_graph(_write(tmp_path / "last.fg", members, doc))
    call["attrs"]["lifted"] = 1
    g = fg.load_graph(_write(tmp_path / "good.fg", members, doc))
    X = np.array([0.1, 0.2, 0.3])
    with g:
        gx = fg.grad(g.by_name("loss"), g.by_name("x"))
        np.testing.assert_allclose(fg.run(gx, {g.by_name("x"): X}), np.cos(X), rtol=1e-14)


def test_a_user_functions_call_lifts_nothing(tmp_path):
    @fg.custom_vjp(name="tests.graphfile_draws_calls.double")
    def double(x):
        return x * 2.0
    double.defvjp(lambda g, ans, x: (2.0 * g,))
    with fg.Graph() as g:
        x = fg.placeholder("x", shape=(3,))
        fg.sum(double(x)).named("loss")
    members, doc = _doc(g, tmp_path / "call.fg")
    call = next(n for n in doc["nodes"] if n["op"] == "custom_call")
    call["attrs"]["lifted"] = 1
    with pytest.raises(fg.GraphFileError, match="custom_call"):
        fg.load_graph(_write(tmp_path / "bad.fg", members, doc))
    call["attrs"]["lifted"] = 0
    fg.load_graph(_write(tmp_path / "good.fg", members, doc))
