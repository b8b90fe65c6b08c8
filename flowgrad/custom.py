"""Your own derivative rules: ``@fg.custom_vjp`` and ``@fg.custom_jvp``.

    @fg.custom_vjp
    def clip_grad(x):
        return x * 1.0                        # the forward, built from fg ops

    @clip_grad.defvjp
    def clip_grad_vjp(g, ans, x):
        "x̄ = clip(v̄, −1, 1)"
        return (fg.maximum(fg.minimum(g, 1.0), -1.0),)   # one node (or None) per input

    @fg.custom_jvp
    def log1pexp(x):
        return fg.log1p(fg.exp(x))

    @log1pexp.defjvp
    def log1pexp_jvp(tangents, ans, x):
        return tangents[0] * fg.sigmoid(x)    # one tangent node for the output

**How a call is represented.** The forward's nodes are ordinary nodes of the graph,
built on the caller's nodes inside an ``fg.composite`` group named after the function
(so drawings show one box, and ``expand=`` opens it). They end in one ``custom_call``
node, ``custom_call(forward_out, *inputs, fn=<the function>)``, whose value is
``forward_out`` and whose rules are the user's: it sends no adjoint or tangent into
``forward_out`` (so nothing flows through the forward's own nodes), and gives each
input the rule's term. The forward is run by the scheduler like any other nodes
(fused, generated code, every backend); only the rules are special.

**Rules derived by transposition.** A rule is linear in the cotangent (vjp) or in the
tangents (jvp), so either one gives the other. For a custom_jvp function the reverse
rule is built as follows: the jvp rule is applied with zero-valued tangent *nodes*
t_i standing for the tangents, giving ṫ = Σ_i J_i t_i as nodes; the reverse sweep of
ṫ with respect to t_i, seeded with v̄, is J_iᵀ v̄ — the vjp of a linear map is its
transpose, and its value does not depend on where t_i is (so zeros serve). For a
custom_vjp function the forward rule is the mirror image: the vjp rule applied to a
zero cotangent node z gives x̄_i = J_iᵀ z, and the reverse sweep of x̄_i with respect
to z seeded with ṫ_i is J_i ṫ_i. Both are built from the user's nodes, so second
derivatives work wherever the rule is itself differentiable.
The transposition is right only for a rule linear in the tangents, so a custom_jvp
rule is checked before it is transposed (flowgrad/custom_linear.py): a nonlinear or
affine rule is a DifferentiationError, not a wrong gradient. A custom_vjp rule is not
checked: one deliberately nonlinear in g (a clipped gradient) is transposed as its
linearization at g = 0, documented in docs/howto-custom.md and pinned by
tests/test_custom.py (JAX refuses forward mode through custom_vjp instead).

Graph files save a call as its forward's nodes plus the ``custom_call`` node, which
names the function by its registered name (``name=``, default the qualified name);
loading finds the rules in this module's registry (every definition registers) and
refuses a name that is not registered — a file never carries code.
"""
from __future__ import annotations

import functools
import inspect

from .errors import ArgumentError, DifferentiationError, GraphError, UsageError, located
from .graph import Node, default_graph

__all__ = ["custom_vjp", "custom_jvp", "CustomFunction", "registered", "unregister"]

#: {registered name: CustomFunction}: where a loaded graph finds its rules. A later
#: definition under the same name replaces the earlier one (re-running a notebook cell).
_REGISTRY: dict = {}


def registered(name: str):
    """The custom function registered as ``name``, or None. A batched call's function
    (``flowgrad.vectorized_call[…]:name``, flowgrad/batching_calls.py) is found from the
    user's function registered as ``name``."""
    fn = _REGISTRY.get(name)
    if fn is None and isinstance(name, str) and name.startswith("flowgrad.vectorized_call["):
        from .batching_calls import batched_by_name
        fn = batched_by_name(name)
    return fn


def unregister(name: str) -> None:
    """Forget the function registered as ``name`` (graphs built with it keep it; loading
    a file that names it is then refused)."""
    _REGISTRY.pop(name, None)


