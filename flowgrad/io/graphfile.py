"""Saving and loading whole graphs: ``fg.save_graph(path, g)``, ``g = fg.load_graph(path)``.

The file is a zip archive with two kinds of member:

* ``graph.json`` — the format name and version and one record per node, in id
  (= topological) order: its op by registered name, attrs (tagged JSON, see
  ``attrs.py``), name, scope, shape (``null`` for a run-time length), dtype, kind,
  input ids, and for leaves their value (a weak Python scalar inline, arrays by
  member name);
* ``arrays/<k>.npy`` — constants, variable values and array attributes, each a
  plain ``.npy`` (stored uncompressed) whose header is checked before any memory is
  allocated.

Loading never unpickles and never runs code from the file. The members' declared
sizes must fit the limits below and the file's budget (``max_bytes=``, by default
64 times the file's size: see ``limits.py``) before any is read; each is then
inflated in chunks into the memory it will occupy, and data longer than declared is
an error, so a decompression bomb costs nothing and an array is allocated once.

Rebuilding re-applies each op through the normal build path (``ops.base.apply``)
rather than inserting stored nodes: shapes and dtypes are inferred and checked
again by the op itself, and any bookkeeping the build path does for a graph made
by hand is done for a loaded one too. The inferred shape and dtype must equal the
saved ones, else the file is refused. Nodes are built into a fresh Graph that is
returned only when every node has loaded: a bad file builds nothing.
"""
from __future__ import annotations

import io
import json
import os
import pathlib
import tokenize
import zipfile
import zlib

import numpy as np

from flowgrad.backends import to_numpy
from flowgrad.errors import FlowgradError, GraphError, GraphFileError
from flowgrad.graph import Graph, Node
from flowgrad.userfiles import write_atomically

from .attrs import decode, encode
from .limits import Budget, check_max_bytes, check_parse
from .objects import closure, decoder, encoder
from .opsig import check_record
from .rebuild import apply_record
from . import loop_io

FORMAT = "flowgrad-graph"
FORMAT_VERSION = 1
GRAPH_MEMBER = "graph.json"

#: limits for reading: the JSON member, one array, and all members together (bytes)
MAX_JSON_BYTES = 256 << 20
MAX_ARRAY_BYTES = 4 << 30
MAX_TOTAL_BYTES = 16 << 30
MAX_NDIM = 64
KINDS = ("op", "placeholder", "variable", "constant")

__all__ = ["save_graph", "load_graph", "FORMAT_VERSION"]


# -- saving ---------------------------------------------------------------------------

def _nodes_to_save(graph_or_outputs):
    """(graph, ascending ids, output ids): a whole Graph, or what some outputs need."""
    from flowgrad.autodiff import ancestors
    if isinstance(graph_or_outputs, Graph):
        g = graph_or_outputs
        return g, list(range(len(g))), []
    outs = [graph_or_outputs] if isinstance(graph_or_outputs, Node) else list(graph_or_outputs)
    if not outs or not all(isinstance(o, Node) for o in outs):
        raise TypeError("save_graph takes a Graph, a node or a non-empty list of nodes")
    from flowgrad.graph import same_graph
    g = same_graph(outs)
    return g, closure(g, ancestors(outs)), [o.id for o in outs]


def _record(d, new_id, store, where, extra):
    kind = d["kind"]
    op = d["op"]
    if kind not in KINDS:
        raise GraphFileError(f"{where}: nodes of kind {kind!r} cannot be saved")
    rec = {
        "op": op.name if op is not None else None,
        "kind": kind,
        "name": d["name"],
        "scope": list(d["scope"]),
        "shape": [None if s is None else int(s) for s in d["shape"]],
        "dtype": loop_io.node_dtype(d),   # (a loop node's is "object": issue 20)
        "inputs": [new_id[i] for i in d["inputs"]],
        "attrs": {k: encode(v, store, f"{where}, attribute {k!r}", extra)
                  for k, v in d["attrs"].items()},
    }
    if op is not None:
        from flowgrad.ops.base import REGISTRY
        if REGISTRY.get(op.name) is not op:
            raise GraphFileError(f"{where}: its op {op.name!r} is not the registered op of "
                                 "that name, so it could not be found again when loading")
    if d.get("group"):
        rec["group"] = list(d["group"])
    if kind in ("variable", "constant"):
        value = d["value"]
        if d["weak"]:
            rec["weak"] = True
            rec["value"] = encode(value, store, f"{where}, value")
        else:
            rec["value"] = {"$array": store(np.asarray(to_numpy(value)))}
    return rec


