"""Layers: callables that build their variables in a name scope the first time they
are called, sized from the input's last dimension, and reuse them afterwards.

    layer = fg.nn.Dense(64, activation=fg.relu, init="he")
    h = layer(x)                 # builds dense/W (64-in × 64) and dense/b, then relu(x W + b)
    layer.variables              # [dense/W, dense/b]
    model = fg.nn.MLP([64, 64, 10], seed=0)   # hidden layers relu (the default), logits out
    logits = model(x)

Every node a layer builds lives in its scope (``dense``, ``dense_1`` …), so a drawing
shows each layer as one cluster, collapsible to one box (``fg.viz.draw(…, collapse=True)``).
"""
from __future__ import annotations

import numpy as np

from ..errors import ArgumentError, GraphError, UsageError
from ..graph import Node
from ..leaves import variable
from ..ops.base import as_node, at_user_line, shape_error
from .. import ops as _ops
from .. import random as _random
from . import init as _init
from .dropout import check_arguments as check_dropout, dropout
from .scopes import in_scope, unique_scope

__all__ = ["Layer", "Dense", "Dropout", "Sequential", "MLP"]

_ACTIVATIONS = ("relu", "sigmoid", "tanh", "softplus", "exp", "softmax", "log_softmax")
#: names that ask for no activation (the identity), the same as ``None``
_LINEAR = ("linear", "identity")


def _activation(fn):
    if fn is None or callable(fn):
        return fn
    if isinstance(fn, str) and fn in _LINEAR:
        return None
    if isinstance(fn, str) and fn in _ACTIVATIONS:
        return getattr(_ops, fn)
    raise ArgumentError(f"activation must be a callable (fg.relu …), None or one of "
                        f"{list(_ACTIVATIONS + _LINEAR)}, got {fn!r}" + at_user_line())


def _fn_name(fn):
    return getattr(fn, "__name__", None) or getattr(fn, "name", None) or repr(fn)


#: public names for the other layer modules (conv, norm …)
resolve_activation, activation_name = _activation, _fn_name


class Layer:
    """Base class: subclasses write ``build(x)`` (make variables with :meth:`add_variable`)
    and ``forward(x)``. Calling the layer builds it once, in its own name scope."""

    default_name = "layer"

    def __init__(self, name=None):
        if name is not None and (not isinstance(name, str) or not name or "/" in name):
            raise ArgumentError(f"a layer name must be a non-empty string without '/', "
                                f"got {name!r}" + at_user_line())
        self.name = name
        self.graph = None
        self.scope = None          # the scope path, a tuple, once built
        self._variables: list[Node] = []
        self._state: list[Node] = []     # state variables (flowgrad/state.py): not trained

    @property
    def built(self) -> bool:
        return self.graph is not None

    @property
    def variables(self) -> list[Node]:
        """The layer's variables (empty until it is first called)."""
        return list(self._variables)

    @property
    def state(self) -> list[Node]:
        """The layer's state variables (BatchNorm's running statistics): written by the
        program runs that use the layer, saved with the variables, never trained."""
        return list(self._state)

    @property
    def n_params(self) -> int:
        return int(sum(np.prod(v.shape, dtype=np.int64) for v in self._variables))

    def add_variable(self, value, name) -> Node:
        v = variable(value, name=name)
        self._variables.append(v)
        return v

    def __call__(self, x):
        x = as_node(x)
        if self.graph is None:
            g = x.graph
            path = unique_scope(g, self.name or self.default_name)
            with in_scope(g, path):
                self.build(x)
            self.graph, self.scope = g, path
        elif x.graph is not self.graph:
            raise GraphError(f"layer {'/'.join(self.scope)!r} was built in {self.graph!r} "
                             f"and cannot be called on a node of {x.graph!r}")
        with in_scope(self.graph, self.scope):
            return self.forward(x)

    def build(self, x):
        """Create the variables, sized from ``x``."""

    def forward(self, x):
        raise NotImplementedError

    def _describe(self) -> str:
        return ""

    def __repr__(self):
        where = "/".join(self.scope) if self.scope else "not built"
        extra = self._describe()
        return (f"<fg.nn.{type(self).__name__}{' ' + extra if extra else ''} ({where}, "
                f"{self.n_params} parameters)>")


