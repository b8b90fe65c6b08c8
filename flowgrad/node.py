"""The node: one typed object per graph vertex, the handle users hold *and* its record.

A ``Node`` carries the fields every node has as slots — ``op``, ``shape``, ``dtype``,
``input_ids``, ``attrs`` — and the rare ones (``name`` when not the default,
``kind`` when not ``"op"``, ``scope``, ``group``, a leaf's ``value`` and ``weak``, keys a
user sets through networkx) in ``more``, a dict made only for the nodes that need one.
The engine's per-node loops read the slots (``graph.handles[i].op``): one attribute read,
no dict, no Python call.

Why one object: a handle plus a separate attribute dict was ~250 bytes a node (the dict
alone 184), and the networkx node table another ~50; a 10^6-node chain after its
gradient (3·10^6 nodes) held 1.6 GB. A node is now ~100 bytes, and ``graph.nx``'s node
table reads the handles (``Graph``'s ``_NodeTable``) instead of holding dicts.

``node.record`` is a ``NodeRecord``: a live mutable mapping over the node with the keys
of networkx's node attributes (``op``, ``attrs``, ``name``, ``shape``, ``dtype``,
``inputs``, ``kind``, ``scope``, ``where``, and ``value``/``weak``/``group`` when set).
networkx (``g.nx.nodes[i]``), drawings and graph files read nodes through it; it is
made on each read, so hot loops use the slots instead.
"""
from __future__ import annotations

from collections.abc import MutableMapping


class _NoAttrs(dict):
    """The attrs of every node built without any: one shared, empty and unchangeable
    dict (a fresh ``{}`` per node was 64 bytes; a node's attrs are never edited)."""

    __slots__ = ()

    def _frozen(self, *args, **kwargs):
        raise TypeError("a node's attrs cannot be changed")

    __setitem__ = __delitem__ = update = setdefault = pop = popitem = clear = _frozen
    __ior__ = _frozen


NO_ATTRS = _NoAttrs()

#: the defaults of the keys a node keeps in ``more`` only when they differ
MORE_DEFAULTS = {"kind": "op", "scope": (), "group": (), "value": None, "weak": False}