def _gradient_records(g, new_id) -> list:
    """[g, y, x] (file indices) for every saved node that grad/adjoints built as ∂y/∂x, so
    that an optimizer accepts the reloaded gradient program (optim.py checks it)."""
    from flowgrad.autodiff import gradient_records
    out = []
    for gid, pairs in sorted(gradient_records(g).items()):
        if gid in new_id:
            out += [[new_id[gid], new_id[y], new_id[x]] for y, x in sorted(pairs)
                    if y in new_id and x in new_id]
    return out


def _state_records(g, new_id) -> dict:
    """The declared state (flowgrad/state.py) among the saved nodes, in file indices:
    ``{"variables": [ids], "updates": [[state, value, *triggers]]}`` (an update whose
    nodes were not all saved is left out); empty when the graph has none."""
    from flowgrad.state import declared
    states, updates = declared(g)
    marked = [new_id[i] for i in states if i in new_id]
    ups = [[new_id[u.state.id], new_id[u.value.id]] + [new_id[t] for t in u.triggers
                                                       if t in new_id]
           for u in updates if u.state.id in new_id and u.value.id in new_id]
    ups = [r for r in ups if len(r) > 2]
    return {"variables": marked, "updates": ups} if marked else {}


def save_graph(path, graph_or_outputs) -> pathlib.Path:
    """Write a graph to one file: a whole ``Graph``, or the nodes some outputs (a node or
    a list) depend on — derivative nodes included, since they are nodes. The file is
    written to a temporary name and moved into place, with the user's umask applied to
    its mode (as ``open`` would). Returns the path written."""
    g, ids, out_ids = _nodes_to_save(graph_or_outputs)
    data = g.nx.nodes
    new_id = {nid: k for k, nid in enumerate(ids)}
    arrays: list[np.ndarray] = []

    def store(arr):
        arrays.append(np.array(arr, order="C"))
        return f"arrays/{len(arrays) - 1}.npy"

    extra = encoder(new_id)
    nodes = [_record(data[nid], new_id, store, f"node {data[nid]['name']!r}", extra)
             for nid in ids]
    doc = {"format": FORMAT, "version": FORMAT_VERSION, "nodes": nodes,
           "outputs": [data[i]["name"] for i in out_ids],
           "gradients": _gradient_records(g, new_id)}
    state = _state_records(g, new_id)   # batch norm's running statistics and updates
    if state:
        doc["state"] = state
    text = json.dumps(doc, allow_nan=False, separators=(",", ":"))
    path = pathlib.Path(path)
    with write_atomically(path) as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as zf:
        _write_member(zf, GRAPH_MEMBER, text.encode("utf-8"), zipfile.ZIP_DEFLATED)
        for k, arr in enumerate(arrays):
            buf = io.BytesIO()
            np.save(buf, arr, allow_pickle=False)
            # stored, not deflated: an array takes in the file the room it takes in
            # memory, so it never counts against the reader's size budget (limits.py)
            _write_member(zf, f"arrays/{k}.npy", buf.getvalue(), zipfile.ZIP_STORED)
    return path


#: every member's timestamp: zipfile would stamp the clock's time (to 2 s), so the same
#: graph saved twice would give different bytes; a fixed one makes the file a function of
#: the graph alone (as reproducible-build tools pin it)
_MEMBER_TIME = (1980, 1, 1, 0, 0, 0)


def _write_member(zf, name, data: bytes, compress_type):
    info = zipfile.ZipInfo(name, date_time=_MEMBER_TIME)
    info.compress_type = compress_type
    info.external_attr = 0o600 << 16    # what writestr(name, ...) gives a member
    zf.writestr(info, data)


