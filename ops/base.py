"""The op contract and registry, and ``apply``, which turns a call into a node.

An op is a primitive: it knows how to compute (``forward``), how to infer its
output's shape and dtype when the node is built (``infer``), and how to carry
derivatives: one reverse rule (vjp) and one forward rule (jvp) per argument.

Rules receive *node handles* and return nodes built from flowgrad ops, so every
derivative is itself part of the graph and can be differentiated again. A vjp
rule has the flat signature of autograd: ``rule(g, ans, *inputs, **attrs)``
where ``g`` is the output's adjoint and ``ans`` the output node (reuse it
rather than recomputing the forward value). A jvp rule has the same form with
the input's tangent in place of ``g``. Rules never think about broadcasting:
the sweeps sum a contribution back to its input's shape (``sum_to_like``) or
broadcast a tangent to the output's shape, in one place.

Every node records the user's line that built it (``site_of``). A rule written in this
package must build only from ops and never call user code: the derivative sweeps give
the nodes such a rule builds their own site without walking frames (``plain_rule``,
``site_fixed_above``), while every other rule (a custom rule, a loop's, a user's ``Op``)
runs through ``walking_sites``, so that its nodes name the user's lines.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import os
import sys

import numpy as np

from flowgrad.engine.lazy_errors import lazy_backend
from flowgrad.errors import ArgumentError, DifferentiationError, ShapeError, UsageError
from flowgrad.graph import Node, default_graph, same_graph, sharing_graph, thread_state
from flowgrad.leaves import constant_in

REGISTRY: dict[str, "Op"] = {}

#: None, or ``hook(args)`` -> args with nodes of enclosing graphs replaced by the traced
#: loop body's placeholders for them (or None: no body is being traced). Set by
#: flowgrad/loops/body.py; apply asks it only when its arguments mix graphs.
CAPTURE_HOOK = None

NONDIFF = None  # a rule slot meaning "this argument's derivative is zero by definition"


class Op:
    """A primitive operation. See the module docstring for the rule signatures.

    ``vjp``/``jvp`` are tuples with one rule (or ``NONDIFF``) per argument, or, for
    ops with any number of arguments, one callable ``rule(argnum, g, ans, *inputs, **attrs)``.
    ``multilinear=True`` says the op is linear in each argument separately (sum,
    transpose, mul, matmul …): its jvp rules are derived, ``op(…, tangent, …)``.
    ``elementwise=True`` says each vjp rule is ``g * ∂out/∂in`` entrywise: the jvp
    rules are then the same functions with the tangent in place of ``g``.

    An op is also a function to its users: ``help(fg.relu)`` and
    ``inspect.signature(fg.sigmoid)`` show the call signature (the forward's, without
    ``xp``) and the docstring, which states the derivative. The forward's parameters
    are the inputs, one per rule, then the attributes (keyword-only after ``*xs``);
    apply binds a keyword naming an input as that input (``fg.exp(x=w)``).

    ``decompose`` (None, or a function of the same inputs and attrs) builds the same
    value out of other primitive ops: the fused model ops (linear, mse, l2 …) have
    one, for consumers that lack the fused op (an exporter) and to check the kernel.

    ``stateful=True`` says two calls may return different values (random draws): the
    simplifier never folds such a node, nor merges two of them as common subexpressions.

    ``floating=True`` says the op is a float function of its first argument, whose
    ``infer`` declares ``float_dtype(x)``: an int or bool x is cast to that dtype
    (float64) before the forward runs (``computes_in_float``), so every backend and
    path computes in the declared dtype, not numpy's smallest float for the int
    (int8 → float16, int16 → float32).

    ``ufunc`` (a name, or None) says the forward of a float or complex input is
    exactly ``xp.<ufunc>(x)``: a plan whose every step of the op reads such an input
    (``Plan.direct_ufuncs``) runs the backend's function itself, without the Python
    frames of the int cast (``kernel(..., direct=True)``).
    """

    #: Optional, for ops with many arguments (concatenate): ``vjp_all(needed, g, ans,
    #: *inputs, **attrs)`` returns every argument's reverse term (None where not
    #: ``needed[k]``) and ``jvp_all(tangents, ans, *inputs, **attrs)`` the whole tangent
    #: (``tangents[k]`` None where an input has none), each from one call, so that the
    #: sweeps build O(N) nodes for N arguments, not N rules that each see all N inputs.
    vjp_all = None
    jvp_all = None
    #: Optional, for an op whose value holds several results, each selected by a node of
    #: an op with ``reads_results = True`` taking it as argument 0 and, as arguments
    #: 1…, what the derivatives flow to (a loop and its ``loop_out`` nodes: the loop's
    #: own inputs). The reverse sweep hands no such result's adjoint to the result's own
    #: rules: it gathers the adjoints of the results reading the same arguments and,
    #: once past them all, calls ``vjp_results(needed, cotangents, node, *arguments,
    #: **node's attrs)`` once (``cotangents``: {result node: its adjoint}), which
    #: returns every argument's term as ``vjp_all`` does. So one rule sees the sum of
    #: every contribution to every result (a loop's one backward pass, not one a result).
    vjp_results = None
    reads_results = False
    decompose = None
    #: Optional: ``check_attrs(*inputs, **attrs)`` raises a FlowgradError for attribute
    #: values the op's builder would refuse (a stride of 0, a pool size of True, a ddof of
    #: −1), given the input nodes. ``load_graph`` calls it on every record of the op, so an
    #: attribute the public function refuses is a GraphFileError naming the node at load
    #: time, never a failure (or a different answer) when the program runs.
    check_attrs = None
    ufunc = None
    #: ``runs_programs = True`` says the op's forward compiles and runs programs of its
    #: own (a loop's bodies): its kernel is then made with the keyword ``options=``, the
    #: enclosing program's ``engine.plan.ProgramOptions`` (``Plan.options``), so that
    #: those programs are compiled as the program that runs them was (codegen, verify).
    runs_programs = False

    def __init__(self, name, forward, infer, vjp=(), jvp=None, *, variadic=False,
                 multilinear=False, elementwise=False, operator=None, doc="",
                 stateful=False, floating=False, ufunc=None):
        if name in REGISTRY:
            raise ArgumentError(f"op {name!r} is registered twice")
        self.name = name
        self.forward = computes_in_float(forward) if floating else forward
        self.ufunc = ufunc
        self.infer = infer
        self.variadic = variadic
        self._vjp = vjp
        #: the reverse rules, one per argument, when given as a tuple (else None: one
        #: callable for every argument, see vjp_rule); the reverse sweep reads an entry
        #: straight from here per node, and asks vjp_rule only for the other cases
        self.vjp_rules = vjp if type(vjp) is tuple else None
        self._jvp = jvp
        self.multilinear = multilinear
        self.elementwise = elementwise
        self.stateful = stateful
        # A C-level callable of the values alone (operator.add …): the scheduler calls it
        # directly, skipping a Python frame per step, on any eager backend's arrays (a
        # lazy backend's get the forward: dask's ``**`` refuses an exponent numpy
        # refuses with a TypeError of its own, where the forward gives numpy's error).
        self.operator = operator
        self.__doc__ = doc or forward.__doc__
        _function_like(self, forward)
        #: what a keyword given to apply may name: ``input_names`` (in the forward's order)
        #: are bound as inputs, ``attr_names`` (a frozenset, so that apply tests a call's
        #: keywords with one subset test) are attributes; ``any_attrs``: the forward takes
        #: ``**attrs``, or its parameters are unknown, so any other keyword is an attribute
        self.input_names, self.attr_names, self.any_attrs = _call_parameters(
            self.__signature__, variadic, vjp, jvp)
        REGISTRY[name] = self

    def __repr__(self):
        return f"<Op {self.name}>"

    # __call__ is ``apply`` itself (set below it).

    def __get__(self, obj, objtype=None):
        # Never binds (as numpy's ufuncs and builtins: ``act = fg.tanh`` on a class stays
        # tanh), but being a descriptor makes ``inspect``/``help`` treat an op as a routine.
        return self

    def kernel(self, xp, attrs, direct=False):
        """The callable the scheduler runs: values in, value out. ``direct``: every step
        it serves reads a float or complex input (``Plan.direct_ufuncs``), so an op with
        a ``ufunc`` runs the backend's own function, a C-level call."""
        if not attrs and lazy_backend(xp) is None:
            if self.operator is not None:
                return self.operator
            if direct and self.ufunc is not None:
                return getattr(xp, self.ufunc)
        if attrs:
            return functools.partial(self.forward, xp, **attrs)
        # one partial per (op, backend), shared by every step of that op (10^6 steps of
        # sin held 10^6 identical partials, 128 bytes each)
        kernels = self.__dict__.setdefault("_kernels", {})
        k = kernels.get(xp)
        if k is None:
            k = kernels[xp] = functools.partial(self.forward, xp)
        return k

    # -- rules -------------------------------------------------------------------
    def _rule(self, table, argnum, kind):
        if callable(table):
            return functools.partial(table, argnum)
        if argnum < len(table):
            rule = table[argnum]
            if rule is NONDIFF or callable(rule):
                return rule
        raise DifferentiationError(
            f"op {self.name!r} has no {kind} rule for argument {argnum}")

    def vjp_rule(self, argnum):
        """The reverse rule for one argument; None if that derivative is zero by definition."""
        return self._rule(self._vjp, argnum, "reverse-mode (vjp)")

    def jvp_rule(self, argnum):
        """The forward rule for one argument; None if that derivative is zero by definition."""
        if self._jvp is not None:
            return self._rule(self._jvp, argnum, "forward-mode (jvp)")
        if self.multilinear:
            return functools.partial(_multilinear_jvp, self, argnum)
        if self.elementwise:
            return self.vjp_rule(argnum)
        raise DifferentiationError(f"op {self.name!r} has no forward-mode (jvp) rule "
                                   f"for argument {argnum}")


