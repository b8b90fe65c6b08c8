"""Recurrent layers: RNN, LSTM and GRU, batch first, each one ``fg.scan`` node.

    lstm = fg.nn.LSTM(32)                     # variables lstm/W (D, 128), lstm/U (32, 128), lstm/b
    x = fg.placeholder("x", (None, None, 8))  # (batch, time, features); time may be run-time
    h = lstm(x)                               # the last hidden state, (batch, 32)
    hs = fg.nn.GRU(16, return_sequences=True)(x)   # every step's hidden state, (batch, T, 16)

The input projection ``x W + b`` of every step is one matrix product before the loop;
the loop's step reads only the recurrent weight ``U``. The step is traced once, so a
compiled program serves every sequence length, and its gradient is a scan backwards
through time (see docs/howto-loops.md). A sequence of no steps (T = 0) runs the loop
zero times, as ``fg.scan`` does: the result is the initial state (zeros when none is
given), with ``return_sequences`` an empty (N, 0, H); ``torch.nn.RNN`` refuses T = 0.

The formulas are PyTorch's (``torch.nn.RNN``, ``LSTM``, ``GRU``), with weights stored
transposed (``x W``, not ``W x``) and gates side by side in PyTorch's order, so that
weights load from and compare to PyTorch's:

======  ============================================  ===========================================
RNN     h' = act(x W + b + h U)                       W = weight_ih_l0ᵀ, U = weight_hh_l0ᵀ,
                                                      b = bias_ih_l0 + bias_hh_l0
LSTM    i, f, g, o = σ, σ, tanh, σ of x W + b + h U   as RNN; W (D, 4H), U (H, 4H), b (4H,)
        c' = f c + i g,  h' = o tanh(c')
GRU     r, z = σ(x W_rz + b[0]_rz + h U_rz + b[1]_rz)  W (D, 3H), U (H, 3H),
        n = tanh(x W_n + b[0]_n + r (h U_n + b[1]_n))  b (2, 3H) = stack(bias_ih_l0, bias_hh_l0)
        h' = (1 − z) n + z h
======  ============================================  ===========================================

The GRU keeps both biases (row 0 the input bias, row 1 the recurrent bias), since the
recurrent bias of ``n`` sits inside ``r (…)`` and cannot be folded into the input bias.
"""
from __future__ import annotations

import numbers

import numpy as np

from ..errors import ArgumentError, UsageError
from ..loops.build import scan
from ..ops.base import as_node, at_user_line, shape_error
from .. import ops as _ops
from .. import random as _random
from . import init as _init
from .layers import Layer, activation_name, resolve_activation

__all__ = ["RNN", "LSTM", "GRU", "orthogonal"]


def orthogonal(shape, seed=None, dtype="float64"):
    """A matrix with orthonormal rows or columns (whichever are fewer), from the QR
    factors of a normal draw with the signs of R's diagonal made positive (so the
    draw is uniform over such matrices). The default for the recurrent weight ``U``."""
    shape = tuple(int(s) for s in ((shape,) if isinstance(shape, numbers.Integral) else shape))
    if len(shape) < 2:
        raise ArgumentError(f"orthogonal needs a shape of 2 or more axes, got {shape}"
                            + at_user_line())
    rows, cols = shape[0], int(np.prod(shape[1:]))
    a = _init.rng(seed).standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    d = np.sign(np.diag(r))
    q = q * np.where(d == 0, 1.0, d)
    if rows < cols:
        q = q.T
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise UsageError(f"random initial values are floats, not {dtype}" + at_user_line())
    return np.ascontiguousarray(q.reshape(shape), dtype=dtype)


def _get_init(init):
    return orthogonal if init == "orthogonal" else _init.get(init)