# -- reading members safely -------------------------------------------------------------

_CHUNK = 1 << 18   # bytes inflated at a time: reading holds a few of these at most


class _Reader:
    """Bounded reads of one archive's members; arrays parsed without np.load.

    The members' declared sizes are checked against the limits and the file's budget
    before any is read; a member is then inflated in chunks straight into the memory
    it will occupy (an array's own buffer), so its data is allocated once."""

    def __init__(self, zf: zipfile.ZipFile, path, budget):
        self.zf, self.path = zf, path
        self.infos = {}
        total = 0
        for info in zf.infolist():
            if info.filename in self.infos:
                # two members of one name: which one is "the" member depends on the tool
                # that reads the archive, so the file does not say one graph
                raise GraphFileError(f"{path}: the member {info.filename!r:.80} appears "
                                     "twice in the archive")
            self.infos[info.filename] = info
            total += info.file_size
        if total > MAX_TOTAL_BYTES:
            raise GraphFileError(f"{path}: the members declare {total} bytes in all, over "
                                 f"the {MAX_TOTAL_BYTES}-byte limit")
        budget.take(total, f"its {len(self.infos)} members, decompressed,")
        self.used: set = set()

    def _info(self, name, limit):
        info = self.infos.get(name)
        if info is None:
            raise GraphFileError(f"{self.path}: the member {name!r} is missing")
        if info.file_size > limit:
            raise GraphFileError(f"{self.path}: the member {name!r} declares {info.file_size} "
                                 f"bytes, over the {limit}-byte limit")
        return info

    def _fill(self, f, out, name):
        """Inflate exactly len(out) bytes of ``f`` into the writable buffer ``out``."""
        view, at = memoryview(out), 0
        while at < len(view):
            chunk = f.read(min(_CHUNK, len(view) - at))
            if not chunk:
                raise GraphFileError(f"{self.path}: the member {name!r} is truncated")
            view[at:at + len(chunk)] = chunk
            at += len(chunk)
        # zipfile stops at the declared size and checks the CRC at the end: data longer
        # than declared (a bomb) or damaged is a BadZipFile, caught by load_graph
        if f.read(1):
            raise GraphFileError(f"{self.path}: the member {name!r} is longer than declared")

    def read(self, name, limit) -> bytearray:
        info = self._info(name, limit)
        data = bytearray(info.file_size)
        with self.zf.open(info) as f:
            self._fill(f, data, name)
        return data

    def array(self, name):
        # each array member backs one value: a file naming one member many times would
        # otherwise cost its size many times over (and share one buffer between nodes)
        if not isinstance(name, str) or name in self.used:
            raise GraphFileError(f"{self.path}: the array member {name!r:.60} is used twice")
        self.used.add(name)
        info = self._info(name, MAX_ARRAY_BYTES)
        with self.zf.open(info) as f:
            shape, fortran, dtype = self._header(f, name)
            nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
            body = info.file_size - f.tell()
            if nbytes != body:
                raise GraphFileError(f"{self.path}: the array {name!r} declares shape {shape} "
                                     f"({nbytes} bytes) but holds {body} bytes")
            flat = np.empty(nbytes, np.uint8)
            self._fill(f, flat, name)
        # a view of the one buffer: writable, owning its memory through .base
        return flat.view(dtype).reshape(shape, order="F" if fortran else "C")

    def _header(self, f, name):
        try:
            version = np.lib.format.read_magic(f)
            header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                      else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = header(f, max_header_size=10000)
        except (ValueError, SyntaxError, TypeError, tokenize.TokenError) as e:
            # (numpy tokenizes a version-1 header: a damaged one is a TokenError)
            raise GraphFileError(f"{self.path}: the array {name!r} has a bad header "
                                 f"({type(e).__name__}: {e})") from None
        if dtype.kind not in "biufc" or dtype.fields is not None or dtype.hasobject:
            raise GraphFileError(f"{self.path}: the array {name!r} has dtype {dtype}, "
                                 "which a graph file may not hold")
        if len(shape) > MAX_NDIM or any(not isinstance(s, int) or s < 0 for s in shape):
            raise GraphFileError(f"{self.path}: the array {name!r} declares an absurd shape "
                                 f"{shape}")
        return shape, fortran, dtype


