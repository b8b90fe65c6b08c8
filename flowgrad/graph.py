"""The graph: a networkx DiGraph over flowgrad's nodes (flowgrad/node.py), and scopes.

The nodes are the source of truth: ``Graph.handles[i]`` is node ``i``, a typed object
holding ``op``, ``shape``, ``dtype``, ``input_ids`` (ordered; a DiGraph cannot hold the
two edges of ``x * x``) and ``attrs``; the user's line of each node is kept here, as runs
of nodes built from one line (``site_of``). ``Graph.nx`` reads them: its
node table shows each node's ``NodeRecord`` (``g.nx.nodes[i]["op"]``), and its edges,
labelled with the argument numbers, are derived from the inputs on demand rather than
held as two dicts a node. So ``Graph.nx`` is read-only through networkx (``g.nx.copy()``
is an ordinary, mutable DiGraph).

Ids are handed out in creation order and a node's inputs always exist before
it, so id order *is* a topological order: the sweeps and the scheduler sort by
id instead of walking the graph, and no cycle can ever be built.

Threads: adding a node (id, name, edges, handle) happens under the graph's lock, so
several threads may build into one graph, the module-level default included. Name
scopes (``fg.name_scope``, a layer's scope) are per graph *and* per thread, as
TensorFlow's name stack is: a scope one thread opens names only the nodes that thread
builds (docs/threads.md).

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
from bisect import bisect_right
from itertools import compress
from operator import attrgetter
from collections.abc import Mapping
from types import MappingProxyType

import networkx as nx

from .errors import ArgumentError, GraphError, UsageError, located
from .node import NO_ATTRS, Node, NodeRecord  # noqa: F401  (re-exported: graph.Node)

_new_node = object.__new__   # Graph.add_node: a Node without an __init__ call

_state = threading.local()
#: this module's per-thread state (open graphs, a running sweep's graph, open composite
#: groups), public for the few hot paths that read it inline (ops.base.apply)
thread_state = _state

# The edge-attribute dicts of the common edges (argument 0, 1, 2 …), shared by every such
# edge: one dict per edge was ~180 bytes a node. Shared dicts hold only an immutable tuple
# and are never updated in place (a repeated input gets a fresh dict), so nothing sees the
# sharing; and holding no tracked object they keep the adjacency dicts out of the cyclic
# collector's scans, which dominated building very large graphs.
_EDGE = tuple({"argnums": (k,)} for k in range(8))


_NO_SCOPE: list = []   # a thread's scope where it opened none (never changed in place)

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
        self._handles: list[Node] = []
        # {op: id of its first one-input node}: unary_twin's precheck (a twin of x has an
        # id within _TWIN_WINDOW after x, so an op first built later has none there)
        self._first_unary: dict = {}
        # The user's (file, line) of each node, as runs: node ids from _site_starts[k] up
        # to the next start were built from _sites[k] (a loop builds one run; a node
        # slot was 8 bytes a node, a run is 16 bytes a source line change)
        self._site_starts = array("q")
        self._sites: list = []
        self._last_site = _UNSET
        nxg = self.nx
        # networkx's node table reads the handles (no dict a node); its cache of views
        # is never filled for a graph that only grows through add_node
        nxg._node = _NodeTable(self._handles)
        self._nx_cache = nxg.__networkx_cache__
        nxg._succ = nxg._adj = _Adjacency(nxg._node, self._successors)
        nxg._pred = _Adjacency(nxg._node, self._predecessors)
        self._names: dict[str, int] = {}
        self._reserved: set[int] = set()   # ids whose default name is taken already
        self._name_next: dict[str, int] = {}
        # the open name scope of each thread building into this graph (.path, a list
        # never changed in place), and how many threads have one open: add_node's
        # one test in the common case (no scope anywhere), as the plain list was
        self._scopes = threading.local()
        self._scoped = 0
        # guards ids, names and edges (never held while calling out: a plain lock suffices)
        self._lock = threading.Lock()
        # other modules' tables that must live and die with the graph (owned_table)
        self._owned: dict = {}

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
        n = len(self)
        return f"<flowgrad.Graph with {n} node{'' if n == 1 else 's'}>"

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
                if k < len(self._handles) and self._handles[k].name == name:
                    return k
        return nid

    def _taken(self, name) -> bool:
        return name in self._names or self.name_id(name) is not None

    def site_of(self, node_id: int):
        """The user's ``(file, line)`` that built node ``node_id`` (None: unknown)."""
        if not 0 <= node_id < len(self._handles):
            raise IndexError(f"no node {node_id} in this graph")
        return self._sites[bisect_right(self._site_starts, node_id) - 1]

    @property
    def scope(self) -> tuple:
        """The name scope this thread has open now (``fg.name_scope``), outermost first."""
        return tuple(self._scope)

    @property
    def _scope(self) -> list:
        """This thread's open scope in this graph (read it; ``_swap_scope`` sets it)."""
        return self._scopes.__dict__.get("path", _NO_SCOPE)

    def _swap_scope(self, path: list) -> list:
        """Make ``path`` this thread's open scope; returns the one it replaces. Another
        thread's scope is its own: a per-graph list let one thread's layer name another's
        variables, and two threads' exits could leave a scope open for good."""
        local = self._scopes.__dict__
        old = local.get("path", _NO_SCOPE)
        if bool(old) != bool(path):
            with self._lock:
                self._scoped += 1 if path else -1
        local["path"] = path
        return old

    @contextlib.contextmanager
    def scope_path(self, path):
        """Build under exactly the scope ``path`` (a tuple of names), whatever scope is
        open: a layer re-entered on reuse, a graph file's node rebuilt where it was."""
        saved = self._swap_scope(list(path))
        try:
            yield
        finally:
            self._swap_scope(saved)

    def prefix_in_use(self, prefix: str) -> bool:
        """Whether a node is named ``prefix`` or has a name under ``prefix + "/"``."""
        with self._lock:   # (another thread's node may register a name meanwhile)
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

    def rename(self, node, new: str):
        """Give ``node`` the name ``new`` (``node.name = new``); a taken name is refused."""
        with self._lock:
            if self._taken(new):
                raise located(GraphError, f"the graph already has a node named {new!r}")
            self._names.pop(node.name, None)   # (a default name is not registered)
            node.set_more("name", new)
            self._register_name(new, node.id)

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
        node = _new_node(Node)   # (slots set one by one: no __init__ call, per node)
        node.graph = self
        node.op = op
        node.shape = shape
        node.dtype = dtype
        node.input_ids = input_ids = (
            (inputs[0].id,) if k == 1 else (inputs[0].id, inputs[1].id) if k == 2
            else tuple([n.id for n in inputs]))
        node.attrs = attrs or NO_ATTRS
        # the common case keeps nothing more: an op node with a default name (``sin_12``,
        # unique by construction, neither registered nor stored: made when read), no
        # scope, no open composite group
        rare = op is None or kind != "op" or name is not None or exact_name \
            or self._scoped or _state.__dict__.get("groups")   # (getattr's miss: slow)
        more = self._more_fields(op, kind, value, weak) if rare else None
        handles, lock = self._handles, self._lock
        lock.acquire()   # (not ``with``: ~90 ns less a node; released in ``finally``)
        try:
            node_id = len(handles)
            if (rare and (exact_name or name is not None or self._scope or op is None)) \
                    or node_id in self._reserved:   # (reserved: a user took its default)
                more = more if more is not None else {}
                more["name"] = self._name_for(name, exact_name, op, kind, node_id)
                self._register_name(more["name"], node_id)
            node.more = more or None
            node.id = node_id
            if where is not self._last_site:   # a new run of nodes from one line
                self._site_starts.append(node_id)
                self._sites.append(where)
                self._last_site = where
            if self._nx_cache:
                self._nx_cache.clear()   # as nx's own add_node does
            handles.append(node)
            self._inputs.append(input_ids)
            if k == 1 and op not in self._first_unary:
                self._first_unary[op] = node_id
        finally:
            lock.release()
        if not node_id & _FREEZE_EVERY_MASK and node_id:
            _freeze_while_building(self)
        return node

    def _more_fields(self, op, kind, value, weak) -> dict:
        """The rare fields of a node add_node builds now (its name comes later, under the
        lock): a leaf's kind, value and weak flag, another kind, the open scope and
        composite groups."""
        more = {"kind": kind, "value": value, "weak": weak} if op is None else \
            {"kind": kind} if kind != "op" else {}
        if self._scope:
            more["scope"] = tuple(self._scope)
        groups = _state.__dict__.get("groups")
        if groups:
            more["group"] = tuple(f.name_in(self) for f in groups)
        return more

    def unary_twin(self, op, x) -> "Node | None":
        """An existing node ``op(x)`` (one input, no attrs, this scope, no open composite
        group) among the few built just after ``x``, or None: while ``sharing_unary``
        holds, ops.base.apply asks this first, so a sweep's rule asking for ``cos(x)``
        gets the forward pass's ``cos(x)``, not a copy that every compile merges again."""
        src = x.id
        if self._first_unary.get(op, _NEVER) > src + _TWIN_WINDOW:
            return None   # (no such node yet, or none before the window ends: no scan)
        input_ids = (src,)
        window = self._inputs[src + 1:src + 1 + _TWIN_WINDOW]
        k = -1
        for _ in range(window.count(input_ids)):   # (C-level scans: this is per rule call)
            k = window.index(input_ids, k + 1)
            d = self._handles[src + 1 + k]
            if d.op is op and d.attrs is NO_ATTRS and (d.more is None or (
                    "group" not in d.more and "kind" not in d.more)) \
                    and d.scope == tuple(self._scope) and not op.stateful \
                    and not _state.__dict__.get("groups"):
                return d
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
        h = self._handles
        return {v: _edge_attrs(h[v].input_ids, u) for v in reversed(out)}

    def _index_edges(self):
        """Add the out-edges of the nodes built since the index was last brought up to date
        (in id order, so each list stays newest first)."""
        with self._lock:
            first, edst, enext = self._first, self._edst, self._enext
            inputs_of = self._inputs
            for v in range(len(first), len(self._handles)):
                first.append(-1)
                inputs = inputs_of[v]
                if len(inputs) > 1:   # one edge per distinct input (x * x has one)
                    inputs = dict.fromkeys(inputs)
                for src in inputs:
                    enext.append(first[src])
                    first[src] = len(edst)
                    edst.append(v)

    def _predecessors(self, v) -> dict:
        """{u: edge attrs} for ``v``'s distinct inputs, in argument order."""
        inputs = self._inputs[v]
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
            raise located(
                GraphError,
                f"the graph already has a node named {name!r} ({other.kind}); a placeholder "
                "is fed by its name, so it must be unique: choose another name")
        return name


