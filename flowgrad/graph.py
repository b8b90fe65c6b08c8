"""The graph: a networkx DiGraph of op nodes, the Node handle users hold, scopes.

Each vertex of ``Graph.nx`` is an integer id whose attributes are the source of
truth: ``op``, ``attrs``, ``name``, ``shape``, ``dtype``, ``inputs`` (ordered;
a DiGraph cannot hold the two edges of ``x * x``), ``kind`` and ``scope``.
Edges are derived from ``inputs`` and labelled with the argument numbers: the
DiGraph's adjacency (``_succ``/``_pred``) reads them from there on demand rather
than holding two dicts a node, so ``Graph.nx`` is read-only through networkx
(``g.nx.copy()`` is an ordinary, mutable DiGraph).

Ids are handed out in creation order and a node's inputs always exist before
it, so id order *is* a topological order: the sweeps and the scheduler sort by
id instead of walking the graph, and no cycle can ever be built.

Threads: adding a node (id, name, edges, handle) happens under the graph's lock, so
several threads may build into one graph, the module-level default included. Name
scopes (``fg.name_scope``) are per graph, not per thread.

Names: a placeholder's name is how it is fed, so a second placeholder with a taken
name is a GraphError. Every other node (variables, constants, ops) whose name is
taken gets the first free suffix, ``w_1``, ``w_2`` …; read ``node.name`` to feed a
variable by name, or feed it by node.
"""
from __future__ import annotations

import contextlib
import gc
import threading
from array import array
from itertools import compress
from operator import attrgetter
from collections.abc import Mapping
from types import MappingProxyType

import networkx as nx
import numpy as np

from .errors import GraphError

_state = threading.local()

# The edge-attribute dicts of the common edges (argument 0, 1, 2 …), shared by every such
# edge: one dict per edge was ~180 bytes a node. Shared dicts hold only an immutable tuple
# and are never updated in place (a repeated input gets a fresh dict), so nothing sees the
# sharing; and holding no tracked object they keep the adjacency dicts out of the cyclic
# collector's scans, which dominated building very large graphs.
_EDGE = tuple({"argnums": (k,)} for k in range(8))


_UNSET = object()   # add_node's "where not given" (None is a valid where: no user frame)


def _graph_stack():
    if not hasattr(_state, "graphs"):
        _state.graphs = []
    return _state.graphs


_DEFAULT = None
_DEFAULT_LOCK = threading.Lock()


def default_graph() -> "Graph":
    """The innermost ``with fg.Graph()`` graph, else the module-level default."""
    stack = _graph_stack()
    if stack:
        return stack[-1]
    global _DEFAULT
    graph = _DEFAULT
    if graph is None:
        with _DEFAULT_LOCK:  # two threads must not each make "the" default graph
            if _DEFAULT is None:
                _DEFAULT = Graph()
            graph = _DEFAULT
    return graph


def reset_default_graph() -> "Graph":
    """Start a fresh module-level default graph (handy in notebooks)."""
    global _DEFAULT
    _DEFAULT = Graph()
    return _DEFAULT



def _leaf_record(attrs, name, shape, dtype, input_ids, kind, scope, where, value, weak):
    """A leaf's record (Graph.add_node): every key stored."""
    return NodeData(op=None, attrs=attrs or NO_ATTRS, name=name, shape=shape, dtype=dtype,
                    inputs=input_ids, kind=kind, scope=tuple(scope), where=where,
                    value=value, weak=weak)