# -- loading --------------------------------------------------------------------------

def load_graph(path, *, max_bytes=None) -> Graph:
    """The Graph saved in ``path`` by ``save_graph``; find nodes with ``g.by_name``.
    A file that is corrupt, truncated, too large, of a newer format version, or that
    names an unknown op raises ``fg.GraphFileError`` and builds nothing.

    ``max_bytes`` bounds the data the file may make flowgrad allocate (its members,
    decompressed); by default 64 times the file's size, at least 1 MiB (see
    ``flowgrad/io/limits.py``). Pass a larger value for a trusted file that compresses
    better than that (large arrays of zeros)."""
    where = os.fspath(path)
    check_max_bytes(max_bytes)
    try:
        with open(path, "rb") as fh, zipfile.ZipFile(fh) as zf:
            budget = Budget(where, os.fstat(fh.fileno()).st_size, max_bytes)
            reader = _Reader(zf, where, budget)
            return _build(_read_doc(reader, where, budget), reader, where)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError,
            NotImplementedError, RuntimeError) as e:
        if isinstance(e, (FileNotFoundError, IsADirectoryError, PermissionError)):
            raise
        raise GraphFileError(f"{where}: not a readable graph file "
                             f"({type(e).__name__}: {e})") from None


def _read_doc(reader, where, budget):
    """graph.json, parsed; its bytes and text are dropped before the objects are built.
    The objects' size is estimated first and held to the budget (limits.check_parse)."""
    data = reader.read(GRAPH_MEMBER, MAX_JSON_BYTES)
    check_parse(budget, data, "graph.json")
    size = len(data)
    try:
        text = data.decode("utf-8")
        del data
        return json.loads(text, object_pairs_hook=_unique_keys)
    except _RepeatedKey as e:
        raise GraphFileError(f"{where}: graph.json {e}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise GraphFileError(f"{where}: graph.json is not valid JSON "
                             f"({type(e).__name__})") from None
    except MemoryError:
        # its text fit the budget, but parsed objects take up to ~30 bytes per byte of
        # text ("{}," repeated): what is parsed so far is dropped with this frame
        raise GraphFileError(f"{where}: graph.json ({size} bytes) does not fit in "
                             "memory once parsed") from None


class _RepeatedKey(ValueError):
    """An object of graph.json gives one key twice."""