class Dense(Layer):
    """``activation(x @ W + b)`` with ``W`` of shape (x.shape[-1], units).

    - ``init``: the weights' initialiser, a name of :mod:`fg.nn.init` ("glorot" —
      the default, glorot_uniform — "he" = he_normal, "he_uniform", "zeros" …) or a
      function ``f(shape, seed=, dtype=)``; ``bias_init`` likewise (default zeros).
    - ``seed``: an int or a ``numpy.random.Generator``; ``None`` uses the graph's seed
      (``fg.random.set_seed``) if it has one, else fresh entropy.
    - ``dtype``: of the variables; default the input's float dtype.
    """

    default_name = "dense"

    def __init__(self, units, activation=None, init="glorot", use_bias=True, name=None, *,
                 bias_init="zeros", seed=None, dtype=None):
        super().__init__(name)
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units < 1:
            raise ArgumentError(f"Dense: units must be a positive int, got {units!r}"
                                + at_user_line())
        self.units = int(units)
        self.activation = _activation(activation)
        self.init, self.bias_init = _init.get(init), _init.get(bias_init)
        self.use_bias = bool(use_bias)
        _init.rng(seed)  # a bad seed fails here, not when the layer is first called
        self.seed, self.dtype = seed, dtype
        self.W = self.b = None

    def build(self, x):
        if not x.shape:
            raise shape_error("Dense", (x,), "the input needs a feature axis (its last)")
        n_in = x.shape[-1]
        if n_in is None:
            raise shape_error("Dense", (x,), "the input's last dimension (its features) "
                                             "must be known when the layer is built")
        dtype = np.dtype(self.dtype) if self.dtype is not None else (
            x.dtype if x.dtype.kind == "f" else np.dtype(np.float64))
        seed = self.seed
        if seed is None:
            seed = _random.derived_seed(x.graph, "init")
        rng = _init.rng(seed)
        self.W = self.add_variable(self.init((n_in, self.units), seed=rng, dtype=dtype), "W")
        if self.use_bias:
            self.b = self.add_variable(self.bias_init((self.units,), seed=rng, dtype=dtype),
                                       "b")

    def forward(self, x):
        z = _ops.linear(x, self.W, self.b)
        return self.activation(z) if self.activation is not None else z

    def _describe(self):
        act = f", {_fn_name(self.activation)}" if self.activation is not None else ""
        return f"{self.units}{act}"


class Dropout(Layer):
    """:func:`fg.nn.dropout` as a layer (no variables): ``Dropout(0.5, training=is_training)``."""

    default_name = "dropout"

    def __init__(self, rate, training=True, seed=None, name=None):
        super().__init__(name)
        check_dropout(rate, training, seed)   # when made, as Dense checks its arguments
        self.rate, self.training, self.seed = rate, training, seed

    def __call__(self, x):
        return dropout(x, self.rate, self.training, seed=self.seed, name=self.name)

    def __repr__(self):
        training = self.training if isinstance(self.training, bool) else self.training.name
        return f"<fg.nn.Dropout rate={self.rate}, training={training}>"


class Sequential(Layer):
    """Apply layers (or any callables of one node: ``fg.relu``) in order.

    Its ``.variables`` are those of its layers. With a ``name`` its layers nest in that
    scope (``encoder/dense`` …); without one they sit in the current scope.
    """

    def __init__(self, layers=(), name=None):
        super().__init__(name)
        self.layers = list(layers)
        for f in self.layers:
            if not callable(f):
                raise UsageError(f"Sequential takes layers or callables, got {f!r}"
                                 + at_user_line())

    def add(self, layer) -> "Sequential":
        if not callable(layer):
            raise UsageError(f"Sequential takes layers or callables, got {layer!r}"
                             + at_user_line())
        self.layers.append(layer)
        return self

    @property
    def variables(self) -> list[Node]:
        out, seen = [], set()
        for f in self.layers:
            for v in getattr(f, "variables", ()):
                if v.id not in seen:
                    seen.add(v.id)
                    out.append(v)
        return out

    @property
    def state(self) -> list[Node]:
        """The state variables of its layers (see Layer.state)."""
        out, seen = [], set()
        for f in self.layers:
            for v in getattr(f, "state", ()):
                if v.id not in seen:
                    seen.add(v.id)
                    out.append(v)
        return out

    @property
    def n_params(self) -> int:
        return int(sum(np.prod(v.shape, dtype=np.int64) for v in self.variables))

    def __call__(self, x):
        x = as_node(x)
        if self.name is None:
            return self.forward(x)
        if self.scope is None:
            self.scope = unique_scope(x.graph, self.name)
            self.graph = x.graph
        with in_scope(x.graph, self.scope):
            return self.forward(x)

    def forward(self, x):
        for f in self.layers:
            x = f(x)
        return x

    def __repr__(self):
        inner = "\n".join("  " + repr(f) if isinstance(f, Layer) else f"  {_fn_name(f)}"
                          for f in self.layers)
        return f"<fg.nn.{type(self).__name__} ({self.n_params} parameters)\n{inner}>"


class MLP(Sequential):
    """Dense layers of the given ``sizes``: ``activation`` after each but the last
    (``output_activation`` after the last, default none: logits).

    Hidden layers default to ``relu``: ``MLP([8, 8, 2])`` is a ReLU network. A linear
    stack (hidden layers without an activation) must be asked for by name:
    ``activation=None``, ``"linear"`` or ``"identity"``.

    ``init`` defaults to "he" for ReLU and "glorot" otherwise; ``dropout`` > 0 inserts
    ``fg.nn.dropout(h, dropout, training)`` after each hidden layer; ``seed`` (an int or
    Generator) makes the initial weights reproducible — one stream for all layers.
    """

    def __init__(self, sizes, activation="relu", output_activation=None, init=None, *,
                 dropout=0.0, training=True, seed=None, use_bias=True, name=None):
        sizes = list(sizes)
        if not sizes:
            raise ArgumentError("MLP needs at least one layer size" + at_user_line())
        act = _activation(activation)
        if init is None:
            init = "he" if act is _ops.relu else "glorot"
        rng = _init.rng(seed) if seed is not None else None
        layers = []
        for k, units in enumerate(sizes):
            last = k == len(sizes) - 1
            layers.append(Dense(units, activation=output_activation if last else act,
                                init=init, use_bias=use_bias, seed=rng))
            if not last and dropout:
                layers.append(Dropout(dropout, training=training))
        super().__init__(layers, name=name)
        self.sizes = sizes