class Graph:
    """A static graph of op nodes. Use as ``with fg.Graph() as g:``; graphs only grow."""

    def __init__(self):
        self.nx = _DiGraph()
        # Successors: src's out-edges form a linked list, newest first: _first[src] is
        # the latest edge out of src (-1: none), _edst[e] its target, _enext[e] the next.
        # Filled in from the nodes' inputs only when the adjacency is read (networkx
        # users, drawings), for the nodes added since: building pays nothing for it, and
        # it holds 8 bytes a node and 16 an edge, where a dict per node and direction
        # was ~450 bytes.
        self._first = array("q")
        self._edst = array("q")
        self._enext = array("q")
        # every node's inputs tuple by id (the same tuple its attrs hold: 8 bytes a node),
        # so that a sweep over ids (ancestors) reads a list, not a dict in a dict
        self._inputs: list[tuple] = []
        nxg = self.nx
        self._node = nxg._node
        self._nx_cache = nxg.__networkx_cache__
        nxg._succ = nxg._adj = _Adjacency(self._node, self._successors)
        nxg._pred = _Adjacency(self._node, self._predecessors)
        self._handles: list[Node] = []
        self._names: dict[str, int] = {}
        self._reserved: set[int] = set()   # ids whose default name is taken already
        self._name_next: dict[str, int] = {}
        self._scope: list[str] = []
        # guards ids, names and edges (never held while calling out: a plain lock suffices)
        self._lock = threading.Lock()

    # -- context management -------------------------------------------------
    def __enter__(self) -> "Graph":
        _graph_stack().append(self)
        return self

    def __exit__(self, *exc):
        _graph_stack().pop()
        if self in _FROZEN_BY:
            _thaw(self)
        return False

    def __len__(self) -> int:
        return len(self._handles)

    def __repr__(self) -> str:
        return f"<flowgrad.Graph with {len(self)} nodes>"

    def _repr_mimebundle_(self, include=None, exclude=None):
        from .viz.notebook import mimebundle  # a drawing in Jupyter, text without `dot`
        return mimebundle(self, include, exclude)

    # -- nodes ----------------------------------------------------------------
    def node(self, node_id: int) -> "Node":
        return self._handles[node_id]

    @property
    def nodes(self) -> list["Node"]:
        """Every node, in creation (= topological) order."""
        return list(self._handles)

    @property
    def handles(self) -> list["Node"]:
        """The graph's own list of nodes by id (``handles[i].id == i``), not a copy: the
        sweeps and drawings index it per node. Read it; never change it."""
        return self._handles

    def by_name(self, name: str) -> "Node":
        nid = self.name_id(name)
        if nid is None:
            raise KeyError(f"no node named {name!r} in this graph")
        return self._handles[nid]

    # Names: ``_names`` maps every name to its node, except the default names of op nodes
    # built outside any scope (``sin_12``: op name, "_", the node's own id), which are
    # unique by construction and would be most of it on a large graph (~65 bytes a node).
    # Such a name still lives in its node's attrs; the look-ups below find it from its id.
    def name_id(self, name) -> int | None:
        """The id of the node called ``name``, or None (binders look feeds up by it)."""
        nid = self._names.get(name)
        if nid is None and type(name) is str:
            head, sep, digits = name.rpartition("_")
            if sep and digits.isdigit() and digits.isascii() and head:
                k = int(digits)
                if k < len(self._handles) and self._node[k]["name"] == name:
                    return k
        return nid

    def _taken(self, name) -> bool:
        return name in self._names or self.name_id(name) is not None

    @property
    def scope(self) -> tuple:
        """The name scope open now (``fg.name_scope``), outermost first."""
        return tuple(self._scope)

    @contextlib.contextmanager
    def scope_path(self, path):
        """Build under exactly the scope ``path`` (a tuple of names), whatever scope is
        open: a layer re-entered on reuse, a graph file's node rebuilt where it was."""
        saved = self._scope
        self._scope = list(path)
        try:
            yield
        finally:
            self._scope = saved

    def prefix_in_use(self, prefix: str) -> bool:
        """Whether a node is named ``prefix`` or has a name under ``prefix + "/"``."""
        return self._taken(prefix) or any(n.startswith(prefix + "/") for n in self._names)

    def unique_name(self, base: str) -> str:
        """``base`` under the open scope, suffixed _1, _2 … until no node has it."""
        name = "/".join((*self._scope, base)) if self._scope else base
        if not self._taken(name):
            return name
        # probe on from the last suffix handed out for this name, not from 1: thousands
        # of nodes sharing a name ("const") must not make building quadratic
        k = self._name_next.get(name, 1)
        while self._taken(f"{name}_{k}"):
            k += 1
        self._name_next[name] = k + 1
        return f"{name}_{k}"

    def _register_name(self, name, node_id):
        self._names[name] = node_id
        # a name that a future node would take by default ("sin_12" before node 12
        # exists) reserves that id: node 12 then gets a suffixed, registered name
        head, sep, digits = name.rpartition("_")
        if sep and digits.isdigit() and digits.isascii() and int(digits) >= len(self._handles):
            self._reserved.add(int(digits))

    def add_node(self, op, inputs, attrs, shape, dtype, *, name=None, kind="op",
                 value=None, weak=False, exact_name=False, where=_UNSET) -> "Node":
        """Append one node (its callers, ops.base.apply and the leaf constructors, have
        checked shapes) and return its handle. ``exact_name``: a taken ``name`` is a
        GraphError, not suffixed (user placeholders, fed by name). ``where``: the user's
        (file, line) when the caller has found it (apply does: one frame fewer to walk)."""
        if where is _UNSET:
            where = _user_site()  # outside the lock: it only reads the caller's frames
        k = len(inputs)
        input_ids = ((inputs[0].id,) if k == 1 else (inputs[0].id, inputs[1].id) if k == 2
                     else tuple([n.id for n in inputs]))
        scope, lock = self._scope, self._lock
        lock.acquire()   # (not ``with``: ~90 ns less a node; released in ``finally``)
        try:
            node_id = len(self._handles)
            # the common case: a default name, unique by construction, unregistered, and
            # made when read (NodeData), not stored: ~60 bytes a node
            register = exact_name or name is not None or scope or op is None \
                or node_id in self._reserved
            if register:
                name = self._name_for(name, exact_name, op, kind, node_id)
            # The node's attributes go straight into the DiGraph's own node table. Its
            # edges are its inputs: the DiGraph's adjacency reads them from there, and
            # successors from an index brought up to date when first read (_Adjacency).
            if op is None:   # a leaf keeps every key; an op node leaves the defaults out
                d = self._node[node_id] = _leaf_record(attrs, name, shape, dtype, input_ids,
                                                       kind, scope, where, value, weak)
            else:
                # (stored one by one: ~90 ns less than keyword arguments, per node)
                d = self._node[node_id] = OpNodeData()
                d["op"] = op
                d["shape"] = shape
                d["dtype"] = dtype
                d["inputs"] = input_ids
                d["where"] = where
                if attrs:
                    d["attrs"] = attrs
                if scope:
                    d["scope"] = tuple(scope)
                if kind != "op":
                    d["kind"] = kind
                if register:
                    d["name"] = name
                else:
                    d.default_id = node_id
            groups = _state.__dict__.get("groups")   # (getattr's miss raises: slow)
            if groups:
                d["group"] = tuple(f.name_in(self) for f in groups)
            if self._nx_cache:
                self._nx_cache.clear()   # as nx's own add_node does
            handle = Node(self, node_id, d)
            self._handles.append(handle)
            self._inputs.append(input_ids)
            if register:
                self._register_name(name, node_id)
        finally:
            lock.release()
        if not node_id & _FREEZE_EVERY_MASK and node_id:
            _freeze_while_building(self)
        return handle

    def unary_twin(self, op, x) -> "Node | None":
        """An existing node ``op(x)`` (one input, no attrs, this scope, no open composite
        group) among the few built just after ``x``, or None: while ``sharing_unary``
        holds, ops.base.apply asks this first, so a sweep's rule asking for ``cos(x)``
        gets the forward pass's ``cos(x)``, not a copy that every compile merges again."""
        src = x.id
        input_ids = (src,)
        window = self._inputs[src + 1:src + 1 + _TWIN_WINDOW]
        k = -1
        for _ in range(window.count(input_ids)):   # (C-level scans: this is per rule call)
            k = window.index(input_ids, k + 1)
            d = self._node[src + 1 + k]
            if d["op"] is op and stored(d, "attrs", NO_ATTRS) is NO_ATTRS \
                    and "group" not in d and stored(d, "scope", ()) == tuple(self._scope) \
                    and not op.stateful \
                    and not _state.__dict__.get("groups"):
                return self._handles[src + 1 + k]
        return None

    def ancestors(self, ids) -> list[int]:
        """Ids of every node the nodes ``ids`` depend on (themselves included), ascending.

        One sweep down the ids from the highest, marking inputs in a bytearray: each
        needed id costs a list index and its inputs' marks, with no set, no stack and no
        sort (about 2.5x faster than a depth-first search on a 30k-node chain). A sweep
        also steps over the unrelated ids in between (~25 ns each), so a depth-first
        search runs first with a budget of 1/64 of the span: a small ancestor set inside
        a large graph is found by it alone, and when it is not, the sweep costs at most a
        few times the search it replaces."""
        inputs = self._inputs
        seen = set(ids)
        hi = max(seen)
        stack = list(seen)
        add, push, pop = seen.add, stack.append, stack.pop
        budget = (hi >> 6) + 64
        while stack and budget:
            budget -= 1
            for i in inputs[pop()]:
                if i not in seen:
                    add(i)
                    push(i)
        if not stack:
            return sorted(seen)
        need = bytearray(hi + 1)   # nodes in `seen` whose inputs are unmarked: redone
        for i in seen:
            need[i] = 1
        for nid in range(hi, -1, -1):
            if need[nid]:
                for i in inputs[nid]:
                    need[i] = 1
        # the handles' own id objects (the graph's node keys and input tuples hold the
        # same ones), not fresh ints from a range: a compile keeps this list, and a
        # fresh int is 32 bytes a node more (handles is append-only: safe to iterate
        # while another thread adds nodes)
        return list(map(_node_id, compress(self._handles, need)))

    # -- the DiGraph's adjacency, read from the edge store ------------------------
    def _successors(self, u) -> dict:
        """{v: edge attrs} for the nodes that take ``u`` as an input, ascending."""
        first, edst, enext = self._first, self._edst, self._enext
        if len(first) < len(self._handles):
            self._index_edges()
        out = []
        e = first[u]
        while e >= 0:
            out.append(edst[e])
            e = enext[e]
        node = self._node
        return {v: _edge_attrs(node[v]["inputs"], u) for v in reversed(out)}

    def _index_edges(self):
        """Add the out-edges of the nodes built since the index was last brought up to date
        (in id order, so each list stays newest first)."""
        with self._lock:
            first, edst, enext = self._first, self._edst, self._enext
            node = self._node
            for v in range(len(first), len(self._handles)):
                first.append(-1)
                inputs = node[v]["inputs"]
                if len(inputs) > 1:   # one edge per distinct input (x * x has one)
                    inputs = dict.fromkeys(inputs)
                for src in inputs:
                    enext.append(first[src])
                    first[src] = len(edst)
                    edst.append(v)

    def _predecessors(self, v) -> dict:
        """{u: edge attrs} for ``v``'s distinct inputs, in argument order."""
        inputs = self._node[v]["inputs"]
        return {u: _edge_attrs(inputs, u) for u in inputs}

    def _name_for(self, name, exact_name, op, kind, node_id) -> str:
        """The name add_node stores (and registers) for a node it does not leave to a
        made default: the given one, checked (``exact_name``) or made unique."""
        if exact_name:
            return self._exact_name(name)
        return self.unique_name(name or f"{op.name if op is not None else kind}_{node_id}")

    def _exact_name(self, base: str) -> str:
        """A placeholder is fed by name: a taken name is an error, never renamed."""
        prefix = "/".join(self._scope)
        name = f"{prefix}/{base}" if prefix else base
        if self._taken(name):
            other = self._handles[self.name_id(name)]
            raise GraphError(
                f"the graph already has a node named {name!r} ({other.kind}); a placeholder "
                "is fed by its name, so it must be unique: choose another name")
        return name