def _function_like(op, forward):
    """Give ``op`` the metadata of a function: the forward's signature without ``xp``."""
    op.__name__ = op.__qualname__ = op.name
    op.__module__ = getattr(forward, "__module__", __name__)
    try:
        signature = inspect.signature(forward)
        op.__signature__ = signature.replace(
            parameters=list(signature.parameters.values())[1:])
    except (TypeError, ValueError):   # a builtin without a signature
        op.__signature__ = None


def _call_parameters(signature, variadic, vjp, jvp):
    """(input names, attribute names, any_attrs) of an op with the call ``signature``.

    The forward's parameters list the inputs first and then the attributes, without
    marking where one ends: a forward with ``*xs`` has its attributes keyword-only,
    and otherwise the op's inputs are as many as its rules (a tuple holds one rule or
    NONDIFF per argument). Where neither tells (callable rules, no signature), every
    named parameter may be given as an attribute, as before."""
    if signature is None:
        return (), frozenset(), True
    params = list(signature.parameters.values())
    any_attrs = any(p.kind is p.VAR_KEYWORD for p in params)
    named = [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    star = [k for k, p in enumerate(params) if p.kind is p.VAR_POSITIONAL]
    if star:
        n_inputs = star[0]
    else:
        n_inputs = max([len(rules) for rules in (vjp, jvp) if type(rules) is tuple] or [0])
        if not n_inputs or variadic:
            return (), frozenset(named), any_attrs
    inputs = tuple(named[:n_inputs])
    return inputs, frozenset(named[n_inputs:]), any_attrs


def _multilinear_jvp(op, argnum, tangent, ans, *inputs, **attrs):
    args = list(inputs)
    args[argnum] = tangent
    return apply(op, *args, **attrs)


# -- building nodes ----------------------------------------------------------------

def as_node(value, graph=None) -> Node:
    """A node for ``value``: nodes pass through, scalars and arrays become constants."""
    if isinstance(value, Node):
        return value
    return constant_in(graph if graph is not None else default_graph(), value)


def _general_args(op, args, attrs):
    """apply's arguments outside its common cases: (a folded constant or None, the
    input nodes, their graph). Scalars and arrays become constants; nodes of another
    graph are captured by a loop body being traced, or refused."""
    graph = None
    all_nodes = True
    for a in args:
        if isinstance(a, Node):
            if graph is None:
                graph = a.graph
            elif a.graph is not graph:
                # A loop body being traced may read nodes of the graphs around it (an
                # RNN's weights): flowgrad/loops/body.py swaps them for placeholders
                # of the body's graph, which become the loop node's inputs.
                captured = CAPTURE_HOOK(args) if CAPTURE_HOOK is not None else None
                if captured is not None:
                    return apply(op, *captured, **attrs), None, None
                same_graph(a for a in args if isinstance(a, Node))   # raises, naming both
        else:
            all_nodes = False
    if graph is None:
        graph = default_graph()
    inputs = args if all_nodes else tuple(
        [a if isinstance(a, Node) else constant_in(graph, a) for a in args])
    if inputs and all(_weak(n) for n in inputs):
        # Arithmetic on Python scalars only (``p - 1`` in a rule) folds at once and
        # stays weakly typed, so it never promotes a float32 operand.
        value = op.forward(np, *(n.value for n in inputs), **attrs)
        if np.ndim(value) == 0:   # (expand_dims of a scalar is not a scalar: a node)
            return constant_in(graph, value.item() if hasattr(value, "item") else value), \
                None, None
    if len(inputs) == 1 and not attrs and sharing_graph() is graph:
        twin = graph.unary_twin(op, inputs[0])   # a sweep's cos(x): the forward's own
        if twin is not None:
            return twin, None, None
    return None, inputs, graph


def _bind_keywords(op, args, attrs):
    """``(args, attrs)`` with the keywords that name ``op``'s inputs moved into ``args``,
    bound as Python binds a call (``fg.exp(x=w)`` is ``fg.exp(w)``): an input given both
    by position and by keyword, a required input left out, or a keyword that is neither
    an input nor an attribute of the op is a UsageError."""
    names = op.input_names
    bound = list(args) + [_MISSING] * (len(names) - len(args))
    rest = {}
    for key, value in attrs.items():
        if key in op.attr_names:
            rest[key] = value
        elif key in names:
            k = names.index(key)
            if k < len(args):
                raise _call_error(op, f"got input {key!r} both by position and by keyword")
            bound[k] = value
        elif op.any_attrs:
            rest[key] = value
        else:
            raise _call_error(op, f"got an unexpected keyword argument {key!r}: it is "
                                  f"neither an input nor an attribute of {op.name}")
    if len(args) >= len(names):   # no input was named (an unknown op's attributes)
        return args, rest
    defaults = [op.__signature__.parameters[name].default for name in names]
    missing = [name for name, value, default in zip(names, bound, defaults)
               if value is _MISSING and default is inspect.Parameter.empty]
    if missing:
        raise _call_error(op, "missing input " + ", ".join(map(repr, missing)))
    while bound and bound[-1] is _MISSING:   # optional inputs left out at the end stay out,
        bound.pop()                          # as if the call had stopped before them
    return tuple(defaults[k] if v is _MISSING else v for k, v in enumerate(bound)), rest


_MISSING = object()


def _apply_keywords(op, args, attrs) -> Node:
    """apply, once the keywords naming inputs are bound as inputs (or refused). The node's
    site is found by walking out of this module's frames, to the user's call."""
    args, attrs = _bind_keywords(op, args, attrs)
    return apply(op, *args, **attrs)


def _call_error(op, detail) -> UsageError:
    return UsageError(f"{op.name}: {detail}; its signature is {op.name}{op.__signature__}"
                      + at_user_line())


def apply(op: Op, *args, **attrs) -> Node:
    """Add ``op(*args, **attrs)`` to the graph of its node arguments (or the default graph).
    A keyword naming one of the op's inputs is bound as that input (``_apply_keywords``):
    each branch asks only when there are keywords, so that a call without any (the unary
    chain's) runs the same steps as before the keywords were checked."""
    n = len(args)
    first = args[0] if n else None
    # the common cases first: one node, or two nodes of one graph, none a weak scalar
    if n == 1 and type(first) is Node and not (first.op is None and first.weak):
        inputs, graph = args, first.graph
        if attrs:
            if not op.attr_names.issuperset(attrs):
                return _apply_keywords(op, args, attrs)
        elif thread_state.__dict__.get("sharing") is graph:   # (sharing_graph)
            twin = graph.unary_twin(op, first)   # a sweep's cos(x): the forward's own
            if twin is not None:
                return twin
    elif n == 2 and type(first) is Node and type(args[1]) is Node \
            and first.graph is args[1].graph and not (first.op is None and first.weak):
        inputs, graph = args, first.graph
        if attrs and not op.attr_names.issuperset(attrs):
            return _apply_keywords(op, args, attrs)
    else:
        if attrs and not op.attr_names.issuperset(attrs):
            return _apply_keywords(op, args, attrs)
        folded, inputs, graph = _general_args(op, args, attrs)
        if folded is not None:
            return folded
    shape, dtype = op.infer(*inputs, **attrs)
    frame = sys._getframe(1)
    code = frame.f_code
    last = _LAST_USER_CALL[0]
    if last[0] is code and last[1] == frame.f_lasti:   # the same user instruction again
        site = last[2]                                # (a loop's line): no look-up
    elif _INSIDE.get(code.co_filename) is False:   # straight from user code (site_of, inlined)
        hit = _SITE_AT.get((id(code), frame.f_lasti))
        site = hit[1] if hit is not None and hit[0] is code else site_at(frame)
        _LAST_USER_CALL[0] = (code, frame.f_lasti, site)   # (one tuple: atomic to swap)
    else:   # flowgrad's own code: a sweep's primitive rule knows the site (rule_site)
        site = thread_state.__dict__.get("rule_site") or site_of(frame)
    return graph.add_node(op, inputs, attrs,
                          shape if type(shape) is tuple else tuple(shape),
                          dtype if isinstance(dtype, np.dtype) else np.dtype(dtype),
                          where=site)


Op.__call__ = apply   # ``fg.sin(x)`` is apply(sin, x): one Python frame less per node


def reapply(graph, ids, mapping, *, stateful=True) -> dict:
    """Rebuild over a substitution: every op node among ``ids`` (ascending) that reads a
    node of ``mapping`` ({id: its replacement}) is applied again to the replaced inputs
    and added to ``mapping``, which is returned. ``stateful=False`` leaves stateful
    nodes (random draws) as they are, so a replay reads the forward's draw."""
    handles = graph.handles
    for nid in ids:
        if nid in mapping:
            continue
        node = handles[nid]
        op, ins = node.op, node.input_ids
        if op is None or (op.stateful and not stateful) or not any(i in mapping for i in ins):
            continue
        mapping[nid] = apply(op, *[mapping.get(i, handles[i]) for i in ins], **node.attrs)
    return mapping


# -- helpers for ``infer`` ----------------------------------------------------------

def shape_error(op_name, nodes, detail) -> ShapeError:
    """A ShapeError naming the op, every operand with its shape, and the user's line."""
    operands = ", ".join(f"{n.name} {fmt_shape(n.shape)}" for n in nodes)
    where = user_line()
    return ShapeError(f"{op_name}: {detail} (operands: {operands})" +
                      (f"\n  at {where}" if where else ""))


def dtype_error(op_name, nodes, detail) -> "UsageError":
    """A UsageError (a TypeError, as numpy's) for operands whose dtype the op does not
    take, naming the op, every operand with its dtype, and the user's line: raised when
    the node is built, not when a kernel later fails."""
    from flowgrad.errors import UsageError
    operands = ", ".join(f"{n.name} {n.dtype}" for n in nodes)
    where = user_line()
    return UsageError(f"{op_name}: {detail} (operands: {operands})" +
                      (f"\n  at {where}" if where else ""))


def weak_int_bounds(op_name, nodes, dtype):
    """Refuse, as numpy 2 does (OverflowError), a Python int operand that ``dtype``, the
    integer dtype it is weakly cast to, cannot hold (``uint8 + 300``, ``maximum(uint8,
    -1)``): an ArgumentError when the node is built, not a failure when it runs.
    Comparisons are not asked (numpy 2 compares such ints by value)."""
    info = np.iinfo(dtype)
    for n in nodes:
        v = n.value if n.op is None and n.weak else None
        if type(v) is int and not info.min <= v <= info.max:
            from flowgrad.errors import ArgumentError
            where = user_line()
            raise ArgumentError(
                f"{op_name}: the Python integer {v} is out of bounds for {dtype} (numpy 2 "
                f"refuses it too); cast first, e.g. astype(x, 'int64'), or pass a numpy "
                f"scalar of a wider type" + (f"\n  at {where}" if where else ""))


def fmt_shape(shape) -> str:
    inner = ", ".join("None" if s is None else str(s) for s in shape)
    return f"({inner}{',' if len(shape) == 1 else ''})"


_PKG_ROOTS = None
_INSIDE: dict[str, bool] = {}  # co_filename -> whether it lies inside flowgrad (cached)
_SITES: dict[tuple, tuple] = {}  # (file, line) -> that same tuple, the one nodes share


def _inside(fname) -> bool:
    inside = _INSIDE.get(fname)
    if inside is None:
        global _PKG_ROOTS
        if _PKG_ROOTS is None:
            import flowgrad
            from flowgrad import backends, viz  # noqa: F401  (their folders count as inside)
            _PKG_ROOTS = tuple(os.path.dirname(os.path.abspath(m.__file__)) + os.sep
                               for m in (flowgrad, sys.modules[__package__], backends, viz))
        # flowgrad's generated code (its binders, plans: "<flowgrad binder 0x…>") too
        inside = _INSIDE[fname] = fname.startswith("<flowgrad ") or \
            os.path.abspath(fname).startswith(_PKG_ROOTS)
    return inside


def user_site():
    """``(file, line)`` of the innermost frame outside flowgrad, i.e. the user's call, or
    None. Recorded on every node when it is built, so it must stay cheap: one dict look-up
    per frame (the path test is cached per file)."""
    return site_of(sys._getframe(1))


def site_of(frame):
    """user_site, walking out from ``frame`` (apply passes its caller's: a node built
    straight from user code then costs one look-up, and no frame object is made for
    flowgrad's own frames below it)."""
    known = _INSIDE
    stops = _STOPS
    while frame is not None:
        if stops and frame in stops:   # a sweep's frame: its site was found once
            return stops[frame]
        fname = frame.f_code.co_filename
        inside = known.get(fname)
        if not (inside or inside is None and _inside(fname)):
            return site_at(frame)
        frame = frame.f_back
    return None


#: {(id(code), instruction offset): (code, its site)}: ``frame.f_lineno`` scans the code's
#: line table from its start on every read (~5 µs at the end of a 300-line function or
#: script), where this look-up costs one small tuple. The code object is kept with its
#: entry, so its id cannot be reused for another while the entry stands.
_SITE_AT: dict[tuple, tuple] = {}
#: [(code, f_lasti, site)] of the user instruction whose call apply served last: a loop
#: that builds a node a turn calls from the same instruction each time, and a match
#: (the same code object, the same instruction) skips the file and table look-ups
#: (~0.2 µs of building a chain's ~1.7 µs node). Only user code is stored, so a match
#: is user code; one tuple, swapped whole, so a thread reads a consistent entry.
_LAST_USER_CALL: list = [(None, -1, None)]
_SITE_AT_MAX = 1 << 16   # distinct call sites kept (then the table starts over)


def site_at(frame):
    """``(file, line)`` of the instruction ``frame`` is running: one tuple per source
    line, shared by every node that line builds (a loop), found once per call site."""
    code = frame.f_code
    key = (id(code), frame.f_lasti)
    hit = _SITE_AT.get(key)
    if hit is not None and hit[0] is code:
        return hit[1]
    site = (code.co_filename, frame.f_lineno)
    site = _SITES.setdefault(site, site)
    if len(_SITE_AT) >= _SITE_AT_MAX:
        _SITE_AT.clear()
    _SITE_AT[key] = (code, site)
    return site


_STOPS: dict = {}   # {frame of a running sweep: the user site above it}


@contextlib.contextmanager
def site_fixed_above(frame):
    """While ``frame`` (a sweep inside flowgrad that builds many nodes) runs, walks that
    reach it stop there with the site found once above it, which is what they would
    have found: the frames above a running frame do not move. Frames below it (the
    rules, which may be user code) are still walked, so every site stays exact.

    The site is also this thread's ``rule_site`` meanwhile: a node that flowgrad's own
    code builds takes it without walking any frame (two frame objects a rule call, the
    largest cost of a sweep's node after the node itself). That is exact as long as
    only flowgrad's code runs between the sweep and the node; so the sweep calls every
    rule that may run user code (one not of the primitive ops, ``plain_rule``) through
    ``walking_sites``, which lifts the shortcut for the call."""
    site = _STOPS[frame] = site_of(frame)
    try:
        with building_at(site):
            yield
    finally:
        del _STOPS[frame]


_OPS_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_PLAIN_CODE: dict = {}   # code object -> whether it was written in this package (ops/)


def plain_rule(rule) -> bool:
    """Whether ``rule`` is a function of the primitive ops' own modules (this package):
    those rules build their nodes from ops and call no user code (ops/ imports no
    user-facing machinery), so the nodes they build take the sweep's site. Anything
    else (a custom rule, a loop's, a partial, a user's ``Op``) may run user code."""
    code = getattr(rule, "__code__", None)
    if code is None:
        return False
    plain = _PLAIN_CODE.get(code)
    if plain is None:
        plain = _PLAIN_CODE[code] = os.path.abspath(code.co_filename).startswith(_OPS_DIR)
    return plain


class PlainRules(dict):
    """``{rule: plain_rule(rule)}``, filled as a sweep meets its rules (one sweep's: a
    table kept across sweeps would keep every user rule alive)."""

    def __missing__(self, rule):
        plain = self[rule] = plain_rule(rule)
        return plain


def rule_site():
    """The site the primitive rules of this thread's running sweep take (``site_fixed_above``),
    or None outside a sweep: what ``apply`` gives a node that flowgrad's own code builds."""
    return thread_state.__dict__.get("rule_site")


@contextlib.contextmanager
def building_at(site):
    """While open, the nodes flowgrad's own code builds take ``site`` (a user's
    ``(file, line)``, or None: walk the frames) as their site, as a sweep's rules take
    ``rule_site``: a transform that rebuilds a user's node (fg.vectorize's batching
    rules) gives what it builds the original node's line, so that an error found there
    (a NaN under check_numerics) names the line the user wrote the op on, not the
    transform's call. Nodes that user code builds meanwhile (a custom rule) still take
    their own lines (``walking_sites``)."""
    state = thread_state.__dict__
    outer = state.get("rule_site")
    state["rule_site"] = site
    try:
        yield
    finally:
        state["rule_site"] = outer


def walking_sites(fn, /, *args, **kwargs):
    """``fn(*args, **kwargs)`` with the sweep's ``rule_site`` lifted: the nodes it builds
    get their sites by walking the frames (a user's rule: its own lines)."""
    state = thread_state.__dict__
    site = state.get("rule_site")
    state["rule_site"] = None
    try:
        return fn(*args, **kwargs)
    finally:
        state["rule_site"] = site


def user_line():
    """``file:line`` of the innermost frame outside flowgrad, i.e. the user's call."""
    site = user_site()
    return f"{site[0]}:{site[1]}" if site else None


def broadcast_shapes(op_name, *nodes) -> tuple:
    """numpy broadcasting of the nodes' shapes; ``None`` is a length known only at run
    time, assumed to match its partner (it is never taken to be a broadcast 1)."""
    first = nodes[0].shape
    for n in nodes:   # equal shapes (most nodes) broadcast to themselves
        if n.shape != first:
            break
    else:
        return first
    ndim = max(len(n.shape) for n in nodes)
    out = []
    for axis in range(-ndim, 0):
        dims = [n.shape[axis] for n in nodes if len(n.shape) >= -axis]
        known = {d for d in dims if d is not None and d != 1}
        if len(known) > 1:
            raise shape_error(op_name, nodes, "shapes do not broadcast")
        if known:
            out.append(known.pop())
        elif None in dims:
            out.append(None)
        else:
            out.append(1)
    return tuple(out)


def _weak(node) -> bool:
    """Whether ``node`` is a weakly typed Python-scalar constant (an op node's ``op``
    answers first: one slot read, no property call)."""
    return node.op is None and node.weak


def result_dtype(*nodes) -> np.dtype:
    """numpy's promotion, with Python-scalar constants weakly typed."""
    first = nodes[0].dtype if nodes else None
    if first is not None and first.isnative:
        for n in nodes:
            if n.dtype is not first or n.op is None and n.weak:   # (_weak inlined)
                break
        else:
            return first   # one native dtype, no weak scalar: numpy would say the same
    return np.result_type(*[n.value if _weak(n) else n.dtype for n in nodes])


def float_dtype(dtype) -> np.dtype:
    """The dtype a float function of ``dtype`` returns (ints and bools give float64)."""
    dtype = np.dtype(dtype)
    return dtype if dtype.kind in "fc" else np.dtype(np.float64)


def computes_in_float(forward):
    """``forward(xp, x, ...)`` with an int or bool ``x`` cast to ``float_dtype(x)`` first.

    The one place a float op's kernel meets an integer input (``Op(floating=True)``):
    numpy's ufuncs compute int8/uint8/bool in float16 and int16/uint16 in float32, while
    the node declares float64; the cast makes the interpreter, generated code, numba
    loops fed by this value and dask all produce the declared dtype. Float inputs pass
    untouched: one dtype test a call (~0.1 µs; a unary forward gets a wrapper of its
    own arity, as packing ``*args, **attrs`` costs several times that)."""
    def cast(xp, x):
        try:
            if x.dtype.kind in "fc":
                return x
        except AttributeError:   # a Python number (a weak constant): as an array
            x = xp.asarray(x)
            if x.dtype.kind in "fc":
                return x
        return x.astype(float_dtype(x.dtype))

    if len(inspect.signature(forward).parameters) == 2:   # forward(xp, x)
        @functools.wraps(forward)
        def cast_first(xp, x):
            try:
                if x.dtype.kind in "fc":
                    return forward(xp, x)
            except AttributeError:
                pass
            return forward(xp, cast(xp, x))
        return cast_first

    @functools.wraps(forward)
    def cast_first_attrs(xp, x, *args, **attrs):
        return forward(xp, cast(xp, x), *args, **attrs)
    return cast_first_attrs


def sum_dtype(dtype) -> np.dtype:
    """The dtype of a sum, product or running sum of ``dtype``: numpy's own rule. Floats
    keep their dtype; bools and signed ints smaller than the platform's integer give
    it (int64), unsigned ones its unsigned twin (uint64), as ``np.sum`` does."""
    dtype = np.dtype(dtype)
    if dtype.kind in "fc":
        return dtype
    if dtype.kind == "u":
        return np.promote_types(dtype, np.dtype(np.uint))
    return np.promote_types(dtype, np.dtype(np.int_))


def summed(xp, x, axis, keepdims):
    """``xp.sum(x, axis=axis, keepdims=keepdims)``, a float16 x summed in float32 and
    rounded once, on every backend, as torch and JAX sum half floats. numpy adds a
    float16 array in float16 along a leading axis: 3000 ones summed to 2048 (1 is below
    half of 2048's spacing), and 60000 + 60000 − 60000 − 60000 overflowed to inf; dask
    rounded each chunk's partial sum to float16 (NaN where two infinities met)."""
    if x.dtype == np.float16:
        return xp.sum(x, axis=axis, keepdims=keepdims, dtype=np.float32).astype(np.float16)
    return xp.sum(x, axis=axis, keepdims=keepdims)


def half_widened(fn, *xs):
    """``fn(*xs)`` with float16 operands computed in float32 and the result rounded once
    to the dtype numpy would give (float16 when no operand is wider): for the kernels
    that accumulate (cumsum, einsum's contractions, the 2-norm), which numpy runs in
    float16 along an axis, stalling at 2048 and overflowing where torch's float32
    accumulator does not (see ``summed``)."""
    dtypes = [x.dtype for x in xs]
    if np.float16 not in dtypes:
        return fn(*xs)
    out = np.result_type(*dtypes)
    r = fn(*[x.astype(np.float32) if x.dtype == np.float16 else x for x in xs])
    return r.astype(out) if r.dtype != out else r


def normalize_axis(op_name, node, axis) -> tuple:
    """``axis`` (None, int or tuple) as a sorted tuple of non-negative ints."""
    ndim = len(node.shape)
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (int, np.integer)) and not isinstance(axis, (bool, np.bool_)):
        axes = (axis,)
    elif isinstance(axis, (tuple, list)):
        axes = tuple(axis)
    else:
        axes = None
    if axes is None or any(not isinstance(a, (int, np.integer)) or isinstance(a, (bool, np.bool_))
                           for a in axes):
        raise UsageError(f"{op_name}: the argument axis must be None, an int or a tuple of "
                         f"ints, got {axis!r} ({type(axis).__name__})" + at_user_line())
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise shape_error(op_name, (node,), f"axis {a} is out of range for a {ndim}-d input")
        out.append(int(a) % ndim)
    if len(set(out)) != len(out):
        raise shape_error(op_name, (node,), f"repeated axis in {axis}")
    return tuple(sorted(out))


def keepdims_flag(op_name, keepdims) -> bool:
    """``keepdims`` checked to be a bool: ``keepdims="no"`` is truthy, and must not pass."""
    if not isinstance(keepdims, (bool, np.bool_)):
        raise UsageError(f"{op_name}: the argument keepdims must be True or False, got "
                         f"{keepdims!r} ({type(keepdims).__name__})" + at_user_line())
    return bool(keepdims)


def at_user_line() -> str:
    """``"\n  at file:line"`` of the user's call, to end an error message with (empty
    when no frame lies outside flowgrad)."""
    where = user_line()
    return f"\n  at {where}" if where else ""
