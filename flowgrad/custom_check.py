"""What ``check_grads`` adds to a failure when the derivative is the user's to define.

A custom function's rule is whatever its author says, and ``stop_gradient`` sets a
derivative to zero on purpose: either makes autodiff disagree with finite differences
of the values. When a check fails, ``explain`` checks each custom function on the path
*alone* — its rule against finite differences of its own forward, at the values its
inputs have at the checked point — and names the ones that disagree; it also names the
``stop_gradient`` nodes that the checked inputs reach.
"""
from __future__ import annotations

import threading

import numpy as np

from .autodiff import ancestors
from .errors import FlowgradError, GradientCheckError

_local = threading.local()   # set while a function is checked alone (no nested notes)


def _reaching(graph, order, wrt_ids):
    """The ids in ``order`` that depend on any of ``wrt_ids``."""
    data = graph.handles
    hit = set(wrt_ids)
    for nid in order:
        if any(i in hit for i in data[nid].input_ids):
            hit.add(nid)
    return hit


def explain(f, wrt, evaluate, order, modes) -> str | None:
    """A note naming the custom functions whose rules disagree with their forward, and
    the stop_gradient nodes on the path; None when there is none (or while nested)."""
    if getattr(_local, "busy", False):
        return None
    from .custom_op import custom_call, function_of
    graph = f.graph
    order_ids = ancestors([f])
    on_path = _reaching(graph, order_ids, {x.id for x in wrt})
    data = graph.handles
    notes = []
    for nid in order_ids:
        op = data[nid].op
        if nid not in on_path or op is None:
            continue
        node = graph.node(nid)
        if op is custom_call:
            text = _check_alone(function_of(node), node, evaluate, order, modes)
            if text:
                notes.append(text)
        elif op.name == "stop_gradient" and data[nid].input_ids[0] in on_path:
            notes.append(f"stop_gradient node {node.name!r} passes no derivative by "
                         "definition, while finite differences see its value change")
    return "\n".join(notes) or None


def _check_alone(fn, node, evaluate, order, modes):
    """The rule of ``fn`` checked against its forward at this node's input values."""
    from . import leaves
    from .graph import Graph
    from .testing import check_grads
    values = [np.asarray(evaluate(x)) for x in node.inputs[1:]]
    _local.busy = True
    try:
        with Graph():
            args, feed = [], {}
            for k, v in enumerate(values):
                if v.dtype.kind == "f":
                    p = leaves.placeholder(f"{fn.label}_input{k}", shape=v.shape,
                                           dtype=np.float64)
                    feed[p] = v.astype(np.float64)
                    args.append(p)
                else:
                    args.append(leaves.constant(v))
            if not feed:
                return None
            check_grads(fn(*args), list(feed), feed, modes=modes, order=order)
    except GradientCheckError as e:
        return (f"the custom_{fn.kind} function {fn.name!r} (rule "
                f"{getattr(fn.rule, '__name__', '?')!r}) disagrees with finite differences "
                f"of its own forward at this point: {e}")
    except FlowgradError:
        return None                      # not checkable alone: say nothing rather than guess
    finally:
        _local.busy = False
    return None


def annotate(error: GradientCheckError, note: str | None) -> GradientCheckError:
    """``error`` with ``note`` appended (the same error when there is no note)."""
    if not note:
        return error
    return GradientCheckError(f"{error}\n{note}")