# How far after its input a unary node is looked for (the forward pass builds an input's
# consumers right after it: y = sin(x)·c + d·cos(x) puts cos(x) 4 ids after x).
_TWIN_WINDOW = 8


def sharing_graph():
    """The graph whose derivative sweep runs in this thread (``sharing_unary``), or None."""
    return _state.__dict__.get("sharing")


@contextlib.contextmanager
def sharing_unary(graph: Graph):
    """While the derivative sweeps of this thread build into ``graph``, a unary op with no
    attrs and no name whose node exists already, just after its input, is that node
    (``Graph.unary_twin``): the rules' ``cos(x)``, ``sin(x)``, ``exp(x)`` … are the
    forward pass's own nodes, so a gradient adds fewer nodes and draws its reuse of the
    forward values. Same op, same input, no attrs and not stateful: the same value."""
    prev = _state.__dict__.get("sharing")
    _state.sharing = graph
    try:
        yield
    finally:
        _state.sharing = prev


@contextlib.contextmanager
def name_scope(name: str, graph: Graph | None = None):
    """Prefix the names of nodes built inside with ``name/``; viz draws scopes as clusters."""
    if not name or "/" in name:
        raise ValueError(f"a scope name must be non-empty and contain no '/': {name!r}")
    g = graph if graph is not None else default_graph()   # (an empty Graph is falsy)
    g._scope.append(name)
    try:
        yield
    finally:
        g._scope.pop()