class _Recurrent(Layer):
    """What RNN, LSTM and GRU share: the variables W (D, k·H), U (H, k·H) and b, the
    input checks, the initial state and the scan over time."""

    gates = 1                        # k: how many blocks of H columns W and U hold

    def __init__(self, units, return_sequences=False, name=None, *, init="glorot",
                 recurrent_init="orthogonal", bias_init="zeros", seed=None, dtype=None):
        super().__init__(name)
        if isinstance(units, bool) or not isinstance(units, numbers.Integral) or units < 1:
            raise ArgumentError(f"{type(self).__name__}: units must be a positive int, "
                                f"got {units!r}" + at_user_line())
        self.units, self.return_sequences = int(units), bool(return_sequences)
        self.init, self.bias_init = _get_init(init), _get_init(bias_init)
        self.recurrent_init = _get_init(recurrent_init)
        _init.rng(seed)   # a bad seed fails here, not when the layer is first called
        self.seed, self.dtype = seed, dtype
        self.W = self.U = self.b = None
        self._state_given = None

    # -- calling ---------------------------------------------------------------------------

    def __call__(self, x, initial_state=None):
        """``layer(x)`` or ``layer(x, initial_state)``: x (N, T, D); the state is h (N, H)
        (an LSTM's the pair (h, c)), zeros when not given."""
        self._state_given = initial_state
        try:
            return super().__call__(x)
        finally:
            self._state_given = None

    def _label(self):
        where = "/".join(self.scope) if self.scope else (self.name or self.default_name)
        return f"{type(self).__name__} {where!r}"

    def _check_input(self, x):
        if len(x.shape) != 3:
            raise shape_error(self._label(), (x,), f"the input must be 3-d (batch, time, "
                                                   f"features), got {len(x.shape)}-d")
        if x.shape[2] is None:
            raise shape_error(self._label(), (x,), "the input's features (its last axis) "
                                                   "must be known")
        if self.W is not None and x.shape[2] != self.W.shape[0]:
            raise shape_error(self._label(), (x,), f"the layer was built for "
                                                   f"{self.W.shape[0]} features, the input "
                                                   f"has {x.shape[2]}")

    def build(self, x):
        self._check_input(x)
        dtype = np.dtype(self.dtype) if self.dtype is not None else (
            x.dtype if x.dtype.kind == "f" else np.dtype(np.float64))
        seed = self.seed if self.seed is not None else _random.derived_seed(x.graph, "init")
        rng = _init.rng(seed)
        H, k = self.units, self.gates
        self.W = self.add_variable(self.init((x.shape[2], k * H), seed=rng, dtype=dtype), "W")
        self.U = self.add_variable(self.recurrent_init((H, k * H), seed=rng, dtype=dtype), "U")
        self.b = self.add_variable(self._initial_bias(rng, dtype), "b")

    def _initial_bias(self, rng, dtype):
        return self.bias_init((self.gates * self.units,), seed=rng, dtype=dtype)

    def forward(self, x):
        self._check_input(x)
        xw = self._project(x)                                  # (N, T, k·H)
        state = self._initial_state(xw)
        step = self._step if self.return_sequences else (
            lambda carry, xw_t: (self._step(carry, xw_t)[0], None))   # stack no outputs
        final, hs = scan(step, state, _ops.transpose(xw, (1, 0, 2)))
        if self.return_sequences:
            return _ops.transpose(hs, (1, 0, 2))               # (N, T, H)
        return final[0] if isinstance(final, tuple) else final

    def _project(self, x):
        return _ops.linear(x, self.W, self.b)

    # -- the initial state -----------------------------------------------------------------

    def _zeros(self, xw):
        """(N, H) zeros of the carry's dtype; N read from the input at run time. The sum
        over time keeps it defined for a sequence of no steps."""
        n1 = _ops.zeros_like(_ops.sum(xw[:, :, :1], axis=1))          # (N, 1)
        return n1 + np.zeros(self.units, dtype=xw.dtype)

    def _state_node(self, s, xw, what):
        s = as_node(s, xw.graph)
        if len(s.shape) != 2 or s.shape[1] != self.units:
            raise shape_error(self._label(), (s,), f"the initial {what} must be "
                                                   f"(batch, {self.units})")
        if s.dtype != xw.dtype:
            raise shape_error(self._label(), (s,), f"the initial {what} must be "
                                                   f"{xw.dtype}, not {s.dtype}")
        return s

    def _initial_state(self, xw):
        if self._state_given is None:
            return self._zeros(xw)
        return self._state_node(self._state_given, xw, "state")

    def _split(self, z):
        H = self.units
        return [z[:, j * H:(j + 1) * H] for j in range(self.gates)]

    def _describe(self):
        return f"{self.units}{', sequences' if self.return_sequences else ''}"


