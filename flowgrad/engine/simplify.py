"""Graph simplification at compile time: the pruned node list in, a smaller plan out.

``Program._sweep`` calls :func:`simplify` with the ids the outputs depend on (ascending
= topological). The graph itself is never changed — graphs only grow,
and the same node may be compiled into many programs — instead each node is
mapped to a *representative* whose value it shares, and only the representatives
that an output still needs become plan steps. One forward pass over the ids maps
them (the scheduler's backward sweep then finds what the outputs need); both are
loops (no recursion), linear in the node count.

The forward pass costs about a microsecond a node, so its driver settles the bulk of
a large graph itself: a node whose inputs are none of constants, known fills or
negations meets no rule but CSE, and so does arithmetic with one plain constant
operand (y·1.0001) and an op of negated inputs that no identity touches (f(−x),
(−a)·b). One dict look-up per op tells the driver which of these cases an op can be
in; every other node goes through the full rule engine (``_Pass._op``), and
``simplify(..., dispatch=False)`` sends every node there (the tests compare both).

Rewrites, each exact up to floating-point rounding (all values are compared by
the tests against the unsimplified program); the identities and negation rewrites are
a table of rules in ``rewrite_rules.py``, which this module's pass drives:

* **common subexpressions** — same op, same (frozen) attributes, same
  representative inputs (in either order for ``add``/``mul``) → one node. Small
  constants with equal value and dtype are merged too (weak Python scalars never
  with arrays: they promote differently).
* **constant folding** — an op whose inputs are all constants is evaluated once,
  here, with numpy (results up to ``FOLD_MAX`` entries; larger ones stay steps so
  a program does not hold big arrays forever). A fold that meets a floating-point
  error (a NaN or ±inf made from finite values, an overflow, an underflow) is not
  made: the op stays a run-time step, so ``check_numerics``, ``fg.detect_anomaly``
  and the caller's ``np.errstate`` see it at its node, with the same values.
* **known fills** — each node may be known to be "every entry equals c" without
  its value being built: constants, ``zeros_like``/``ones_like``, broadcasts and
  reshapes of fills, pointwise ops of fills, and any multilinear op (mul, matmul,
  sum, sum_to, transpose …) with a zero argument. This is how zero adjoints are
  pruned: ``g * 0``, ``sum_to(0)``, ``x + 0`` all disappear.
* **identities** (only when the kept operand already has the result's shape *and*
  dtype, so no broadcast or promotion is lost), exact for every value, −0.0, ±inf
  and NaN included: x·1, 1·x, x/1, x**1, x−(+0.0), x+(−0.0) → x; (−1)·x → −x;
  −(−x) → x. With a condition:

  - x+0, 0+x → x for a +0.0 only where x is never −0.0 (−0.0 + 0.0 is +0.0): x an
    integer, a fill other than −0.0, abs/exp/σ/softplus, or a sum or difference with
    a fill operand that makes −0.0 impossible (``_never_negative_zero``); x−(−0.0)
    likewise; 0−x → −x only for a −0.0 (0.0 − 0.0 is +0.0, −0.0 is not) or integers;
  - **exceptions** (the usual symbolic convention): x−x → 0, 0·x, x·0, 0/x → 0, and
    a multilinear op with a zero argument → 0, whatever x holds (NaN, ±inf, or −0.0
    where x < 0). Such a zero is *signless*: adding it (x + 0) is taken as adding
    nothing, and 0 − x as −x, within the same convention. x + (−x) is x − x after
    the negation is absorbed (below), so it is 0 too.
* **negations absorbed** (exact but for the sign of a zero result: IEEE rounding is
  symmetric under negation): a + (−b) → a − b, a − (−b) → a + b, (−a)(−b) → ab,
  −((−a)·b) → a·b exactly; **exceptions**: −(a − b) → b − a gives +0.0 where the
  program gives −0.0 (a = b), and −((−a) + (−b)) → a + b likewise (a = −b).
  Reverse sweeps make many negations (every ``sub`` and ``neg`` adjoint); tanh's 4th
  derivative loses 6 of 29 steps. A negation of integers is never absorbed: a reader
  may promote it to a float after the negation, where −0 is +0.0 and −INT_MIN has
  wrapped to INT_MIN (``_Pass.absorbable``).
* **stateful ops** (``Op(stateful=True)``: random draws) are exempt from all of the
  above: each is its own step, evaluated once per run, whatever its inputs.

A node known to be a fill and still needed becomes a constant (static shape, at
most ``FOLD_MAX`` entries), an ``xp.full`` step (static shape), or else keeps
its own step. An output whose representative is a leaf gets a copy step, so a
program never hands back the caller's fed array or a variable's storage; an output
that the simplified plan makes a view of a leaf or a constant (``reshape(x * 1.0)``
→ ``reshape(x)``) is listed in ``Simplified.sharers``, and the program copies it;
outputs that view one computed value (``h``, ``h.T``, ``h[1:]``: one entry of
``Simplified.storage_roots``) are copied all but one.
Placeholders and variables stay in the program even if simplification removed
their last use, so the feeds a program requires do not depend on the rewrites.
"""
from __future__ import annotations