class Node:
    """A handle on one vertex of a Graph. Supports ``+ - * / ** @``, unary ``-``,
    ``.T`` and indexing; every operator adds a node to the same graph.

    Read-only fields (set once, when the graph builds the node): ``op`` (None for a
    leaf), ``shape``, ``dtype``, ``attrs``, ``input_ids`` (the inputs' ids, in argument
    order); ``site`` (the user's ``(file, line)``, or None) is read from the graph."""

    __slots__ = ("graph", "id", "op", "shape", "dtype", "input_ids", "attrs", "more")
    __array_ufunc__ = None  # make numpy defer: ``array * node`` calls ``node.__rmul__``

    # (no __init__: Graph.add_node sets the slots itself, ~0.3 us a node less than a call)

    # -- metadata ---------------------------------------------------------------
    @property
    def name(self) -> str:
        more = self.more
        if more is not None:
            name = more.get("name")
            if name is not None:
                return name
        op = self.op
        return f"{op.name if op is not None else 'node'}_{self.id}"

    @name.setter
    def name(self, new: str):
        if not isinstance(new, str) or not new:
            from .errors import ArgumentError, located
            raise located(ArgumentError, f"a node name must be a non-empty string, got {new!r}")
        if new != self.name:
            self.graph.rename(self, new)

    def named(self, name: str) -> "Node":
        """Give this node a name (shown in drawings, usable as a feed key); returns it.
        The node's name scope is prefixed unless ``name`` already holds a '/'."""
        self.name = name if "/" in name else "/".join(self.scope + (name,))
        return self

    def set_more(self, key, value):
        """Store a rare field (name, kind, scope, group, value, weak, a user's key); the
        graph, its builders and the backends' device caches write through here."""
        more = self.more
        if more is None:
            more = self.more = {}
        more[key] = value

    def _more(self, key):
        more = self.more
        return MORE_DEFAULTS[key] if more is None else more.get(key, MORE_DEFAULTS[key])

    @property
    def site(self) -> tuple | None:
        """The user's ``(file, line)`` that built this node, or None (the graph keeps
        one entry a run of nodes built from the same line: Graph.site_of)."""
        return self.graph.site_of(self.id)

    @property
    def where(self) -> str | None:
        """``file:line`` of the user's code that built this node (None if unknown)."""
        site = self.site
        return f"{site[0]}:{site[1]}" if site else None

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def kind(self) -> str:
        """'placeholder', 'variable', 'constant' or 'op'."""
        return "op" if self.more is None else self.more.get("kind", "op")

    @property
    def inputs(self) -> tuple["Node", ...]:
        h = self.graph.handles
        return tuple([h[i] for i in self.input_ids])

    @property
    def scope(self) -> tuple:
        return self._more("scope")

    @property
    def group(self) -> tuple:
        """The ``fg.composite`` groups this node was built in, outermost first."""
        return self._more("group")

    @property
    def weak(self) -> bool:
        """Whether this is a weakly typed Python-scalar constant (``x * 2``'s ``2``)."""
        return self.more is not None and self.more.get("weak", False)

    @property
    def record(self) -> "NodeRecord":
        """This node's attributes as networkx shows them (a live mapping, made per read)."""
        return NodeRecord(self)

    @property
    def value(self):
        """The current value of a variable or constant."""
        if self.kind not in ("variable", "constant"):
            kind = "an op" if self.kind == "op" else f"a {self.kind}"
            raise AttributeError(f"{self.name} is {kind}: only variables and "
                                 "constants hold a value; use fg.run to compute it")
        return self.more.get("value")

    @value.setter
    def value(self, new):
        if self.kind != "variable":
            raise AttributeError(f"{self.name} is a {self.kind}: only variables can be assigned")
        from .leaves import assigned_value
        self.more["value"] = assigned_value(self, new)

    def __repr__(self) -> str:
        shape = "(" + ", ".join("None" if s is None else str(s) for s in self.shape) + \
            ("," if len(self.shape) == 1 else "") + ")"
        op = self.op.name if self.op is not None else self.kind
        return f"<Node {self.name!r} {op} shape={shape} dtype={self.dtype}>"

    def __iter__(self):
        from .errors import UsageError, located
        raise located(UsageError,
                      "a flowgrad Node is not iterable; index it (x[i]) to build a node")

    def __bool__(self):
        from .errors import UsageError, located
        raise located(UsageError, "a flowgrad Node has no truth value until it is run; "
                                  "use fg.where / fg.maximum to build a branch")

    def _no_value(self, what):
        from .errors import UsageError, located
        raise located(UsageError,
                      f"{what} of node {self.name!r}: a node has no value until it is run; "
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
        from .errors import UsageError, located
        raise located(UsageError,
                      f"node {self.name!r} {sym} a value: == and != compare node identity "
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


# -- the record: networkx's view of a node ------------------------------------------

#: the slot behind each record key that a slot holds
_SLOT_OF = {"op": "op", "attrs": "attrs", "shape": "shape", "dtype": "dtype",
            "inputs": "input_ids", "where": "site"}
#: the keys every record lists, in this order, then whatever else ``more`` holds
KEY_ORDER = ("op", "attrs", "name", "shape", "dtype", "inputs", "kind", "scope", "where")


class NodeRecord(MutableMapping):
    """A node's attributes as a mapping (``g.nx.nodes[i]``, ``node.record``): the nine
    keys of ``KEY_ORDER`` always, then the rare keys the node holds (a leaf's ``value``
    and ``weak``, a composite's ``group``, a user's own). ``value``, ``weak`` and
    ``group`` read as their defaults when absent. Writes go to the node: a slot's key
    (``op``, ``shape`` …) is the node's own field and cannot be written."""

    __slots__ = ("node",)

    def __init__(self, node: Node):
        self.node = node

    def __getitem__(self, key):
        node = self.node
        slot = _SLOT_OF.get(key)
        if slot is not None:
            return getattr(node, slot)
        if key == "name":
            return node.name
        more = node.more
        if more is not None and key in more:
            return more[key]
        if key in MORE_DEFAULTS:
            return MORE_DEFAULTS[key]
        raise KeyError(key)

    def __setitem__(self, key, value):
        if key in _SLOT_OF:
            raise TypeError(f"a node's {key!r} is fixed when it is built")
        if key == "name":   # checked and registered, as node.name = value
            self.node.name = value
        else:
            self.node.set_more(key, value)

    def __delitem__(self, key):
        more = self.node.more
        if key in _SLOT_OF or key == "name" or more is None or key not in more:
            raise KeyError(key)
        del more[key]

    def __iter__(self):
        yield from KEY_ORDER
        more = self.node.more
        if more:
            yield from (k for k in list(more) if k not in KEY_ORDER)

    def __len__(self):
        more = self.node.more
        return len(KEY_ORDER) + (sum(k not in KEY_ORDER for k in more) if more else 0)

    def __contains__(self, key):
        more = self.node.more
        return key in KEY_ORDER or (more is not None and key in more)

    def __repr__(self):
        return repr(dict(self))

    def copy(self) -> dict:   # (networkx's graph.copy() copies attr dicts)
        return dict(self)

    def __reduce__(self):     # copied or pickled: the plain dict it stands for
        return dict, (dict(self),)


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