class RNN(_Recurrent):
    """An Elman RNN, ``h' = activation(x W + b + h U)`` (as ``torch.nn.RNN``), over
    x (N, T, D): the last h (N, H), or every step's (N, T, H) with ``return_sequences``.

    - ``units``: H. ``activation``: "tanh" (the default), "relu" or a callable.
    - ``init`` (W, default "glorot"), ``recurrent_init`` (U, default "orthogonal"),
      ``bias_init`` (b, default "zeros"): names of :mod:`fg.nn.init` or functions
      ``f(shape, seed=, dtype=)``. ``seed``, ``dtype``: as :class:`Dense`.
    - Call it as ``rnn(x)`` or ``rnn(x, h0)`` with h0 (N, H).
    """

    default_name = "rnn"

    def __init__(self, units, activation="tanh", return_sequences=False, name=None, **kw):
        super().__init__(units, return_sequences, name, **kw)
        self.activation = resolve_activation(activation)

    def _step(self, h, xw):
        z = xw + h @ self.U
        h = self.activation(z) if self.activation is not None else z
        return h, h

    def _describe(self):
        act = f", {activation_name(self.activation)}" if self.activation is not None else ""
        return super()._describe() + act


class LSTM(_Recurrent):
    """A long short-term memory layer as ``torch.nn.LSTM``: gates i, f, g, o side by
    side in W (D, 4H), U (H, 4H), b (4H,)::

        i, f, g, o = σ(·), σ(·), tanh(·), σ(·) of the blocks of x W + b + h U
        c' = f c + i g,   h' = o tanh(c')

    Torch's weights load as W = weight_ih_l0ᵀ, U = weight_hh_l0ᵀ, b = bias_ih_l0 +
    bias_hh_l0. ``unit_forget_bias`` (default True) starts the forget gate's bias at 1
    (the rest of b from ``bias_init``), so that the cell remembers at first. Call it as
    ``lstm(x)`` or ``lstm(x, (h0, c0))``. Other arguments: as :class:`RNN`.
    """

    default_name = "lstm"
    gates = 4

    def __init__(self, units, return_sequences=False, name=None, *, unit_forget_bias=True,
                 **kw):
        super().__init__(units, return_sequences, name, **kw)
        self.unit_forget_bias = bool(unit_forget_bias)

    def _initial_bias(self, rng, dtype):
        b = super()._initial_bias(rng, dtype)
        if self.unit_forget_bias:
            b[self.units:2 * self.units] = 1
        return b

    def _initial_state(self, xw):
        given = self._state_given
        if given is None:
            zeros = self._zeros(xw)
            return zeros, zeros
        if not isinstance(given, (tuple, list)) or len(given) != 2:
            raise UsageError(f"{self._label()}: the initial state is a pair (h0, c0), got "
                             f"{type(given).__name__}" + at_user_line())
        return (self._state_node(given[0], xw, "h"), self._state_node(given[1], xw, "c"))

    def _step(self, state, xw):
        h, c = state
        i, f, g, o = self._split(xw + h @ self.U)
        c = _ops.sigmoid(f) * c + _ops.sigmoid(i) * _ops.tanh(g)
        h = _ops.sigmoid(o) * _ops.tanh(c)
        return (h, c), h


class GRU(_Recurrent):
    """A gated recurrent unit as ``torch.nn.GRU``: gates r, z, n side by side in
    W (D, 3H) and U (H, 3H); b (2, 3H) holds the input bias (row 0) and the recurrent
    bias (row 1)::

        r, z = σ(x W + b[0] + h U + b[1]) in the first two blocks
        n = tanh(x W_n + b[0]_n + r (h U_n + b[1]_n))
        h' = (1 − z) n + z h

    The recurrent bias of n is multiplied by r, so it stays a bias of its own: torch's
    weights load as W = weight_ih_l0ᵀ, U = weight_hh_l0ᵀ, b = stack(bias_ih_l0,
    bias_hh_l0), exactly. Call it as ``gru(x)`` or ``gru(x, h0)``. Other arguments: as
    :class:`RNN`.
    """

    default_name = "gru"
    gates = 3

    def _initial_bias(self, rng, dtype):
        return self.bias_init((2, self.gates * self.units), seed=rng, dtype=dtype)

    def _project(self, x):
        return _ops.linear(x, self.W, self.b[0])

    def _step(self, h, xw):
        xr, xz, xn = self._split(xw)
        hr, hz, hn = self._split(h @ self.U + self.b[1])
        r = _ops.sigmoid(xr + hr)
        z = _ops.sigmoid(xz + hz)
        n = _ops.tanh(xn + r * hn)
        h = n + z * (h - n)
        return h, h
