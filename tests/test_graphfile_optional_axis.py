"""A graph file whose `max` node leaves out its optional `axis` attribute: load_graph
checked the axes of every op that numbers input axes by reading attrs["axis"], and
raised a bare KeyError: 'axis' (tests/test_io_fuzz.py's mutant 49). Now the check
skips an attribute the record leaves out, and the rebuild (max's shape inference needs
the axis) refuses the file with a GraphFileError naming the node."""
import io
import json
import zipfile

import numpy as np
import pytest

import flowgrad as fg


def _members(path):
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def test_an_axis_left_out_is_a_graph_file_error(tmp_path):
    X = np.array([[1.0, 5.0, -2.0], [4.0, 0.5, 3.0]])
    with fg.Graph():
        x = fg.placeholder("x", shape=(2, 3))
        y = fg.max(x, axis=1).named("y")
        fg.save_graph(tmp_path / "g.fg", y)
    members = _members(tmp_path / "g.fg")
    name = next(n for n in members if n.endswith(".json"))
    doc = json.loads(members[name])
    rec = next(r for r in doc["nodes"] if r.get("op") == "max")
    del rec["attrs"]["axis"]
    members[name] = json.dumps(doc).encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for n, data in members.items():
            zf.writestr(n, data)
    (tmp_path / "m.fg").write_bytes(buf.getvalue())
    with pytest.raises(fg.GraphFileError, match="node 'y'"):
        fg.load_graph(tmp_path / "m.fg")
    # the file as saved loads and runs (the boundary)
    g = fg.load_graph(tmp_path / "g.fg")
    np.testing.assert_array_equal(fg.run(g.by_name("y"), {"x": X}), X.max(axis=1))