import contextlib
import math
import warnings

import numpy as np

from .rewrite_rules import IDENTITIES, NEGATION, RULES, STOP, negative_zero

FOLD_MAX = 1 << 16       # largest constant (entries) folding may create and keep
CONST_KEY_MAX = 1 << 12  # largest constant compared by value for merging / fill detection

_enabled = [True]


@contextlib.contextmanager
def disabled():
    """Compile without simplification inside this block (benchmarks and tests)."""
    _enabled.append(False)
    try:
        yield
    finally:
        _enabled.pop()


def enabled() -> bool:
    return _enabled[-1]


# -- synthetic steps (not graph ops: they exist only in plans) -----------------------

class _Kernel:
    """Just enough of an Op for the scheduler: ``kernel(xp, attrs)``, a name, and
    ``infer`` (the result's shape and dtype: the plan verifier checks it)."""

    ufunc = None   # (as an Op without one: the compiler asks every step's op)

    def __init__(self, name, make, infer):
        self.name, self._make, self.infer = name, make, infer

    def kernel(self, xp, attrs):
        return self._make(xp, **attrs)

    def __repr__(self):
        return f"<plan step {self.name}>"


FULL = _Kernel("full", lambda xp, shape, dtype, value, signless=False:
               lambda: xp.full(shape, value, dtype=dtype),
               lambda shape, dtype, value, signless=False: (tuple(shape), np.dtype(dtype)))
COPY = _Kernel("copy", lambda xp, dtype:   # .copy(): dask's xp.array has no copy=
               lambda v: xp.asarray(v, dtype=dtype).copy(),
               lambda x, dtype: (x.shape, np.dtype(dtype)))


# -- freezing attributes into hashable keys -----------------------------------------

def freeze(value):
    """A hashable key equal only for attribute values that make an op compute the same.

    Types are part of the key (``1``, ``1.0`` and ``True`` hash alike but are not
    interchangeable); floats are keyed by their bit pattern (−0.0 ≠ 0.0, NaN keyed
    consistently); arrays by dtype, shape and bytes up to CONST_KEY_MAX entries,
    beyond that (and for any unknown object) by identity, which never merges wrongly.
    """
    if value is None or value is Ellipsis or isinstance(value, (bool, int, str, bytes)):
        return (type(value).__name__, value)
    if isinstance(value, float):
        return ("float", value.hex() if not math.isnan(value) else "nan")
    if isinstance(value, complex):
        return ("complex", freeze(value.real), freeze(value.imag))
    if isinstance(value, (tuple, list)):
        return (type(value).__name__,) + tuple(freeze(v) for v in value)
    if isinstance(value, slice):
        return ("slice", freeze(value.start), freeze(value.stop), freeze(value.step))
    if isinstance(value, dict):
        return ("dict",) + tuple(sorted((freeze(k), freeze(v)) for k, v in value.items()))
    if isinstance(value, np.dtype):
        return ("dtype", value.str)
    if isinstance(value, (np.ndarray, np.generic)):
        arr = np.asarray(value)
        if arr.dtype != object and arr.size <= CONST_KEY_MAX:
            return ("ndarray", type(value).__name__, arr.dtype.str, arr.shape,
                    np.ascontiguousarray(arr).tobytes())
    return ("id", id(value))


# -- the pass ---------------------------------------------------------------------------

_POINTWISE_EXTRA = {"mul", "neg"}      # pointwise but not flagged ``elementwise``
_FILL_PRESERVING = {"broadcast_to", "broadcast_like", "expand_dims", "squeeze", "reshape",
                    "reshape_like", "transpose", "getitem"}
_COMMUTATIVE = {"add", "mul"}
_MAKES_FILL = {"zeros_like", "ones_like"}


