"""Declared state: variables a program writes once per successful run (batch norm's
running mean and variance).

A *state variable* is an ``fg.variable`` node marked here (:func:`state_variable`): the
graph holds its value, a call reads it (or a feed overrides it) and ``save_variables``
/ ``load_variables`` store it as they store any variable; but it is not trainable, so a
layer lists it in ``layer.state``, never in ``layer.variables``, and an optimizer
refuses it. Its new value is a node of the graph, declared with :func:`declare_update`
together with the nodes that *trigger* it (batch norm: the batch mean it reads):

- a ``Program`` whose outputs depend on a trigger also computes the update's value,
  as one more (hidden) output of the same run (:func:`updates_for`, at compile);
- after a call that succeeded, every such value is assigned to its state variable at
  once (:class:`Pending`: checked first, then written; an exception while writing puts
  the old values back). Such calls of one graph's programs run one at a time (a lock
  per graph, held from reading the state to writing it), so no thread's update is
  lost. A call that raises (a bad feed, a failing kernel) writes nothing; so does a
  trace, ``values()``, ``profile``, ``run_bound`` and ``fg.check_grads``;
- ``opt.step`` writes a step's updates inside its own commit, with its variables, the
  optimizer's state and its iteration count (``prog.call_pending``, then the
  Pending's ``prepare``/``write``/``undo``): a step refused by the non-finite check
  writes no state, and one interrupted anywhere in its commit (Ctrl-C) writes none
  of them. fit's validation never writes state, and an L-BFGS iteration writes the
  updates of its first evaluation only (the line search's are dropped).

An update's value is an ordinary node, never an ancestor of the outputs: the gradient
does not contain it, and the layer reads state through ``stop_gradient`` so that no
derivative flows into it either. A program that would write one state variable twice
(the same batch-norm layer called on two inputs that one program computes) is refused
at compile with a ``UsageError``: which value would win is not defined.

The tables live here, per graph (a side table owned by this module). Graph files
(flowgrad/io/graphfile.py) save the marks and the declared updates and restore them;
ONNX export writes a state variable as an initializer (its value), not its update.
"""
from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

from .errors import GraphError, UsageError
from .graph import Node
from .leaves import check_variable_value, variable

__all__ = ["Update", "Pending", "state_variable", "mark_state", "is_state",
           "declare_update", "declared", "updates_for", "Committing", "commit_lock",
           "undo_fully", "store_values", "assign_together"]


@dataclass(frozen=True, eq=False)
class Update:
    """One declared write: ``state`` takes the value of ``value`` after a run of a
    program that computes any node of ``triggers`` (node ids). Compared by identity
    (``eq=False``: comparing its nodes would build graph nodes, not answer)."""

    state: Node
    value: Node
    triggers: tuple


class _Table:
    """A graph's state variables (ids) and declared updates, by trigger id."""

    __slots__ = ("states", "by_trigger", "lock")

    def __init__(self):
        self.states: set[int] = set()
        self.by_trigger: dict[int, list[Update]] = {}
        # held by a committing call from reading the state to writing it (reentrant: a
        # commit inside it takes it again), so that two threads' runs never both read
        # the old value and one update is lost
        self.lock = threading.RLock()


# {graph: _Table}: owned by this module, not attributes set on Graph
_TABLES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_TABLES_LOCK = threading.Lock()


def _table(graph, create=False):
    table = _TABLES.get(graph)
    if table is None and create:
        with _TABLES_LOCK:
            table = _TABLES.setdefault(graph, _Table())
    return table


def state_variable(value, name: str) -> Node:
    """A variable of the current graph, marked as state: written by declared updates,
    saved with the variables, never trained (optimizers refuse it)."""
    return mark_state(variable(value, name=name))


def mark_state(node: Node) -> Node:
    """Mark the variable ``node`` as state (state_variable does; so does a graph file's
    loader, for the variables it rebuilt). Returns it."""
    if not isinstance(node, Node) or node.kind != "variable":
        raise UsageError(f"only a variable can be state, not {node!r}")
    _table(node.graph, create=True).states.add(node.id)
    return node


