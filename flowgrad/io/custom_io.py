"""A custom function in a graph file: ``{"$custom": registered name}`` (issue 21).

A ``custom_call`` node's attribute ``fn`` is a Python function with rules: a file holds
only its registered name (the forward is saved as the ordinary nodes before it).
Loading looks the name up in flowgrad.custom's registry, filled when a module defines
the function with ``@fg.custom_vjp``/``@fg.custom_jvp``, and refuses a name that is not
registered: a graph file never carries code.
"""
from __future__ import annotations

from flowgrad.errors import GraphFileError


def encode(value):
    """``{"$custom": name}`` for a CustomFunction, else None (not ours)."""
    from flowgrad.custom import CustomFunction, registered
    if not isinstance(value, CustomFunction):
        return None
    if registered(value.name) is not value:
        raise GraphFileError(
            f"the custom function {value.name!r} has been redefined under that name since "
            "this graph was built, so loading would find other rules: rebuild the graph, "
            "or give the functions distinct names (custom_vjp(name=...))")
    return {"$custom": value.name}


def decoder(where):
    """The ``$custom`` tag's decoder: the registered function, or a GraphFileError."""
    def decode(name):
        from flowgrad.custom import MAX_NAME, registered
        if not isinstance(name, str) or len(name) > MAX_NAME:
            raise GraphFileError(f"{where}: a malformed custom function name")
        fn = registered(name)
        if fn is None:
            raise GraphFileError(
                f"{where}: the graph calls the custom function {name!r}, which is not "
                "registered here: import the module that defines it (with @fg.custom_vjp / "
                "@fg.custom_jvp) before loading; a graph file never carries code")
        return fn
    return decode