class Simplified:
    """The result: ``rep`` maps each id whose value another id holds to that id (ids
    absent from it are their own representative: ``rep.get(i, i)``); ``consts`` the ids
    whose value is known at compile time; ``steps`` the ops to run, in order, as
    ``(id, op, attrs, input ids)``; ``leaves`` the placeholders and variables.

    ``defs`` holds only the definitions the graph does not already hold: every constant
    ``("const", value)`` and each op step that differs from its graph node (remapped
    inputs, a rewrite, a synthetic step) ``("op", op, attrs, ins)``. A representative
    absent from it is its graph node as is, an op or a leaf (``definition``): a large
    graph that simplifies little then costs nearly nothing here. ``defs``, ``rep`` and
    ``roots`` (the representatives the outputs need) are what the scheduler's own
    liveness sweep reads (flowgrad/engine/program.py); ``consts`` and ``steps`` are derived
    on first use, so a compile that never asks for them does not pay for them."""

    def __init__(self, rep, defs, roots, leaves, data, storage=(frozenset(), {})):
        self.rep, self.defs, self.roots, self.leaves = rep, defs, roots, leaves
        #: output ids whose value, as the plan computes it, may share storage with a
        #: leaf or a constant (``_storage_roots``): the program copies those
        self.sharers = storage[0]
        #: {output id: the representative whose storage its value may view}: outputs
        #: with one root may share memory, so the program copies all but one of them
        self.storage_roots = storage[1]
        self._data = data
        self._emitted = None

    def definition(self, r):
        """Representative ``r``'s definition: ("leaf",) | ("const", v) | ("op", …)."""
        return _definition(self.defs, self._data, r)

    @property
    def consts(self):
        return self._emit()[0]

    @property
    def steps(self):
        return self._emit()[1]

    def _emit(self):
        """(consts, steps) of the representatives the roots reach."""
        if self._emitted is None:
            live = set()
            stack = list(self.roots)
            while stack:
                r = stack.pop()
                if r in live:
                    continue
                live.add(r)
                d = self.definition(r)
                if d[0] == "op":
                    stack.extend(d[3])
            consts, steps = {}, []
            for r in sorted(live):
                d = self.definition(r)
                if d[0] == "const":
                    consts[r] = d[1]
                elif d[0] == "op":
                    steps.append((r, d[1], d[2], d[3]))
            self._emitted = consts, steps
        return self._emitted


def _definition(defs, data, r):
    d = defs.get(r)
    if d is None:        # the graph's own node: an op as built, or a leaf
        nd = data[r]
        op = nd.op
        d = ("op", op, nd.attrs, nd.input_ids) if op is not None \
            else ("leaf",)
    return d


#: ops whose kernel may return a view of (or the very array of) its first input
VIEW_OPS = frozenset({"reshape", "reshape_like", "transpose", "expand_dims", "squeeze",
                      "broadcast_to", "broadcast_like", "getitem", "sum_to", "concat_part",
                      # identities (issue 21): they hand their first input back
                      "stop_gradient", "custom_call", "custom_input", "remat_after",
                      "shaped_like",
                      # numpy hands back views: real/imag of a complex array, and a
                      # one-operand einsum that only permutes ("ij->ji", "ij->ij")
                      "real", "imag", "einsum"})


def storage_root(rep, defs, data, nid):
    """``(root, leaf)``: the representative whose storage node ``nid``'s value may be (a
    view of), found by following ``VIEW_OPS`` to their first input, and whether that
    root is a leaf or a constant (storage the caller or the graph owns) rather than a
    step's own result. Two outputs with one root may share memory."""
    r = rep.get(nid, nid)
    d = _definition(defs, data, r)
    while d[0] == "op" and d[1].name in VIEW_OPS and d[3] and \
            (len(d[3]) == 1 or d[1].name != "einsum"):   # two operands: a new array
        r = rep.get(d[3][0], d[3][0])
        d = _definition(defs, data, r)
    return r, d[0] != "op"


def _storage_roots(rep, defs, data, output_ids):
    """``(sharers, roots)`` read from the simplified plan. ``sharers``: the output ids
    whose value may be (a view of) a placeholder's, a variable's or a constant's
    storage: ``reshape(x * 1.0)`` is ``reshape(x)`` once x·1 → x, so it views the fed x
    although its graph input is a product. ``roots``: {output id: its storage root}
    (``storage_root``), so that outputs viewing one computed value (``h``, ``h.T``,
    ``h[1:]``) are found. The program copies a sharer, and all but one output of each
    root, on each call (flowgrad/engine/program.py): in-place writes to an output never
    reach the caller's array, a variable, a constant that later calls reuse, or another
    output of the same call."""
    sharers, roots = set(), {}
    for o in output_ids:
        r, owned_elsewhere = storage_root(rep, defs, data, o)
        roots[o] = r
        if owned_elsewhere:               # a leaf or a constant
            sharers.add(o)
    return frozenset(sharers), roots


def _uniform(value):
    """c if every entry of the (small) constant equals c, else None."""
    if isinstance(value, (bool, int, float, complex)):
        return value if value == value else None
    arr = np.asarray(value)
    if arr.size == 0 or arr.size > CONST_KEY_MAX or arr.dtype.kind not in "biufc":
        return None
    first = arr.flat[0]
    if first != first or not np.all(arr == first):
        return None
    if first == 0 and arr.dtype.kind in "fc" and not _one_zero_sign(arr):
        return None   # −0.0 == +0.0, but x + [−0.0, +0.0] is not x: its sign is kept
    return first.item()