def declared(graph) -> tuple:
    """``(state ids, updates)`` of ``graph``: its state variables' ids, ascending, and
    its declared updates ordered by their value's id (for graph files)."""
    table = _table(graph)
    if table is None:
        return (), ()
    with table.lock:
        updates = {id(u): u for ups in table.by_trigger.values() for u in ups}
    return tuple(sorted(table.states)), tuple(sorted(updates.values(),
                                                     key=lambda u: u.value.id))


def is_state(node) -> bool:
    """Whether ``node`` is a state variable."""
    if not isinstance(node, Node):
        return False
    table = _table(node.graph)
    return table is not None and node.id in table.states


def declare_update(state: Node, value: Node, triggers) -> Update:
    """Declare that ``state`` takes ``value`` after each run of a program that computes
    a node of ``triggers`` (a node or a list of nodes). ``value`` must have the state's
    shape and dtype, and every node must belong to the state's graph."""
    if not is_state(state):
        raise UsageError(f"declare_update: {state!r} is not a state variable "
                         f"(make it with flowgrad.state.state_variable)")
    triggers = [triggers] if isinstance(triggers, Node) else list(triggers)
    if not triggers or not all(isinstance(t, Node) for t in [value, *triggers]):
        raise UsageError("declare_update: value and triggers must be nodes "
                         "(at least one trigger)")
    for n in (value, *triggers):
        if n.graph is not state.graph:
            raise GraphError(f"declare_update: {n.name!r} belongs to {n.graph!r}, the state "
                             f"{state.name!r} to {state.graph!r}")
    if value.shape != state.shape or value.dtype != state.dtype:
        raise UsageError(f"declare_update: the new value of {state.name!r} must have shape "
                         f"{state.shape} and dtype {state.dtype}; {value.name!r} has "
                         f"{value.shape} and {value.dtype}")
    update = Update(state, value, tuple(t.id for t in triggers))
    table = _table(state.graph)
    with table.lock:
        for t in update.triggers:
            table.by_trigger.setdefault(t, []).append(update)
    return update


def updates_for(outputs) -> tuple:
    """The declared updates a program of ``outputs`` (nodes of one graph) applies: those
    with a trigger among the nodes the outputs depend on, or among those the updates
    found so far depend on (a fixed point, iterative). Empty (at once) for a graph with
    no declared update. Two updates of one state variable are a UsageError."""
    graph = outputs[0].graph
    table = _table(graph)
    if table is None or not table.by_trigger:
        return ()
    found, roots = {}, [o.id for o in outputs]
    while True:
        reached = set(graph.ancestors(roots))
        new = {id(u): u for t, ups in list(table.by_trigger.items()) if t in reached
               for u in ups if id(u) not in found}    # (one entry per update)
        if not new:
            break
        found.update(new)
        roots = roots + [u.value.id for u in new.values()]
    updates = sorted(found.values(), key=lambda u: u.value.id)   # a stable order
    seen = {}
    for u in updates:
        other = seen.setdefault(u.state.id, u)
        if other is not u:
            raise UsageError(
                f"this program would write state {u.state.name!r} twice in one run (from "
                f"{other.value.name!r} and {u.value.name!r}: a layer with state called on "
                f"two inputs the program computes); compile the two separately")
    return tuple(updates)