# -- the cyclic collector while a large graph is built -----------------------------------
# Building a graph allocates a few long-lived, collector-tracked objects a node (the attrs
# dict, the handle). Each full collection rescans every one of them, which was a quarter
# of building 10^5+ nodes. So, inside ``with graph:``, every 2^12 nodes the objects alive
# so far are moved out of the collector's sight (gc.freeze: a constant-time splice) and
# given back (gc.unfreeze) when the outermost such block exits. Young garbage is still
# collected as usual; garbage cycles among frozen objects wait for the block's end.
# Nothing is frozen when something else already froze objects (gc.get_freeze_count()).
# (Every 2^16 nodes, the full collections between two freezes still rescanned up to
# 200k objects: ~0.6 us a node, a fifth of building a chain; every 2^12 nearly none.)

_FREEZE_EVERY_MASK = (1 << 12) - 1
_FROZEN_BY: set = set()         # graphs whose building froze the collector's objects
_FREEZE_LOCK = threading.Lock()


def _freeze_while_building(graph):
    stack = _state.__dict__.get("graphs")
    if not stack or stack[-1] is not graph:   # only inside the graph's own with-block,
        return                                # whose exit gives the objects back
    with _FREEZE_LOCK:
        if _FROZEN_BY or not gc.get_freeze_count():
            _FROZEN_BY.add(graph)
            gc.freeze()