# How far after its input a unary node is looked for (the forward pass builds an input's
# consumers right after it: y = sin(x)·c + d·cos(x) puts cos(x) 4 ids after x).
_TWIN_WINDOW = 8
_NEVER = 1 << 62   # (an id past any graph's: "no such node yet")


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


def name_scope(name: str, graph: Graph | None = None):
    """Prefix the names of nodes built inside with ``name/``; viz draws scopes as clusters.
    The name is checked here, in the user's call (not when contextlib enters the block,
    whose frame an error would then name)."""
    if not isinstance(name, str):
        raise located(UsageError, f"name_scope takes a string, got {type(name).__name__} {name!r}")
    if not name or "/" in name:
        raise located(ArgumentError,
                      f"a scope name must be non-empty and contain no '/': {name!r}")
    return _name_scope(name, graph)


@contextlib.contextmanager
def _name_scope(name: str, graph: Graph | None):
    g = graph if graph is not None else default_graph()   # (an empty Graph is falsy)
    saved = g._swap_scope(g._scope + [name])
    try:
        yield
    finally:
        g._swap_scope(saved)


# -- the cyclic collector while a large graph is built -----------------------------------
# Building a graph allocates long-lived, collector-tracked objects a node (the node,
# its more-dict if any). Each full collection rescans every one of them, which was a quarter
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