def _one_zero_sign(arr) -> bool:
    """Whether the zeros of a float or complex constant all carry the same signs."""
    parts = (arr.real, arr.imag) if arr.dtype.kind == "c" else (arr,)
    return all(bool(np.all(np.signbit(p) == np.signbit(p.flat[0]))) for p in parts)


def cse_key(ins, comm, top):
    """The CSE table key of an op node's (representative) input ids, its attrs aside:
    one id, the id itself; two, one negative int packing both (``top``: one past every
    id, so the packing is one-to-one; sorted for a commutative op); any other number,
    the tuple (sorted if commutative). The encodings never meet (one id ≥ 0, a pair
    < 0, ints never equal tuples). An int key costs a fraction of a tuple's to hash and
    compare in tables of 10^6 entries: simplify of the 10^6-node chain's gradient went
    from 1.56 to 1.08 s. ``_Pass._forward`` computes the same keys inline."""
    n = len(ins)
    if n == 1:
        return ins[0]
    if n == 2:
        a, b = ins
        if comm and b < a:
            a, b = b, a
        return -1 - (a * top + b)
    return tuple(sorted(ins)) if comm else ins


def _static(shape):
    return None not in shape


def simplify(graph, order, output_ids, keep_all=False, dispatch=True) -> Simplified:
    """Map the pruned, ascending ``order`` to a smaller plan (see the module docstring).

    ``dispatch=False`` sends every op node through the full rule engine (``_Pass._op``)
    instead of the driver's shortcuts; the result is the same (the tests check it)."""
    data = graph.handles
    if not enabled():
        defs, leaves = {}, []      # every op and leaf is its graph node as is
        for nid in order:
            d = data[nid]
            kind = d.kind
            if kind == "constant":
                defs[nid] = ("const", d.value)
            elif kind in ("placeholder", "variable"):
                leaves.append(nid)
        roots = list(output_ids) + (list(order) if keep_all else [])
        return Simplified({}, defs, roots, leaves, data,
                          _storage_roots({}, defs, data, output_ids))
    return _Pass(data).run(order, output_ids, keep_all, dispatch)