class Pending:
    """The new values of one run's updates, not written yet. ``commit()`` writes them
    all or none: ``prepare()`` checks every value (shape, dtype) and reads the old ones,
    then ``write()`` swaps the new references in, and an exception while writing
    (Ctrl-C included) has ``undo()`` swap the old ones back. An optimizer calls the
    three itself, inside its own commit, so that a step's variables and its state are
    written together (flowgrad/training/optim.py); it holds :func:`commit_lock` from
    the run to the write, as ``Committing`` does."""

    __slots__ = ("updates", "values", "dicts", "new", "old")

    def __init__(self, updates, values):
        self.updates, self.values = updates, values
        self.dicts = self.new = self.old = None

    def prepare(self) -> None:
        """Check the new values and read the old ones; writes nothing. After it,
        ``write`` and ``undo`` only store references (no check, no copy)."""
        states = [u.state for u in self.updates]
        self.new = [check_variable_value(s, v) for s, v in zip(states, self.values)]
        # a leaf's value lives in its ``more`` dict (flowgrad/node.py), as the
        # optimizers write it
        self.dicts = [s.more for s in states]
        self.old = [d["value"] for d in self.dicts]

    def write(self) -> None:
        """Store every new value (after ``prepare``)."""
        store_values(self.dicts, self.new)

    def undo(self) -> None:
        """Store every old value back (after ``prepare``; harmless where ``write``
        had not come yet)."""
        store_values(self.dicts, self.old)

    def commit(self) -> None:
        with _table(self.updates[0].state.graph).lock:
            self.prepare()
            try:
                self.write()
            except BaseException:
                undo_fully(self.undo)
                raise


def store_values(dicts, values) -> None:
    """Store each value as its leaf's value (``dicts``: the leaves' ``more`` dicts,
    where flowgrad/node.py keeps a leaf's value): references only, nothing checked."""
    for d, v in zip(dicts, values):
        d["value"] = v


def assign_together(variables, values) -> None:
    """Assign ``values`` to the variables ``variables``, all or none: every value is
    checked first (as ``variable.value = …`` checks it), then the references are
    stored; an exception while storing (Ctrl-C) puts every old value back. For writes
    that belong together: a checkpoint's values, an epoch's weights and statistics."""
    variables, values = list(variables), list(values)
    if len(variables) != len(values):
        raise UsageError(f"{len(variables)} variables but {len(values)} values to assign")
    for v in variables:
        if not isinstance(v, Node) or v.kind != "variable":
            raise UsageError(f"only variables can be assigned, not {v!r}")
    checked = [check_variable_value(v, x) for v, x in zip(variables, values)]
    dicts = [v.more for v in variables]
    old = [d["value"] for d in dicts]
    try:
        store_values(dicts, checked)
    except BaseException:
        undo_fully(store_values, dicts, old)
        raise


def undo_fully(undo, *args, tries=64) -> None:
    """Call ``undo(*args)``, a commit's restoring writes (stores of references that may
    run again), until it completes: an interruption landing inside it (a second
    Ctrl-C) starts it over, rather than leave the commit half undone. Called in the
    commit's ``except`` block, which then re-raises its own exception; after ``tries``
    failed attempts the last one's exception propagates."""
    for _ in range(tries - 1):
        try:
            undo(*args)
            return
        except BaseException:
            pass
    undo(*args)


def commit_lock(graph):
    """The lock a committing run of ``graph``'s programs holds from reading the state to
    writing it (reentrant); None for a graph without state."""
    table = _table(graph)
    return None if table is None else table.lock


class Committing:
    """A stateful program's entry (its generated call or its reference call), which
    hands back the run's outputs and the updates' values after them: called, it
    commits the updates and returns the outputs as the program's call does;
    ``pending(args, kwargs)`` returns ``(outputs, Pending)`` and writes nothing."""

    __slots__ = ("inner", "updates", "n", "single", "lock")

    def __init__(self, prog, inner):
        self.inner, self.updates = inner, prog.state_updates
        self.n, self.single = len(prog.outputs), prog.single
        self.lock = _table(prog.graph).lock

    def pending(self, args, kwargs):
        outs = self.inner(args, kwargs)
        n = self.n
        result = outs[0] if self.single else outs[:n]
        return result, Pending(self.updates, outs[n:])

    def __call__(self, args, kwargs):
        with self.lock:       # the graph's committing calls run one at a time
            result, pending = self.pending(args, kwargs)
            pending.commit()
        return result
