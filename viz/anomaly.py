"""``draw(err)`` for a NumericsError: the path from the cause to the culprit, not the graph.

A checked run stops at the culprit, the first node that makes a NaN/±Inf from finite
inputs. What made those inputs bad *for it* lies upstream: the 0 it divides by or takes
the log of, passed down from where it was made; the −inf a constant mask holds, passed on
by the nodes after it. The path is found by walking up from the culprit's suspect inputs
(those that are 0 where the culprit is not finite; else all but its constants), one
breadth-first step at a time (never recursively):

- from a node with a non-finite input, only to its non-finite inputs: the value is
  inherited, so follow it to the node (a constant) that holds it;
- else to its inputs that are 0 wherever it is 0: a zero passed on (mul, sqrt, sum, …);
- constants and bool values end the walk (a literal 0, a comparison: not a cause).

The nodes the explanation names (``Explanation.nodes``: the ``where`` that discards the
value, the ``sqrt`` whose 0 a rule divides by) join the path with the nodes between them
and the culprit. Each drawn node shows its value; the culprit's box gives its op at the
first bad entry in numbers ("at [0]: div(0, 0) = nan"); the explanation is the caption.
"""
from __future__ import annotations

import textwrap
from collections import deque
from dataclasses import dataclass, field

import networkx as nx
import numpy as np

from flowgrad.autodiff import adjoint_mark
from flowgrad.backends import to_numpy
from flowgrad.errors import UsageError

#: the most nodes a drawn path holds (nearest the culprit first)
MAX_NODES = 24
#: the caption's line width, in characters
WIDTH = 72


@dataclass
class AnomalyPath:
    """The trace ``fg.viz.draw(err)`` draws from, the ids of the nodes it draws, the
    captions of their boxes and the caption under the drawing."""
    trace: object
    culprit: object
    ids: set
    captions: dict = field(default_factory=dict)
    title: str = ""

    def nearest(self, allowed, depth=None, max_nodes=None) -> list:
        """The ids of ``allowed`` within ``depth`` edges of the culprit, at most
        ``max_nodes`` of them, nearest first (sorted). The distance is counted along the
        path's own edges, either way (up an input to the cause, down to a user such as
        the ``where`` an explanation names): depth 0 is the culprit alone. Breadth-first,
        never recursive; the culprit is always drawn (when ``allowed`` holds it)."""
        allowed = set(allowed)
        graph = self.trace.graph
        near = {i: set() for i in allowed}          # the path's edges, both ways
        for j in allowed:
            for i in graph.node(j).input_ids:
                if i in allowed and i != j:
                    near[i].add(j)
                    near[j].add(i)
        start = self.culprit.id
        order, seen = [], {start}
        queue = deque([(start, 0)] if start in allowed else [])
        while queue and (max_nodes is None or len(order) < max_nodes):
            nid, d = queue.popleft()
            order.append(nid)
            if depth is None or d < depth:
                for i in sorted(near[nid] - seen):
                    seen.add(i)
                    queue.append((i, d + 1))
        return sorted(order)

    def add_caption(self, dot) -> None:
        """The explanation under the drawing, left-aligned lines."""
        lines = [ln for para in self.title.split("\n")
                 for ln in textwrap.wrap(para, WIDTH) or [""]]
        dot.attr(label="".join(ln.replace("\\", "\\\\") + "\\l" for ln in lines),
                 labelloc="b", labeljust="l", fontsize="11")


def _host(trace, node):
    """The node's value as a host array (a constant's own when the trace lacks it), or
    None when the run did not reach it."""
    if node in trace:
        return np.asarray(to_numpy(trace[node]))
    return np.asarray(node.value) if node.kind == "constant" else None


def _nonfinite(a) -> bool:
    return a is not None and a.dtype.kind in "fc" and not np.isfinite(a).all()


def _zeros(a):
    """Where a numeric value is 0 (None for a bool or absent value: a False is no cause)."""
    if a is None or a.dtype.kind not in "fciu":
        return None
    return a == 0


def _zero_where(inner, mask) -> bool:
    """Whether ``inner`` (an input's zero mask) is 0 at an entry ``mask`` marks; across a
    reduction (shapes that do not broadcast) any 0 counts."""
    if inner is None or not inner.any() or not mask.any():
        return False
    try:
        return bool(np.any(np.broadcast_to(inner, mask.shape) & mask))
    except ValueError:
        return True


def _zero_covers(inner, mask) -> bool:
    """Whether ``inner`` is 0 at every entry ``mask`` marks (across a reduction: any 0)."""
    if inner is None or not inner.any() or not mask.any():
        return False
    try:
        return bool(np.all(np.broadcast_to(inner, mask.shape)[mask]))
    except ValueError:
        return True


def _seeds(trace, culprit) -> list:
    """The culprit's inputs to walk up from: those 0 where it is not finite, else every
    input that is not a constant."""
    value = _host(trace, culprit)
    bad = ~np.isfinite(value) if value is not None and value.dtype.kind in "fc" else None
    inputs = list(dict.fromkeys(culprit.inputs))
    if bad is not None:
        zero = [i for i in inputs if _zero_where(_zeros(_host(trace, i)), bad)]
        if zero:
            return zero
    return [i for i in inputs if i.kind != "constant"]