def _thaw(graph):
    with _FREEZE_LOCK:
        _FROZEN_BY.discard(graph)
        if not _FROZEN_BY:
            gc.unfreeze()


@contextlib.contextmanager
def gc_paused():
    """Hold off Python's cyclic garbage collector for one sweep over a large graph.

    A sweep that builds or maps every node (autodiff's, a compile's) allocates millions
    of long-lived objects; each full collection rescans them all, which cost as much as
    the sweep itself at 10^5 nodes. The sweeps make no reference cycles worth collecting
    meanwhile, and the collector is re-enabled (if it was on) when the sweep ends."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class _NoAttrs(dict):
    """The attrs of every node built without any: one shared, empty and unchangeable
    dict (a fresh ``{}`` per node was 64 bytes; a node's attrs are never edited)."""

    __slots__ = ()

    def _frozen(self, *args, **kwargs):
        raise TypeError("a node's attrs cannot be changed")

    __setitem__ = __delitem__ = update = setdefault = pop = popitem = clear = _frozen
    __ior__ = _frozen


NO_ATTRS = _NoAttrs()


_node_id = attrgetter("id")   # Graph.ancestors: a handle's own id object


class NodeData(dict):
    """A node's attribute dict in ``Graph.nx``: a plain dict whose keys at their defaults
    (``value`` None, ``weak`` False, ``group`` ()) may be absent and still read as the
    default by ``d[key]``. A leaf stores every other key; an op node's record is an
    ``OpNodeData``, which leaves out more. ``group`` is stored only while a composite
    group is open (flowgrad/composite.py pushes and names them).

    A default name (``sin_12``: the op's name and the node's id) is not stored either:
    ``default_id`` holds the id and the name is made when read (~60 bytes a node, the
    string). It reads as a stored key everywhere — ``d["name"]``, ``in``, ``get``,
    iteration, ``items()``, copies, networkx's views — until a name is assigned."""

    __slots__ = ("default_id",)
    DEFAULTS = {"value": None, "weak": False, "group": ()}
    #: keys left out at their defaults that still read as stored (``in``, iteration)
    SHOWN = ()

    def _made_name(self):
        """The default name made on read, or None when the name is stored (or none)."""
        nid = getattr(self, "default_id", None)
        if nid is None or dict.__contains__(self, "name"):
            return None
        return f"{dict.__getitem__(self, 'op').name}_{nid}"

    def __missing__(self, key):
        try:
            return self.DEFAULTS[key]
        except KeyError:
            name = self._made_name() if key == "name" else None
            if name is not None:
                return name
            raise KeyError(key) from None

    def full(self) -> dict:
        """Every stored key, a made name and the shown defaults, as a plain dict."""
        name = self._made_name()
        if name is None and not self.SHOWN:
            return dict(dict.items(self))   # (dict.copy would call keys(): this class)
        out = {}
        get, defaults = dict.get, self.DEFAULTS
        for k in _KEY_ORDER:   # the order a record built with every key has
            v = get(self, k, _UNSET)
            if v is not _UNSET:
                out[k] = v
            elif k == "name":
                if name is not None:
                    out[k] = name
            elif k in self.SHOWN:
                out[k] = defaults[k]
        for k, v in dict.items(self):   # the rest (value, weak, group …), as stored
            if k not in out:
                out[k] = v
        return out

    def _shows(self, key) -> bool:
        """Whether an absent ``key`` reads as stored: a made name or a shown default."""
        return key in self.SHOWN or (key == "name" and self._made_name() is not None)

    def __contains__(self, key):
        return dict.__contains__(self, key) or self._shows(key)

    def get(self, key, default=None):
        if dict.__contains__(self, key):
            return dict.__getitem__(self, key)
        return self[key] if self._shows(key) else default

    def __iter__(self):
        return iter(self.full())

    def __len__(self):
        return len(self.full())

    def keys(self):
        return self.full().keys()

    def items(self):
        return self.full().items()

    def values(self):
        return self.full().values()

    def __eq__(self, other):
        return self.full() == (other.full() if isinstance(other, NodeData) else other)

    def __ne__(self, other):
        return not self == other

    __hash__ = None

    def __repr__(self):
        return repr(self.full())

    def __reduce_ex__(self, protocol):   # copied or pickled: the name stored
        return NodeData, (self.full(),)

    def copy(self):   # nx's graph.copy() copies attr dicts: keep the defaults readable
        return NodeData(self.full())


#: the keys of a record built with all of them, in the order they read (``full``)
_KEY_ORDER = ("op", "attrs", "name", "shape", "dtype", "inputs", "kind", "scope", "where")


class OpNodeData(NodeData):
    """An op node's record: it stores ``op``, ``shape``, ``dtype``, ``inputs`` and
    ``where``, and ``attrs``, ``scope``, ``kind`` and ``name`` only when they differ from
    their defaults (``NO_ATTRS``, ``()``, ``'op'``, the made name), yet reads as a record
    holding all of them. Five keys fit a dict's smallest table: 184 bytes, where the nine
    of a full record take 280 (10^6 nodes: ~0.3 GB). ``d["kind"]`` on an op node costs a
    Python call (``__missing__``): the engine's per-node loops read ``op`` first, and
    ``attrs`` through ``stored(d, "attrs", NO_ATTRS)``."""

    __slots__ = ()
    SHOWN = ("attrs", "kind", "scope")
    DEFAULTS = {**NodeData.DEFAULTS, "attrs": NO_ATTRS, "kind": "op", "scope": ()}


#: ``stored(d, key, default)``: a record's stored ``key``, else ``default``, read at C
#: speed (dict.get, past NodeData's Python-level ``get``). For the engine's per-node loops
#: reading a key that an op node may leave out at its default, ``attrs`` above all
#: (``stored(d, "attrs", NO_ATTRS)``); never for ``name`` (a made name is not stored).
stored = dict.get


class _DiGraph(nx.DiGraph):
    """A networkx DiGraph whose node attribute dicts are NodeData, so that a copy made by
    networkx (``g.nx.copy()``, ``g.nx.subgraph(...).copy()``) reads the defaults too."""

    node_attr_dict_factory = NodeData


def _edge_attrs(inputs, src) -> dict:
    """The attrs of edge src -> v, v's inputs being ``inputs``: the argument numbers at
    which v takes src (a shared dict for one argument, a fresh one for several)."""
    argnums = tuple([k for k, i in enumerate(inputs) if i == src])
    if len(argnums) == 1 and argnums[0] < len(_EDGE):
        return _EDGE[argnums[0]]
    return {"argnums": argnums}


class _Adjacency(Mapping):
    """The DiGraph's ``_succ``/``_pred`` (``_adj``) for a flowgrad graph: {node: {nbr:
    edge attrs}}, each inner mapping made on demand from the graph's compact store
    (inputs tuples and the out-edge lists). Everything networkx reads works (views,
    algorithms, ``copy()``, which returns an ordinary mutable DiGraph); writing through
    networkx is a TypeError, since a flowgrad graph grows only through its ops."""

    __slots__ = ("_nodes", "_inner")

    def __init__(self, nodes, inner):
        self._nodes = nodes    # the DiGraph's {id: attrs}, for the key set
        self._inner = inner    # id -> {nbr: edge attrs}

    def __getitem__(self, n):
        if n not in self._nodes:
            raise KeyError(n)
        return MappingProxyType(self._inner(n))

    def __contains__(self, n):
        return n in self._nodes

    def __iter__(self):
        return iter(self._nodes)

    def __len__(self):
        return len(self._nodes)

    def __reduce__(self):
        # copied (copy.deepcopy(g.nx)) or pickled: as the ordinary dict of dicts it
        # stands for, so the copy is an ordinary DiGraph, detached from the Graph
        return dict, ({n: dict(self._inner(n)) for n in self._nodes},)

    def _read_only(self, *args, **kwargs):
        raise TypeError("a flowgrad graph's networkx view is read-only: add nodes with "
                        "flowgrad ops (g.nx.copy() is an ordinary, mutable DiGraph)")

    __setitem__ = __delitem__ = _read_only


class Node:
    """A handle on one vertex of a Graph. Supports ``+ - * / ** @``, unary ``-``,
    ``.T`` and indexing; every operator adds a node to the same graph."""

    #: ``record`` is the node's attribute mapping in ``graph.nx`` (op, inputs, shape, dtype,
    #: attrs, value …), held so the engine reads it without a networkx look-up. Modules
    #: read it; only the graph and the ops' builder (ops/base.py) write it.
    __slots__ = ("graph", "id", "record")
    __array_ufunc__ = None  # make numpy defer: ``array * node`` calls ``node.__rmul__``

    def __init__(self, graph: Graph, node_id: int, data=None):
        self.graph = graph
        self.id = node_id
        self.record = graph.nx.nodes[node_id] if data is None else data

    # -- metadata ---------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.record["name"]

    @name.setter
    def name(self, new: str):
        g = self.graph
        if not isinstance(new, str) or not new:
            raise ValueError("a node name must be a non-empty string")
        if new == self.record["name"]:
            return
        with g._lock:
            if g._taken(new):
                raise ValueError(f"the graph already has a node named {new!r}")
            g._names.pop(self.record["name"], None)   # (a default name is not registered)
            self.record["name"] = new
            g._register_name(new, self.id)

    def named(self, name: str) -> "Node":
        """Give this node a name (shown in drawings, usable as a feed key); returns it.
        The node's name scope is prefixed unless ``name`` already holds a '/'."""
        self.name = name if "/" in name else "/".join(self.scope + (name,))
        return self

    @property
    def where(self) -> str | None:
        """``file:line`` of the user's code that built this node (None if unknown)."""
        site = self.record["where"]
        return f"{site[0]}:{site[1]}" if site else None

    @property
    def shape(self) -> tuple:
        return self.record["shape"]

    @property
    def ndim(self) -> int:
        return len(self.record["shape"])

    @property
    def dtype(self) -> np.dtype:
        return self.record["dtype"]

    @property
    def op(self):
        return self.record["op"]

    @property
    def kind(self) -> str:
        """'placeholder', 'variable', 'constant' or 'op'."""
        return self.record["kind"]

    @property
    def attrs(self) -> dict:
        return self.record["attrs"]

    @property
    def inputs(self) -> tuple["Node", ...]:
        h = self.graph._handles
        return tuple(h[i] for i in self.record["inputs"])

    @property
    def scope(self) -> tuple:
        return self.record["scope"]

    @property
    def group(self) -> tuple:
        """The ``fg.composite`` groups this node was built in, outermost first."""
        return self.record["group"]

    @property
    def value(self):
        """The current value of a variable or constant."""
        if self.kind not in ("variable", "constant"):
            raise AttributeError(f"{self.name} is a {self.kind}: only variables and "
                                 "constants hold a value; use fg.run to compute it")
        return self.record["value"]

    @value.setter
    def value(self, new):
        if self.kind != "variable":
            raise AttributeError(f"{self.name} is a {self.kind}: only variables can be assigned")
        from .leaves import check_variable_value
        self.record["value"] = check_variable_value(self, new)

    def __repr__(self) -> str:
        shape = "(" + ", ".join("None" if s is None else str(s) for s in self.shape) + \
            ("," if len(self.shape) == 1 else "") + ")"
        op = self.op.name if self.op is not None else self.kind
        return f"<Node {self.name!r} {op} shape={shape} dtype={self.dtype}>"

    def __iter__(self):
        raise TypeError("a flowgrad Node is not iterable; index it (x[i]) to build a node")

    def __bool__(self):
        raise TypeError("a flowgrad Node has no truth value until it is run; "
                        "use fg.where / fg.maximum to build a branch")

    def _no_value(self, what):
        from .errors import UsageError
        raise UsageError(f"{what} of node {self.name!r}: a node has no value until it is run; "
                         f"use fg.run({self.name}) (or prog(feed)) and convert the result")

    # float(node), int(node), np.asarray(node): each would otherwise fail with a message that
    # never says why (or, for numpy, silently make a 0-d object array holding the handle)
    def __float__(self): self._no_value("float()")
    def __int__(self): self._no_value("int()")
    def __complex__(self): self._no_value("complex()")
    def __array__(self, dtype=None, copy=None): self._no_value("a numpy array")

    __hash__ = object.__hash__

    # -- operators (the ops module is imported lazily: it imports this one) ----
    def __add__(self, other): return _OPS.add(self, other)
    def __radd__(self, other): return _OPS.add(other, self)
    def __sub__(self, other): return _OPS.sub(self, other)
    def __rsub__(self, other): return _OPS.sub(other, self)
    def __mul__(self, other): return _OPS.mul(self, other)
    def __rmul__(self, other): return _OPS.mul(other, self)
    def __truediv__(self, other): return _OPS.div(self, other)
    def __rtruediv__(self, other): return _OPS.div(other, self)
    def __pow__(self, other): return _OPS.pow(self, other)
    def __rpow__(self, other): return _OPS.pow(other, self)
    def __matmul__(self, other): return _OPS.matmul(self, other)
    def __rmatmul__(self, other): return _OPS.matmul(other, self)
    def __neg__(self): return _OPS.neg(self)
    # Comparisons build boolean nodes (for fg.where); == and != keep identity semantics
    # between nodes, so that nodes stay usable as dict keys and in lists. Against anything
    # else (x != 0.0) they would silently be a Python bool: fg.where(x != 0.0, …) then
    # picks one branch for every entry. That is refused, naming fg.equal/fg.not_equal.
    def __eq__(self, other):
        if isinstance(other, Node) or other is None:
            return self is other
        self._elementwise_compare("==", "fg.equal")

    def __ne__(self, other):
        if isinstance(other, Node) or other is None:
            return self is not other
        self._elementwise_compare("!=", "fg.not_equal")

    def _elementwise_compare(self, sym, fn):
        from .errors import UsageError
        raise UsageError(f"node {self.name!r} {sym} a value: == and != compare node identity "
                         f"(nodes are dict keys), never values; build the comparison with "
                         f"{fn}({self.name}, value)")

    def __lt__(self, other): return _OPS.less(self, other)
    def __le__(self, other): return _OPS.less_equal(self, other)
    def __gt__(self, other): return _OPS.greater(self, other)
    def __ge__(self, other): return _OPS.greater_equal(self, other)
    def __pos__(self): return self
    def __getitem__(self, index): return _OPS.getitem(self, index)

    @property
    def T(self) -> "Node":
        return _OPS.transpose(self)


class _LazyOps:
    """Stands for the ops package until its first use (it imports this module, so it
    cannot be imported at the top), then is replaced by it: an operator is one global
    and one attribute look-up, not an import statement or a call per node."""

    def __getattr__(self, name):
        global _OPS
        from flowgrad import ops
        _OPS = ops
        return getattr(ops, name)


_OPS = _LazyOps()


def _user_site():
    """The user's (file, line) for a node being built (ops.base.user_site, bound once:
    the ops package imports this module, so it cannot be imported at the top)."""
    global _user_site
    from flowgrad.ops.base import user_site
    _user_site = user_site
    return user_site()


def same_graph(nodes) -> Graph:
    """The one graph all ``nodes`` belong to; mixing graphs is a GraphError."""
    graph = None
    for n in nodes:
        if graph is None:
            graph = n.graph
        elif n.graph is not graph:
            raise GraphError(
                f"nodes from two graphs mixed: {n.name!r} belongs to {n.graph!r}, "
                f"but {graph!r} was expected; build them inside one `with fg.Graph()`")
    return graph