# The collector's switch is the process's, and sweeps run in several threads at once:
# the first sweep to start turns it off and the last to end turns it back on (if it was
# on). A sweep remembering ``gc.isenabled()`` alone could read it off (another thread's
# sweep) just before that sweep ended, and then never turn it on again.
_PAUSE_LOCK = threading.Lock()
_paused = [0, False]   # [sweeps under way, whether the collector was on before the first]


@contextlib.contextmanager
def gc_paused():
    """Hold off Python's cyclic garbage collector for one sweep over a large graph.

    A sweep that builds or maps every node (autodiff's, a compile's) allocates millions
    of long-lived objects; each full collection rescans them all, which cost as much as
    the sweep itself at 10^5 nodes. The sweeps make no reference cycles worth collecting
    meanwhile, and the collector is re-enabled (if it was on) when the last sweep under
    way, in any thread, ends."""
    with _PAUSE_LOCK:
        if not _paused[0]:
            _paused[1] = gc.isenabled()
            gc.disable()
        _paused[0] += 1
    try:
        yield
    finally:
        with _PAUSE_LOCK:
            _paused[0] -= 1
            if not _paused[0] and _paused[1]:
                gc.enable()


_node_id = attrgetter("id")   # Graph.ancestors: a handle's own id object


class _DiGraph(nx.DiGraph):
    """The networkx DiGraph of a flowgrad graph: its node table and adjacency read the
    graph's nodes (``_NodeTable``, ``_Adjacency``); a copy is an ordinary DiGraph."""