def _up(trace, node) -> list:
    """The inputs of ``node`` the walk goes on to (see the module's rules)."""
    if node.kind == "constant":
        return []
    inputs = [i for i in dict.fromkeys(node.inputs) if _host(trace, i) is not None]
    bad = [i for i in inputs if _nonfinite(_host(trace, i))]
    if bad:
        return bad
    mask = _zeros(_host(trace, node))
    if mask is None:
        return []
    return [i for i in inputs if i.kind != "constant"
            and _zero_covers(_zeros(_host(trace, i)), mask)]


def _walk(trace, culprit) -> list:
    """Breadth-first up from the seeds, at most ``MAX_NODES`` ids, the culprit first."""
    order, seen = [culprit.id], {culprit.id}
    queue = deque(_seeds(trace, culprit))
    while queue and len(order) < MAX_NODES:
        node = queue.popleft()
        if node.id in seen:
            continue
        seen.add(node.id)
        order.append(node.id)
        queue.extend(i for i in _up(trace, node) if i.id not in seen)
    return order


def _between(graph, a, b) -> set:
    """The ids on directed paths between nodes ``a`` and ``b`` (either way round)."""
    g = graph.nx
    if b.id in nx.descendants(g, a.id):
        return (nx.descendants(g, a.id) & nx.ancestors(g, b.id)) | {a.id, b.id}
    if a.id in nx.descendants(g, b.id):
        return (nx.descendants(g, b.id) & nx.ancestors(g, a.id)) | {a.id, b.id}
    return {a.id}


def _entry_caption(trace, culprit) -> str | None:
    """The culprit's op at its first non-finite entry, in numbers: "at [0]: div(0, 0) =
    nan"; None when an input does not line up entry by entry (a reduction)."""
    from .labels import fmt_number
    value = _host(trace, culprit)
    if value is None or culprit.op is None or value.dtype.kind not in "fc":
        return None
    index = tuple(int(k) for k in np.argwhere(~np.isfinite(value))[0])
    args = []
    for i in culprit.inputs:
        a = _host(trace, i)
        if a is None:
            return None
        try:
            args.append(np.broadcast_to(a, value.shape)[index].item())
        except (ValueError, TypeError):
            return None
    text = ", ".join(fmt_number(v, 6) for v in args)
    where = f"at [{', '.join(map(str, index))}]: " if index else ""
    return f"{where}{culprit.op.name}({text}) = {fmt_number(value[index].item(), 6)}"


def _traced(err):
    """``err``, or the error it was raised from that carries a trace (a NaN found in a
    loop's body is raised again at the loop node, without one); None if none does."""
    for _ in range(32):                   # a chain of causes is short; never loop forever
        if err is None:
            return None
        if getattr(err, "trace", None) is not None and getattr(err, "node", None) is not None:
            return err
        err = err.__cause__
    return None


def anomaly_path(err) -> AnomalyPath:
    """The path ``fg.viz.draw(err)`` draws for a NumericsError from a checked run (for
    one raised at a loop node, the path in the loop's body that its cause carries)."""
    outer, err = err, _traced(err)
    trace, culprit = getattr(err, "trace", None), getattr(err, "node", None)
    if trace is None or culprit is None:
        raise UsageError("fg.viz.draw(err): this NumericsError carries no trace (it was "
                         "raised outside a NaN-checked run, e.g. by an optimizer's finite "
                         "check); run with check_numerics=True or inside fg.detect_anomaly()")
    ids = set(_walk(trace, culprit))
    if err.explanation is None and culprit.op is not None:
        err.explain()      # fills err.explanation (still None when no trap is recognised)
    found = err.explanation
    captions = {}
    for node in (found.nodes if found is not None else ()):
        ids |= _between(trace.graph, node, culprit)
        if node not in trace:
            captions[node] = "not run: the check stopped at the culprit"
    for node in (trace.graph.node(i) for i in ids):
        owner = adjoint_mark(node)           # backward nodes say whose v̄ they build
        if owner is not None and node not in captions:
            captions[node] = f"backward: in v̄ of {trace.graph.node(owner[0]).name!r}"
    entry = _entry_caption(trace, culprit)
    if entry:
        captions[culprit] = " · ".join(filter(None, (captions.get(culprit), entry)))
    title = _title(err, found)
    if outer is not err:
        loop = f" {outer.node.name!r}" if outer.node is not None else ""
        title = f"in the body of the loop{loop}:\n{title}"
    return AnomalyPath(trace, culprit, ids, captions, title)


def _title(err, found) -> str:
    culprit = err.node
    if found is not None:
        return f"likely cause ({found.name}): {found.cause}\nusual fix: {found.fix}"
    if culprit.op is None:
        return f"{culprit.kind} {culprit.name!r} was fed a value holding NaN/Inf"
    return (f"{culprit.name!r} ({culprit.op.name}) made a NaN/Inf from finite inputs; "
            "no known trap recognised")