def _unique_keys(pairs):
    """A JSON object as a dict, refusing a repeated key: json.loads would keep the last
    value silently, other readers the first, so the file would not say one graph."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen = set()
        key = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise _RepeatedKey(f"repeats the key {key!r:.60} in one object")
    return obj


def _check_header(doc, path):
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise GraphFileError(f"{path}: not a flowgrad graph file")
    if "version" not in doc:
        raise GraphFileError(f"{path}: the format version is missing")
    version = doc["version"]
    if not isinstance(version, int) or isinstance(version, bool):
        # "1", 1.0 or 1e999 (which JSON reads as inf): present, but not a version number
        raise GraphFileError(f"{path}: the format version {version!r:.40} is malformed "
                             f"(an integer, {FORMAT_VERSION} for this flowgrad)")
    if version > FORMAT_VERSION:
        raise GraphFileError(f"{path}: format version {version} is newer than this flowgrad "
                             f"reads ({FORMAT_VERSION}); upgrade flowgrad to load it")
    if version < 1:
        raise GraphFileError(f"{path}: unknown format version {version}")
    if not isinstance(doc.get("nodes"), list):
        raise GraphFileError(f"{path}: the node list is missing")


_FIELDS = {"op": (str, type(None)), "kind": str, "name": str, "scope": list, "shape": list,
           "dtype": str, "inputs": list, "attrs": dict}


def _check_record(k, rec, path):
    if not isinstance(rec, dict):
        raise GraphFileError(f"{path}: node record {k} is not an object")
    for field, types in _FIELDS.items():
        # (``in`` first: a missing "op" would pass as None, then be read as rec["op"])
        if field not in rec or not isinstance(rec[field], types):
            raise GraphFileError(f"{path}: node record {k} has a missing or bad {field!r}")
    where = f"{path}: node {rec['name']!r}"
    if rec["kind"] not in KINDS:
        raise GraphFileError(f"{where} has unknown kind {rec['kind']!r}")
    if (rec["op"] is None) != (rec["kind"] != "op"):
        raise GraphFileError(f"{where}: only op nodes have an op")
    if len(rec["shape"]) > MAX_NDIM or not all(
            s is None or (isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2 ** 62)
            for s in rec["shape"]):
        raise GraphFileError(f"{where} has a bad shape {rec['shape']!r:.80}")
    if not all(isinstance(s, str) and s and "/" not in s for s in rec["scope"]):
        raise GraphFileError(f"{where} has a bad scope")
    if not rec["name"]:
        raise GraphFileError(f"{path}: node record {k} has an empty name")
    if rec["kind"] != "op" and (rec["inputs"] or rec["attrs"]):
        raise GraphFileError(f"{where}: a {rec['kind']} has no inputs or attributes")
    for i in rec["inputs"]:
        if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < k:
            raise GraphFileError(f"{where} has input {i!r}, which is not an earlier node")
    return where


def _build(doc, reader, path) -> Graph:
    _check_header(doc, path)
    g = Graph()
    handles: list[Node] = []
    with g:
        for k, rec in enumerate(doc["nodes"]):
            where = _check_record(k, rec, path)
            node = _build_node(g, rec, reader, handles, where)
            _place(g, node, rec, where)
            handles.append(node)
    _restore_gradients(doc.get("gradients", []), handles, path)
    _restore_state(doc.get("state", {}), handles, path)
    return g


def _build_node(g, rec, reader, handles, where) -> Node:
    """One record as a node of ``g``, checked against what the record says it is."""
    from flowgrad.leaves import placeholder
    shape = tuple(rec["shape"])
    try:
        dtype = loop_io.parse_node_dtype(rec["dtype"], rec["op"])   # (a loop's: issue 20)
    except GraphFileError as e:
        raise GraphFileError(f"{where}: {e}") from None
    kind = rec["kind"]
    if kind == "placeholder":
        try:
            with g.scope_path(()):        # the saved name is the full, scoped one
                node = placeholder(rec["name"], shape, dtype)
        except GraphError:
            raise GraphFileError(f"{where}: two nodes share that name") from None
    elif kind in ("variable", "constant"):
        with g.scope_path(rec["scope"]):
            node = _leaf(g, rec, reader, where, shape, dtype)
    else:
        node = _op_node(g, rec, reader, handles, where)
    if node.shape != shape or node.dtype != dtype:
        raise GraphFileError(
            f"{where}: the file says shape {shape} dtype {dtype}, but rebuilding gives "
            f"shape {node.shape} dtype {node.dtype}")
    return node


#: what an op's own checks may raise on attributes no builder would have passed it
_REBUILD_ERRORS = (TypeError, ValueError, IndexError, KeyError, OverflowError,
                   AttributeError, ZeroDivisionError)


def _op_node(g, rec, reader, handles, where) -> Node:
    from flowgrad.ops.base import REGISTRY
    op = REGISTRY.get(rec["op"])
    if op is None:
        raise GraphFileError(f"{where} uses op {rec['op']!r}, which this flowgrad "
                             "does not have (a newer version, or an op registered "
                             "by code that has not been imported)")
    bodies = decoder(handles, where)
    attrs = {name: decode(v, reader.array, f"{where}, attribute {name!r}", bodies)
             for name, v in rec["attrs"].items()}
    ins = [handles[i] for i in rec["inputs"]]
    check_record(op, ins, attrs, where)
    try:
        with g.scope_path(rec["scope"]):
            node = apply_record(op, ins, attrs, where)
    except GraphFileError:
        raise
    except FlowgradError as e:
        raise GraphFileError(f"{where}: rebuilding {op.name} failed: {e}") from None
    except _REBUILD_ERRORS as e:
        raise GraphFileError(f"{where}: rebuilding {op.name} failed: "
                             f"{type(e).__name__}: {e}") from None
    if node.op is not op:
        raise GraphFileError(f"{where}: {op.name} of these inputs folds to a "
                             "constant; the file does not describe a built graph")
    return node


def _restore_gradients(records, handles, path):
    from flowgrad.autodiff import record_gradient
    n = len(handles)
    if not isinstance(records, list) or not all(
            isinstance(r, list) and len(r) == 3 and
            all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n for i in r)
            for r in records):
        raise GraphFileError(f"{path}: the gradient records are malformed")
    for gi, yi, xi in records:
        record_gradient(handles[gi], handles[yi], handles[xi])


def _restore_state(record, handles, path):
    """Mark the state variables and declare their updates again (flowgrad/state.py);
    a malformed record, or one that does not fit the nodes, is a GraphFileError."""
    from flowgrad import state
    n = len(handles)

    def ids(xs, least):
        return isinstance(xs, list) and len(xs) >= least and all(
            isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n for i in xs)
    if not isinstance(record, dict) or not record:
        if record != {}:
            raise GraphFileError(f"{path}: the state record is malformed")
        return
    marked, updates = record.get("variables"), record.get("updates")
    if set(record) != {"variables", "updates"} or not ids(marked, 1) or \
            not isinstance(updates, list) or not all(ids(u, 3) for u in updates):
        raise GraphFileError(f"{path}: the state record is malformed")
    try:
        for i in marked:
            state.mark_state(handles[i])
        for s, v, *triggers in updates:
            state.declare_update(handles[s], handles[v], [handles[t] for t in triggers])
    except FlowgradError as e:
        raise GraphFileError(f"{path}: the state record does not fit the nodes: {e}") \
            from None


def _leaf(g, rec, reader, where, shape, dtype):
    from flowgrad.leaves import constant_in
    value = rec.get("value")
    if rec.get("weak"):
        value = decode(value, reader.array, where)
        if rec["kind"] != "constant" or type(value) not in (bool, int, float, complex) or \
                (type(value) is int and not -2 ** 63 <= value < 2 ** 64):
            raise GraphFileError(f"{where}: a weak value must be a Python number constant")
        return constant_in(g, value)
    if not (isinstance(value, dict) and set(value) == {"$array"}):
        raise GraphFileError(f"{where}: its value must be an array member")
    arr = decode(value, reader.array, where)
    if arr.shape != shape or arr.dtype != dtype:
        raise GraphFileError(f"{where}: its value has shape {arr.shape} dtype {arr.dtype}, "
                             f"the record says {shape} {dtype}")
    # the array was read into memory of its own (_Reader.array): the node takes it as
    # it is, where variable() and constant() would copy it once more
    kind = rec["kind"]
    if kind == "constant":
        arr.setflags(write=False)  # as constant() does: never mutated through a result
    return g.add_node(None, (), {}, arr.shape, arr.dtype,
                      name="variable" if kind == "variable" else "const", kind=kind, value=arr)


def _place(g, node, rec, where):
    """Give a rebuilt node its saved name and scope."""
    try:
        node.name = rec["name"]
    except ValueError:
        raise GraphFileError(f"{where}: two nodes share that name") from None
    # only what differs from the node as built: an empty scope or group set anyway would
    # put keys in ``node.more`` that a built node lacks, and Graph.unary_twin then never
    # shares a loaded forward's cos(x) with a gradient built after loading
    if node.scope != tuple(rec["scope"]):
        node.set_more("scope", tuple(rec["scope"]))
    group = rec.get("group", [])
    if not isinstance(group, list) or not all(isinstance(x, str) and x for x in group):
        raise GraphFileError(f"{where} has a bad composite group")
    if group:
        node.set_more("group", tuple(group))