class _NodeTable(Mapping):
    """The DiGraph's ``_node``: {id: NodeRecord}, each record made when read from the
    graph's handles (ids are 0 … n-1). Read-only: nodes are added by flowgrad ops."""

    __slots__ = ("_handles",)

    def __init__(self, handles):
        self._handles = handles

    def _id_of(self, n):
        """The id ``n`` stands for, or None: as a dict keyed 0 … len-1 would match it
        (any number equal to an id in range: 3, np.int64(3), 3.0)."""
        try:
            k = int(n)
        except (TypeError, ValueError, OverflowError):
            return None
        return k if k == n and 0 <= k < len(self._handles) else None

    def __getitem__(self, n):
        k = n if type(n) is int and 0 <= n < len(self._handles) else self._id_of(n)
        if k is None:
            raise KeyError(n)
        return self._handles[k].record

    def __contains__(self, n):
        return self._id_of(n) is not None

    def __iter__(self):
        return iter(range(len(self._handles)))

    def __len__(self):
        return len(self._handles)

    def __reduce__(self):   # copied or pickled: the ordinary dict it stands for
        return dict, ({n: dict(h.record) for n, h in enumerate(self._handles)},)

    def _read_only(self, *args, **kwargs):
        raise TypeError("a flowgrad graph's networkx view is read-only: add nodes with "
                        "flowgrad ops (g.nx.copy() is an ordinary, mutable DiGraph)")

    __setitem__ = __delitem__ = _read_only


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


def _user_site():
    """The user's (file, line) for a node being built (ops.base.user_site, bound once:
    the ops package imports this module, so it cannot be imported at the top)."""
    global _user_site
    from flowgrad.ops.base import user_site
    _user_site = user_site
    return user_site()


def owned_table(graph: Graph, name: str, make):
    """The graph's own table ``name`` (``make()`` on first use), for a module whose
    per-graph values hold the graph's nodes: such a table in a WeakKeyDictionary keyed
    by the graph keeps every graph alive (its value refers back to its key), while one
    held by the graph goes with it (fg.run's compiled programs, engine/program.py)."""
    table = graph._owned.get(name)
    if table is None:   # two threads may both make one: setdefault keeps the first
        table = graph._owned.setdefault(name, make())
    return table


def same_graph(nodes) -> Graph:
    """The one graph all ``nodes`` belong to; mixing graphs is a GraphError."""
    graph = first = None
    for n in nodes:
        if graph is None:
            graph, first = n.graph, n
        elif n.graph is not graph:
            raise located(GraphError, mixed_graphs(first, n))
    return graph


def mixed_graphs(a, b) -> str:
    """What to say when nodes ``a`` and ``b`` of two graphs meet. A loop or branch body
    is traced into a graph of its own (flowgrad/loops/build.py marks it ``loop_body``),
    so a node kept from inside a body and used outside it is the usual cause: say so."""
    for inner, other in ((b, a), (a, b)):
        body = getattr(inner.graph, "loop_body", None)
        if body is not None and other.graph is not inner.graph:
            return (f"node {inner.name!r} was built inside the body of {body} and is used "
                    f"outside it (with {other.name!r}): a node built inside a loop or branch "
                    "body exists only in that body; return it from the body (as a carry or "
                    "an output) and use the loop's result instead")
    return (f"nodes from two graphs mixed: {b.name!r} belongs to {b.graph!r}, but "
            f"{a.graph!r} was expected; build them inside one `with fg.Graph()`")
