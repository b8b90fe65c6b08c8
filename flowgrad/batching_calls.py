"""Batching rules of custom functions and remat blocks (``custom_call``, ``custom_input``,
``remat_after``), for ``fg.vectorize``.

Value-wise each hands back its first input, so the batched value is easy; the question
is what a derivative taken *later*, of the batched graph, does:

* a ``fg.custom_vjp``/``fg.custom_jvp`` call: its rule was written for one example. On
  batched nodes a rule that reduces over an axis (``fg.sum(x)``) would sum across
  examples and still return the right shape — silently wrong. So the batched call gets
  a function of its own, ``batched_function(fn, flags)``, whose rule is the user's rule
  *vectorized*: applied to per-example stand-ins of the batched cotangent, output and
  inputs, then batched op by op with ``fg.vectorize`` (a term for an input the batch
  does not reach is summed over the examples). This is what JAX does with a
  ``custom_vjp`` under ``vmap`` (it vmaps the rule), and what differentiating the
  per-example graph first and vectorizing the derivative gives; so a per-example
  gradient that reads a call can be differentiated again (a gradient penalty), and a
  vectorized call can be differentiated at all. The function is registered under a
  name built from the user's (``flowgrad.vectorized_call[10]:mylib.f``: which inputs
  carry the batch, then the user's name), so a graph file that holds one loads where
  ``mylib.f`` is defined (flowgrad/custom.py resolves the name).
* a call whose forward ignores its batched inputs has its output repeated along the
  batch, so that each example has its own cotangent for the rule. A batched call loaded
  from a graph file written before these rules (named ``flowgrad.vectorized_call``), or
  whose name would be too long for a graph file, keeps the function whose rule refuses
  by name.
* a ``fg.remat`` block: its rule is not the user's but a replay of the block's nodes
  from the graph, and the batched block is a correct batched computation, so the
  batched call keeps the remat rule: differentiating after vectorizing works too.
* ``custom_input`` (a forward's stand-in for an input) and ``remat_after`` (a replay's
  input, ordered after the block's output adjoint) carry their input's value: the
  same op on the batched input. A ``remat_after`` whose value input is unbatched (only
  its ordering input carries the batch) keeps an unbatched value.
"""
from __future__ import annotations

from .custom import MAX_NAME, CustomFunction
from .errors import DifferentiationError

#: how a batched call's function is named: PREFIX + "[" + one 0/1 per input (does it
#: carry the batch) + "]:" + the user's function's name
PREFIX = "flowgrad.vectorized_call"


def _refused(g, ans, *xs):
    from .custom_op import rule_error
    raise rule_error(
        ans, f"the custom function call {ans.name!r} was batched by fg.vectorize without "
        "its rule (in a graph file written before batched calls kept their function, or "
        f"under a name longer than {MAX_NAME} characters), so it cannot be "
        "differentiated: its rule was written for one example. Differentiate first and "
        "vectorize the derivative, e.g. fg.vectorize(fg.grad(loss_i, w), {x_i: X}); "
        "fg.remat blocks are not affected")


def _no_forward(*args):
    raise DifferentiationError("flowgrad.vectorized_call stands for a custom function's "
                               "call batched by fg.vectorize; it is not called directly")


#: the function of a batched call without its rule (registered, so a graph file written
#: before batched calls kept their function loads): its rule refuses with the reason
VECTORIZED = CustomFunction(_no_forward, "vjp", name="flowgrad.vectorized_call")
VECTORIZED.defvjp(_refused)
VECTORIZED.label = "vectorized custom call"


def custom_call(b, node, ins, bat):
    from .custom_op import function_of
    from .remat import REMAT
    fn = function_of(node)
    batched = None
    if fn is not REMAT and fn is not VECTORIZED:
        batched = batched_function(fn, bat[1:])
    if batched is not None:
        if not bat[0]:    # a forward that ignores its batched input: the rule may not
            ins = [b.materialize(ins[0])] + list(ins[1:])   # (one cotangent per example)
        return _apply(node.op, ins, dict(node.attrs, fn=batched))
    attrs = dict(node.attrs, fn=fn if fn is REMAT else VECTORIZED)
    if not bat[0]:        # the forward's value is the same for every example
        return _unbatched(node, ins, attrs)
    return _apply(node.op, ins, attrs)


