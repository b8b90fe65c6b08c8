"""apply's shortcut for a repeated user instruction (ops/base.py ``_LAST_USER_CALL``) gives
every node the line that built it: two lines alternating in a loop, one helper called
from two lines, the same line in two threads, and a node built by flowgrad's own code
between user calls."""
from __future__ import annotations

import sys
import threading

import flowgrad as fg


def _line(g, node):
    return g.site_of(node.id)[1]


def test_alternating_lines_in_a_loop():
    with fg.Graph() as g:
        y = fg.placeholder("y")
        a_line = sys._getframe().f_lineno + 3
        made = []
        for _ in range(5):
            a = fg.sin(y)
            b = fg.cos(a)
            made.append((a, b))
    for a, b in made:
        assert _line(g, a) == a_line and _line(g, b) == a_line + 1


def _helper(x):
    return fg.exp(x)   # a node built here names this line (flowgrad reports the innermost user frame)


def test_a_helper_called_from_two_lines_names_the_helpers_line_each_time():
    with fg.Graph() as g:
        x = fg.placeholder("x")
        first = _helper(x)
        second = _helper(first)
        third = fg.tanh(second)
    helper_line = _helper.__code__.co_firstlineno + 1
    assert _line(g, first) == helper_line and _line(g, second) == helper_line
    assert _line(g, third) == sys._getframe().f_lineno - 3


def test_flowgrad_built_nodes_between_user_calls():
    with fg.Graph() as g:
        x = fg.placeholder("x")
        here = sys._getframe().f_lineno
        y = fg.sin(x)                     # here + 1
        d = fg.grad(y, x)                 # here + 2: the gradient's nodes name this line
        z = fg.sin(d)                     # here + 3
    assert _line(g, y) == here + 1 and _line(g, d) == here + 2 and _line(g, z) == here + 3


def test_threads_building_from_their_own_lines():
    lines = {}
    errors = []

    def build(tag):
        try:
            with fg.Graph() as g:
                x = fg.placeholder("x")
                got = []
                for _ in range(2000):
                    x = fg.sin(x)
                    got.append(x)
            lines[tag] = {_line(g, n) for n in got}
        except Exception as exc:   # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=build, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    want = build.__code__.co_firstlineno + 6
    assert all(found == {want} for found in lines.values()) and len(lines) == 4