class _Pass:
    def __init__(self, data):
        self.data = data
        self.rep = {}        # id -> representative id, only where they differ
        # representative id -> ("const", v) | ("op", op, attrs, ins): only constants and
        # ops that differ from their graph node (the rest: _definition)
        self.defs = {}
        self.fill = {}       # representative id -> c (every entry equals c)
        self.table = {}      # constant's key -> representative id
        # op -> {CSE key: representative id}: cse_key of the (representative) inputs,
        # and (that key, frozen attrs) for an op with attrs
        self.tables = {}
        self.top = len(data)   # one past every id this pass meets (cse_key's packing)
        self.neg_of = {}     # representative of −a -> a
        self.signless = set()  # zero fills of the symbolic rules (_set_fill)
        self.special = set()  # representatives that are constants or known fills

    # helpers
    def _def(self, r):
        return _definition(self.defs, self.data, r)

    def _define(self, nid, op, attrs, ins):
        """nid is its own representative, computed as op(attrs)(ins): stored only when
        that is not its graph node as is."""
        d = self.data[nid]
        if op is not d.op or attrs is not d.attrs \
                or ins != d.input_ids:
            self.defs[nid] = ("op", op, attrs, ins)

    def _meta(self, nid):
        d = self.data[nid]
        return d.shape, d.dtype

    def fits(self, a, nid):
        """Whether representative ``a`` can stand for ``nid`` as is (same shape, dtype)."""
        return self._meta(a) == self._meta(nid)

    def _const_key(self, value, weak):
        if weak:
            return ("weak", freeze(value))
        arr = np.asarray(value)
        if arr.size > CONST_KEY_MAX:
            return None
        return ("const", freeze(arr))

    def _set_const(self, nid, value, weak, signless=False):
        key = self._const_key(value, weak)
        if signless and key is not None:
            key = ("signless", key)   # merged with symbolic zeros only, never with a
            #                           constant zero of the user's (that one is exact)
        if key is not None and key in self.table:
            self.rep[nid] = self.table[key]
            return
        if key is not None:
            self.table[key] = nid
        self.defs[nid] = ("const", value)
        self.special.add(nid)
        c = _uniform(value)
        if c is not None:
            self.fill[nid] = c

    def _set_op(self, nid, op, attrs, ins):
        key = cse_key(ins, op.name in _COMMUTATIVE, self.top)
        if attrs:
            key = (key, freeze(attrs))     # as in _forward
        table = self.tables.get(op)
        if table is None:
            table = self.tables[op] = {}
        hit = table.get(key)
        if hit is not None and self.fits(hit, nid):
            self.rep[nid] = hit
            return
        table[key] = nid
        self._define(nid, op, attrs, ins)
        if op.name == "neg" and self.absorbable(nid):
            self.neg_of[nid] = ins[0]
            self.special.add(nid)          # its readers take the slow path: neg rewrites

    def _set_fill(self, nid, c, fallback, signless=False):
        """nid's entries all equal c: a constant, an xp.full step, or its own step.
        ``signless``: a zero of the symbolic rules (x·0, x − x, 0/x), whose sign the
        rule does not know (x·0 is −0.0 for x < 0): adding it is taken as adding
        nothing, within the same convention."""
        shape, dtype = self._meta(nid)
        c = np.asarray(c, dtype=dtype).item()
        signless = signless and c == 0
        if _static(shape) and math.prod(shape) <= FOLD_MAX:
            self._set_const(nid, _readonly(np.full(shape, c, dtype=dtype)), False, signless)
        elif _static(shape):
            attrs = {"shape": shape, "dtype": dtype, "value": c}
            if signless:               # (a CSE key of its own, as for constants)
                attrs["signless"] = True
            self._set_op(nid, FULL, attrs, ())
        else:
            self._set_op(nid, *fallback)
        r = self.rep.get(nid, nid)
        self.fill.setdefault(r, c)
        self.special.add(r)
        if signless:
            self.signless.add(r)

    # the forward pass
    def run(self, order, output_ids, keep_all, dispatch=True):
        """The forward pass (``_forward``), then the outputs' copies and the roots."""
        leaves = []
        self._forward(order, dispatch, leaves)
        self._copy_leaf_outputs(output_ids)
        rep_get, data = self.rep.get, self.data
        roots = [rep_get(o, o) for o in output_ids]
        if keep_all:
            roots += [rep_get(nid, nid) for nid in order]
        return Simplified(self.rep, self.defs, roots, leaves, data,
                          _storage_roots(self.rep, self.defs, data, output_ids))

    def _forward(self, order, dispatch, leaves):
        """Settles here, with one key, the nodes that meet no rule but CSE (inputs none
        of constants, fills or negations; one plain constant operand, ``_plain_fill``;
        negated inputs no identity touches, ``_NEG_RULES``: per op from the rule table,
        ``_flags``); every other node goes to ``_op``, the full rule engine."""
        data, rep, special, top = self.data, self.rep, self.special, self.top
        rep_get = rep.get
        ops = {}          # op -> _flags(op): its flags and its CSE table
        nones = [(), (None,), (None, None)]
        frozen = {}       # id(attrs) -> freeze(attrs): the graph's attrs dicts outlive the pass
        scaling = {}      # special id -> a fill c ∉ {0, 1, −1}? (_plain_fill; see there)
        weak = {}         # id(float) -> its constant key: the node holds the float meanwhile
        for nid in order:
            d = data[nid]
            op = d.op
            if op is None:             # a leaf (placeholder, variable, constant)
                self._leaf(nid, d, leaves, weak)
                continue
            inputs = d.input_ids
            flags = ops.get(op) or ops.setdefault(op, self._flags(op, dispatch))
            cse, comm, arith, ident, rules, table = flags
            n = len(inputs)
            if n == 2:         # (the graph's own tuple when nothing was remapped)
                a, b = inputs
                a, b = rep_get(a, a), rep_get(b, b)
                ins = inputs if a == inputs[0] and b == inputs[1] else (a, b)
                sa, sb = a in special, b in special
                plain = not (sa or sb) or self._binary_plain(flags, a, b, sa, sb, ins, scaling)
                key = -1 - (b * top + a) if comm and b < a else -1 - (a * top + b)  # cse_key
            elif n == 1:
                a = rep_get(inputs[0], inputs[0])
                ins = inputs if a == inputs[0] else (a,)
                plain = a not in special or (       # f(−x), f no negation: CSE only too
                    cse and rules == 0 and a in self.neg_of and self._no_fill_no_const(ins))
                key = a                                                        # cse_key
            else:
                ins = tuple([rep_get(i, i) for i in inputs])
                plain = special.isdisjoint(ins)
                key = tuple(sorted(ins)) if comm else ins
            attrs = d.attrs
            if cse and plain:  # as _op → _set_op would conclude: only CSE applies
                if attrs:
                    key = (key, frozen.get(id(attrs)) or
                           frozen.setdefault(id(attrs), freeze(attrs)))
                hit = table.setdefault(key, nid)
                if hit == nid:
                    if ins is not inputs:    # else the graph's node says it all
                        self.defs[nid] = ("op", op, attrs, ins)
                    continue
                dh = data[hit]
                if dh.shape == d.shape and dh.dtype == d.dtype:
                    rep[nid] = hit          # a common subexpression
                    continue
            elif ident and n < 3 and self._no_fill_no_const(ins):
                # a negation, or inputs special only as negations: nothing folds or
                # fills, so of all the rules only the identities can apply (as in _op)
                self._identities_only(nid, d, op, attrs, ins, inputs, key, rules, table,
                                      nones[n])
                continue
            self._op(nid, op, attrs, ins)

    def _flags(self, op, dispatch):
        """(CSE here?, commutative?, arithmetic?, identities here?, which identities a
        negated input may meet: _NEG_RULES, the op's CSE table), from the rule table."""
        name = op.name
        return (dispatch and name not in _SLOW_NAMES and not op.stateful,
                name in _COMMUTATIVE, name in _ARITH,
                dispatch and name not in _MAKES_FILL and not op.stateful,
                _NEG_RULES.get(name, 0), self.tables.setdefault(op, {}))

    def _binary_plain(self, flags, a, b, sa, sb, ins, scaling):
        """Whether a binary op with a special input meets no rule but CSE: one operand a
        plain constant (y·1.0001), or special only as negations no identity touches."""
        cse, comm, arith, ident, rules, table = flags
        neg_of = self.neg_of
        plain = False
        if arith and sa != sb:
            # one operand a plain constant (y·1.0001)? asked once per constant
            c = a if sa else b
            plain = scaling.get(c)
            if plain is None:
                plain = scaling[c] = self._plain_fill(c)
            plain = plain and c not in neg_of
        if not plain and cse and rules != 1 and \
                (not sa or (a in neg_of and self._no_fill_no_const(ins[:1]))) \
                and (not sb or (b in neg_of and self._no_fill_no_const(ins[1:]))):
            # special only as negations: no fold, no fill, and no identity
            # unless it is (−a')(−b') → a'b'
            plain = rules == 0 or not (sa and sb)
        return plain

    def _identities_only(self, nid, d, op, attrs, ins, inputs, key, rules, table, fills):
        """A node whose inputs are special only as negations: a new negation −x that no
        rewrite absorbs is settled here (as _set_op makes it), the rest by the rules."""
        a = ins[0] if ins else None
        if rules == 3 and not attrs and a not in self.neg_of and self.negate(a) is None \
                and self.absorbable(nid):
            hit = table.setdefault(key, nid)
            if hit == nid:
                if ins is not inputs:
                    self.defs[nid] = ("op", op, attrs, ins)
                self.neg_of[nid] = a
                self.special.add(nid)
                return
            dh = self.data[hit]
            if dh.shape == d.shape and dh.dtype == d.dtype:
                self.rep[nid] = hit
                return
        self._by_identity(nid, op, attrs, ins, fills)

    def _leaf(self, nid, d, leaves, weak):
        """A placeholder or variable (kept), or a constant (merged with an equal one)."""
        kind = d.kind
        if kind in ("placeholder", "variable"):
            leaves.append(nid)
        elif kind == "constant":
            value = d.value
            if type(value) is float and d.weak:   # y * 1.0001: mostly a repeat
                key = weak.get(id(value))            # (one float object, many nodes)
                if key is None:
                    key = weak[id(value)] = self._const_key(value, True)
                hit = self.table.get(key)
                if hit is not None:
                    self.rep[nid] = hit
                    return
            self._set_const(nid, value, d.weak)
        else:
            raise ValueError(f"node {nid}: unknown kind {kind!r}")

    def _copy_leaf_outputs(self, output_ids):
        """Never hand back a fed array or a variable's storage: an output whose
        representative is a leaf gets a copy step."""
        rep, data = self.rep, self.data
        for o in output_ids:
            r = rep.get(o, o)
            if r != o and self._def(r)[0] == "leaf":
                del rep[o]
                self.defs[o] = ("op", COPY, {"dtype": data[o].dtype}, (r,))

    def _plain_fill(self, c):
        """Whether special id ``c`` is a fill c ∉ {0, 1, −1}: if it is no negation either,
        binary arithmetic of it and a non-special operand (y·1.0001, 0.1·x, x + 0.5) meets
        no rule but CSE — as _op would conclude: the other input is neither constant,
        fill nor negation, so nothing folds or fills, and every identity of an _ARITH op
        (derived from RULES) needs a 0, 1 or −1 or a negation. The driver remembers the
        answer per id: a fill is never undone, so a True stays true; a False may go
        stale only towards the rule engine, which then concludes the same."""
        v = self.fill.get(c)
        return v is not None and v not in (0, 1, -1)

    def _op(self, nid, op, attrs, ins):
        defs, fill = self.defs, self.fill
        if op.stateful:
            # a random draw: its own step, never folded, merged, nor known to be a fill
            self._define(nid, op, attrs, ins)
            return
        name = op.name
        if self.special.isdisjoint(ins) and name not in _SLOW_NAMES:
            # the common case, no input a constant, a known fill or a negation, and no
            # rule of the op's that needs none (the table's "any"): only CSE applies
            return self._set_op(nid, op, attrs, ins)
        fallback = (op, attrs, ins)
        if name not in _MAKES_FILL and self._no_fill_no_const(ins):
            # inputs special only as negations (reverse sweeps make many): nothing folds
            # or fills below, so of all the rules only the identities can apply
            return self._by_identity(nid, op, attrs, ins, [None] * len(ins))
        fills = [fill.get(i) for i in ins]
        if name == "zeros_like":
            return self._set_fill(nid, 0, fallback)
        if name == "ones_like":
            return self._set_fill(nid, 1, fallback)
        n_fills = len(fills) - fills.count(None)
        if ins and all([i in defs and defs[i][0] == "const" for i in ins]) and \
                self._fold(nid, op, attrs, ins):
            return
        if ins and n_fills == len(ins) and \
                (getattr(op, "elementwise", False) or name in _POINTWISE_EXTRA):
            c = self._eval_fill(nid, op, attrs, ins, fills)
            if c is not None:
                return self._set_fill(nid, c, fallback,
                                      signless=not self.signless.isdisjoint(ins))
        if fills and fills[0] is not None and name in _FILL_PRESERVING and \
                (name != "getitem" or len(ins) == 1):
            # (a getitem with node indices keeps its step: its bounds check is the
            # run-time IndexError, which a fill of the same value would drop)
            return self._set_fill(nid, fills[0], fallback, signless=ins[0] in self.signless)
        if n_fills and getattr(op, "multilinear", False) and 0 in fills:
            return self._set_fill(nid, 0, fallback, signless=True)
        return self._by_identity(nid, op, attrs, ins, fills)

    def _no_fill_no_const(self, ins):
        fill, defs = self.fill, self.defs
        for i in ins:
            if i in fill or (i in defs and defs[i][0] == "const"):
                return False
        return True

    def _by_identity(self, nid, op, attrs, ins, fills):
        """The identities and negation rewrites (``_identity``), else the op as is."""
        name = op.name
        alias = self._identity(nid, name, ins, fills)
        if alias is not None:
            if isinstance(alias, tuple):        # a rewrite to another op: its rules too
                self._op(nid, *alias)            # (each rewrite removes a negation: ends)
                r = self.rep.get(nid, nid)
                # still −x: readers may absorb it. Neither end already a negation, so
                # the map stays acyclic and rewrites through it terminate.
                if name == "neg" and r not in self.neg_of and ins[0] not in self.neg_of \
                        and r != ins[0] and self.fits(ins[0], r) and self.absorbable(r):
                    self.neg_of[r] = ins[0]
                    self.special.add(r)
                return
            if alias == "zero":
                return self._set_fill(nid, 0, (op, attrs, ins), signless=True)
            self.rep[nid] = alias
            return
        self._set_op(nid, op, attrs, ins)

    def _identity(self, nid, name, ins, fills):
        """An equivalent: a representative id, "zero", or an (op, attrs, ins) rewrite:
        the first of the op's rules (``IDENTITIES``) that gives one, in table order."""
        rules = IDENTITIES.get(name)
        if rules is None:
            return None
        if name == NEGATION:
            a, b, fa, fb = ins[0], None, fills[0], None
        elif len(ins) == 2:
            (a, b), (fa, fb) = ins, fills
        else:
            return None
        for rule in rules:
            got = rule.apply(self, nid, a, b, fa, fb)
            if got is not None:
                return None if got is STOP else got
        return None

    def integral(self, nid):
        """Whether ``nid``'s dtype has no −0 (integers, bools)."""
        return np.dtype(self._meta(nid)[1]).kind in "iub"

    def unsigned(self, nid):
        """Whether ``nid``'s dtype is an unsigned integer."""
        return np.dtype(self._meta(nid)[1]).kind == "u"

    def absorbable(self, nid):
        """Whether negation ``nid`` may be absorbed by its readers (a + (−b) → a − b …):
        not for integers, which a reader may promote to floats after the negation: the
        int −0 is +0.0 there (a − 0.0 keeps −0.0, a + (−0) does not) and −INT_MIN wraps
        to INT_MIN (a + (−b) is then a − 2³¹ where a − b is a + 2³¹)."""
        return not self.integral(nid)

    def adds_nothing(self, nid, z, zero, x):
        """Whether x + ``zero`` (the value of zero fill ``z``) is x for every value x may
        take: always for −0.0 and for integers; for +0.0 only where x is never −0.0
        (−0.0 + 0.0 = +0.0), or where ``z`` is a symbolic zero (``signless``)."""
        return negative_zero(zero) or self.integral(nid) or z in self.signless or \
            self._nevernegative_zero(x)

    def _nevernegative_zero(self, x):
        """Whether representative ``x`` is known never to hold −0.0 (one look, no walk):
        a fill other than −0.0, or an op whose results never are."""
        c = self.fill.get(x)
        if c is not None:
            return not negative_zero(c)
        d = self._def(x)
        if d[0] != "op":
            return False
        name = d[1].name
        if name in _NO_NEGATIVE_ZERO:
            return True
        if name in ("add", "sub") and len(d[3]) == 2:
            # a + b is −0.0 only when a and b both are; a − b only when a is −0.0, b +0.0
            fa, fb = (self.fill.get(i) for i in d[3])
            if name == "sub":
                fb = None if fb is None else -fb
            return any(f is not None and not negative_zero(f) for f in (fa, fb))
        return False

    def negate(self, x):
        """−x as an op on x's own inputs when that needs no new node, else None:
        −(a − b) → b − a, −((−a') + (−b')) → a' + b', −((−a')·b) → a'·b, −(a·(−b')) → a·b'.
        Each is exact in IEEE arithmetic (rounding is symmetric under negation; only
        the sign of a zero result may differ)."""
        d = self._def(x)
        if d[0] != "op" or len(d[3]) != 2 or d[2]:
            return None
        neg_of, name, (a, b) = self.neg_of, d[1].name, d[3]
        if name == "sub":
            return (d[1], {}, (b, a))
        if name == "add" and a in neg_of and b in neg_of:
            return (d[1], {}, (neg_of[a], neg_of[b]))
        if name == "mul" and a in neg_of:
            return (d[1], {}, (neg_of[a], b))
        if name == "mul" and b in neg_of:
            return (d[1], {}, (a, neg_of[b]))
        return None

    def _fold(self, nid, op, attrs, ins):
        shape, dtype = self._meta(nid)
        if not _static(shape) or math.prod(shape) > FOLD_MAX:
            return False
        try:
            # a floating-point error (a NaN or ±inf made from finite values, an
            # overflow, an underflow) leaves the step to run time, where check_numerics,
            # the user's errstate and fg.detect_anomaly see it at its node
            with np.errstate(all="raise"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                value = op.forward(np, *(self.defs[i][1] for i in ins), **attrs)
            value = np.asarray(value)
            if value.shape != tuple(shape):
                return False
            value = _readonly(value.astype(dtype, copy=True))
        except Exception:  # an op that cannot run on host numpy is simply not folded
            return False
        self._set_const(nid, value, False)
        return True

    def _eval_fill(self, nid, op, attrs, ins, fills):
        """The value c of every entry of ``nid`` = op(fills), or None. A weak Python
        number is passed as one (NEP 50: a float32 fill · 2.345 is float32 arithmetic,
        2.345 rounded first; a 0-d float64 array would make it float64 arithmetic
        rounded once), every other fill as a 0-d array of its dtype; a result of
        another dtype than the node's (an int8 fill + 300: numpy refuses) is no fill."""
        data = self.data
        try:
            with np.errstate(all="raise"):   # an error: no fill (see _fold)
                args = [c if data[i].weak else np.asarray(c, dtype=self._meta(i)[1])
                        for i, c in zip(ins, fills)]
                out = np.asarray(op.forward(np, *args, **attrs))
            if out.size != 1 or out.dtype != self._meta(nid)[1]:
                return None
            return out.item()
        except Exception:
            return None


#: ops none of whose results is −0.0 (abs(−0.0) = +0.0; exp, σ and softplus are > 0 or NaN)
_NO_NEGATIVE_ZERO = frozenset({"abs", "exp", "sigmoid", "softplus"})


def _readonly(arr):
    arr.setflags(write=False)
    return arr


# -- the driver's shortcuts, derived from the table ---------------------------------------
#: ops the driver sends to the rule engine whatever their inputs: they make a fill, or
#: have a rule that needs no special input
_SLOW_NAMES = _MAKES_FILL | {r.op for r in RULES if r.needs == "any"}
#: binary ops whose every fill rule tests 0, 1 or −1: with one plain constant operand
#: (y·1.0001) and no other special input they meet no rule but CSE (_plain_fill)
_ARITH = {op for op, rules in IDENTITIES.items()
          if op != NEGATION and op not in _SLOW_NAMES
          and all(set(r.fills) <= {0, 1, -1} for r in rules)}
#: the rules an op may meet when its inputs are special only as negations: 1 one negated
#: input rewrites (a ± (−b)), 2 only both negated ((−a)(−b)), 3 the negation itself
#: (−(−x), −(a − b) …); absent: none, so the driver settles it by CSE alone
_NEG_RULES = {op: 3 if op == NEGATION else 1 if any(r.needs == "neg" for r in rules) else 2
              for op, rules in IDENTITIES.items()
              if any(r.needs in ("neg", "negs") for r in rules)}