# -- a batched call's function: the user's rule, vectorized --------------------------------

#: {(user's function, flags): its batched function}: one object per pair, so that a
#: graph file's name finds the very function a call holds (flowgrad/io/custom_io.py)
_BATCHED: dict = {}


def batched_function(fn, flags):
    """The function of a batched call of ``fn`` whose inputs carry the batch where
    ``flags`` is true (its output does); None where its name would be too long for a
    graph file."""
    flags = "".join("1" if f else "0" for f in flags)
    key = (fn, flags)
    if key not in _BATCHED:
        name = f"{PREFIX}[{flags}]:{fn.name}"
        if len(name) > MAX_NAME:
            return None
        batched = CustomFunction(_no_forward, "vjp", name=name, register=False)
        batched.label, batched.params = fn.label, list(fn.params)
        batched.defvjp(_vectorized_rule(fn, [f == "1" for f in flags]))
        _BATCHED.setdefault(key, batched)     # (two threads: both hold the first one)
    return _BATCHED[key]


def batched_by_name(name):
    """The batched function a graph file names (``PREFIX[flags]:user name``), where the
    user's function is registered here; else None."""
    head, sep, inner_name = name.partition("]:")
    flags = head[len(PREFIX) + 1:]
    if not (sep and head.startswith(PREFIX + "[") and flags and set(flags) <= {"0", "1"}):
        return None
    from .custom import registered
    inner = registered(inner_name)
    return None if inner is None else batched_function(inner, [f == "1" for f in flags])


def _vectorized_rule(fn, flags):
    def rule(g, ans, *xs):
        from .custom_op import reverse_terms, rule_error
        from .vectorize import vectorize
        if len(xs) != len(flags):      # (a graph file's name that fits another call)
            raise rule_error(ans, f"the batched call {ans.name!r} has {len(xs)} inputs, "
                                  f"but its function names {len(flags)}")
        mapping = {}

        def one(node):        # a per-example stand-in: the batched node's first example
            key = node[0]
            mapping[key] = node
            return key
        g1, ans1 = one(g), one(ans)
        xs1 = [one(x) if f else x for x, f in zip(xs, flags)]
        terms = reverse_terms(fn, g1, ans1, xs1)
        made = [k for k, t in enumerate(terms) if t is not None]
        if not made:
            return tuple(terms)
        batched = vectorize([terms[k] for k in made], mapping)
        out = list(terms)
        for k, t in zip(made, batched):
            # a shared input gets every example's term: their sum over the batch
            out[k] = t if flags[k] else _summed_over_examples(t)
        return tuple(out)
    rule.__doc__ = f"the rule of {fn.label}, example by example"
    return rule


def _summed_over_examples(t):
    from .ops import sum as fg_sum
    return fg_sum(t, axis=0)


def _apply(op, ins, attrs):
    from .ops.base import apply
    return apply(op, *ins, **attrs)


def _unbatched(node, ins, attrs):
    from .batching import Unbatched
    return Unbatched(_apply(node.op, ins, attrs))


def custom_input(b, node, ins, bat):
    return _apply(node.op, ins, node.attrs)


def remat_after(b, node, ins, bat):
    if not bat[0]:
        return _unbatched(node, ins, node.attrs)
    return _apply(node.op, ins, node.attrs)


def shaped_like(b, node, ins, bat):
    # a seed held to its input's shape (flowgrad/seeds.py): batched, the seed itself (a
    # per-example seed has the batch axis its input lacks; the check is the build's)
    from .batching import Unbatched
    return ins[0] if bat[0] else Unbatched(ins[0])


CALL_RULES = {"custom_call": custom_call, "custom_input": custom_input,
              "remat_after": remat_after, "shaped_like": shaped_like}
