"""Batching rules of custom functions and remat blocks (``custom_call``, ``custom_input``,
``remat_after``), for ``fg.vectorize``.

Value-wise each hands back its first input, so the batched value is easy; the question
is what a derivative taken *later*, of the batched graph, would do:

* a ``fg.custom_vjp``/``fg.custom_jvp`` call: its rule was written for one example. On
  batched nodes a rule that reduces over an axis (``fg.sum(x)``) would sum across
  examples and still return the right shape — silently wrong. So the batched call
  keeps the value and gets the registered function ``flowgrad.vectorized_call``,
  whose rule refuses by name. What is sound, and what ``fg.jacobian``, ``fg.hessian``
  and per-example gradients do, is to differentiate first and vectorize the
  derivative: the user's rule is then built on the per-example nodes and batched op
  by op like any other nodes (``fg.vectorize(fg.grad(loss_i, w), {x_i: X})``).
* a ``fg.remat`` block: its rule is not the user's but a replay of the block's nodes
  from the graph, and the batched block is a correct batched computation, so the
  batched call keeps the remat rule: differentiating after vectorizing works too.
* ``custom_input`` (a forward's stand-in for an input) and ``remat_after`` (a replay's
  input, ordered after the block's output adjoint) carry their input's value: the
  same op on the batched input. A ``remat_after`` whose value input is unbatched (only
  its ordering input carries the batch) keeps an unbatched value.
"""
from __future__ import annotations

from .custom import CustomFunction
from .errors import DifferentiationError


def _refused(*args):
    raise DifferentiationError(
        "a custom function's call batched by fg.vectorize cannot be differentiated: its "
        "rule was written for one example (a reduction in it would mix the examples). "
        "Differentiate first and vectorize the derivative, e.g. "
        "fg.vectorize(fg.grad(loss_i, w), {x_i: X}); fg.remat blocks are not affected")


def _no_forward(*args):
    raise DifferentiationError("flowgrad.vectorized_call stands for a custom function's "
                               "call batched by fg.vectorize; it is not called directly")


#: the function of every batched call of a user's custom function (registered, so a
#: graph file that holds one loads): its rule refuses with the reason
VECTORIZED = CustomFunction(_no_forward, "vjp", name="flowgrad.vectorized_call")
VECTORIZED.defvjp(_refused)
VECTORIZED.label = "vectorized custom call"


def custom_call(b, node, ins, bat):
    from .custom_op import function_of
    from .remat import REMAT
    fn = function_of(node)
    attrs = dict(node.attrs, fn=fn if fn is REMAT else VECTORIZED)
    if not bat[0]:        # the forward's value is the same for every example
        return _unbatched(node, ins, attrs)
    return _apply(node.op, ins, attrs)


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
