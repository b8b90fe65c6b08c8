"""``audit.error(node)`` for a node the audit did not cover is a typed NodeLookupError
(still a KeyError) naming the node and the user's line; a node of another graph whose
id matches an audited node's is refused too (it used to return that other node's
error without a word); something not a node is a UsageError (it was an AttributeError)."""
import inspect

import numpy as np
import pytest

import flowgrad as fg

X = np.array([1e-3, 2e-4, 3e-5])


def _audit():
    with fg.Graph() as g:
        x = fg.placeholder("x", (3,))
        cancel = (1.0 + x) - 1.0
        out = fg.sum(cancel * cancel)
        aside = fg.exp(x)                       # of the graph, not of the audited output
        return g, x, cancel, aside, fg.precision_audit(out, {x: X})


def test_an_audited_node_has_the_closed_form_error():
    _, _, cancel, _, aud = _audit()
    low = (np.float32(1.0) + X.astype(np.float32)) - np.float32(1.0)
    want = np.max(np.abs(low - ((1.0 + X) - 1.0))) / np.max(np.abs((1.0 + X) - 1.0))
    assert aud.error(cancel) == pytest.approx(want, rel=1e-12)


def test_a_node_outside_the_audit_is_a_node_lookup_error_at_the_users_line():
    _, _, _, aside, aud = _audit()
    line = inspect.currentframe().f_lineno + 2
    with pytest.raises(fg.NodeLookupError) as info:
        aud.error(aside)
    err = info.value
    assert isinstance(err, KeyError) and isinstance(err, fg.FlowgradError)
    assert str(err).startswith(f"{aside.name!r} is not part of this audit: it is not an "
                               "ancestor")
    assert str(err).endswith(f"test_audit_lookup.py:{line}")


def test_a_node_of_another_graph_with_an_audited_id_is_refused():
    _, _, cancel, _, aud = _audit()
    with fg.Graph() as other:
        nodes = [fg.placeholder(f"p{k}", (3,)) for k in range(cancel.id + 1)]
    twin = nodes[cancel.id]
    assert twin.id == cancel.id and other is not cancel.graph
    with pytest.raises(fg.NodeLookupError, match="belongs to another graph"):
        aud.error(twin)


@pytest.mark.parametrize("thing", ["x", 3, None])
def test_something_not_a_node_is_a_usage_error(thing):
    _, _, _, _, aud = _audit()
    with pytest.raises(fg.UsageError, match="audit.error takes a node"):
        aud.error(thing)