class CustomFunction:
    """A function with a user-given derivative rule. Call it on nodes to build its forward;
    ``defvjp``/``defjvp`` give the rule (also usable as decorators)."""

    def __init__(self, fn, kind, name=None, *, register=True):
        if not callable(fn):
            raise located(UsageError, f"custom_{kind} decorates a function, got {fn!r:.60}")
        _check_name(kind, name)
        self.fn, self.kind = fn, kind
        short = getattr(fn, "__name__", None) or type(fn).__name__   # (a partial has none)
        self.name = name or \
            f"{getattr(fn, '__module__', None)}.{getattr(fn, '__qualname__', short)}"
        #: what its box is labelled with in drawings
        self.label = name or short
        self.rule = None
        try:
            self.params = [p.name for p in inspect.signature(fn).parameters.values()]
        except (TypeError, ValueError):
            self.params = []
        functools.update_wrapper(self, fn)
        if register:      # (a batched call's function is found through its user's one)
            _REGISTRY[self.name] = self

    def __repr__(self):
        return f"<fg.custom_{self.kind} {self.name!r}>"

    def defvjp(self, rule):
        """``rule(g, ans, *inputs) -> (x̄₁, …)``, one node (or None) per input."""
        return self._define(rule, "vjp")

    def defjvp(self, rule):
        """``rule(tangents, ans, *inputs) -> ṫ``, the output's tangent node."""
        return self._define(rule, "jvp")

    def _define(self, rule, kind):
        if kind != self.kind:
            raise located(
                DifferentiationError,
                f"{self.name} is a custom_{self.kind} function: give its rule with "
                f"def{self.kind}, not def{kind}")
        if not callable(rule):
            raise located(UsageError, f"def{kind} takes a function, got {rule!r:.60}")
        self.rule = rule
        return rule

    @property
    def caption(self) -> str:
        """The rule as drawn on edges: its docstring's first line, else its name."""
        doc = inspect.getdoc(self.rule) if self.rule is not None else None
        if doc:
            return doc.strip().splitlines()[0]
        return getattr(self.rule, "__name__", "no rule yet") + "(…)"

    def arg_name(self, k) -> str:
        return self.params[k] if k < len(self.params) else f"argument {k}"

    def __call__(self, *args, **kwargs):
        if kwargs:
            raise located(UsageError, f"{self.name}: a custom function takes its inputs "
                                      f"positionally (got keywords {sorted(kwargs)})")
        from .custom_op import build_call, check_arguments
        self._check_count(args)
        check_arguments(self, args)
        return build_call(self, args)

    def _check_count(self, args):
        """Refuse a call with a number of inputs the function does not take, by name
        (Python's TypeError came from inside the forward's build, naming neither)."""
        try:
            inspect.signature(self.fn).bind(*args)
        except TypeError as e:
            raise located(UsageError, f"custom_{self.kind} {self.name!r} takes "
                                      f"({', '.join(self.params)}), called with "
                                      f"{len(args)} input{'s' * (len(args) != 1)}: {e}") \
                from None
        except ValueError:                # no signature to read: the call says
            pass


#: a registered name's length limit (a graph file's name is refused beyond it)
MAX_NAME = 1000


def _check_name(kind, name):
    if name is not None and (not isinstance(name, str) or not name or len(name) > MAX_NAME):
        raise located(ArgumentError, f"custom_{kind}(name=...) takes a non-empty string of "
                                     f"at most {MAX_NAME} characters, got {name!r:.80}")


def _decorator(kind, fn_or_none, name):
    if fn_or_none is not None:
        return CustomFunction(fn_or_none, kind, name)
    _check_name(kind, name)
    return lambda fn: CustomFunction(fn, kind, name)


def custom_vjp(fn=None, *, name=None):
    """A function whose reverse-mode rule you give: ``@fg.custom_vjp`` (or
    ``@fg.custom_vjp(name="mylib.f")``), then ``@f.defvjp`` on
    ``rule(g, ans, *inputs) -> tuple`` of one node per input (None: no gradient for
    it). Forward mode is derived from the rule by transposing it (see the module doc)."""
    return _decorator("vjp", fn, name)


def custom_jvp(fn=None, *, name=None):
    """A function whose forward-mode rule you give: ``@fg.custom_jvp``, then
    ``@h.defjvp`` on ``rule(tangents, ans, *inputs) -> node``, linear in ``tangents``
    (one node per input; zeros for an input without a tangent, None for a non-float
    one). Reverse mode is derived by transposing the rule (see the module doc)."""
    return _decorator("jvp", fn, name)


def graph_of(args):
    """The one graph of the node arguments, else the default graph."""
    return call_inputs(args)[0]


def call_inputs(args):
    """``(graph, args)``: the graph a call of a custom function (or remat block) on
    ``args`` is built in, and the arguments to build it on. Inside a loop body being
    traced, nodes of the graphs around it (a weight) are swapped for the body's
    placeholders that capture them, as for any op's arguments (flowgrad/loops/body.py),
    so they become the loop's inputs and get their gradients; nodes of an unrelated
    graph are refused."""
    graph = None
    for a in args:
        if isinstance(a, Node):
            if graph is not None and a.graph is not graph:
                from .loops.body import capture_args, tracing_graph
                captured = capture_args(args)
                if captured is None:
                    raise located(GraphError, f"custom function: inputs {a.name!r} and "
                                              "others come from two graphs")
                return tracing_graph(), tuple(captured)   # all of the body's graph now
            graph = a.graph
    return graph or default_graph(), tuple(args)
