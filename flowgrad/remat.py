"""``fg.remat(block)(*args)``: recompute a block's inner values in the backward pass.

    for k in range(0, 40, 8):
        h = fg.remat(segment)(h, *Ws[k:k + 8])   # 8 layers whose activations are not kept

A call is a custom function (flowgrad/custom.py) whose reverse rule does not read the
block's inner nodes. It *replays* the block: the block's nodes are copied with each
input x replaced by ``remat_after(x, v̄)`` — x's value, available only once the block's
output adjoint v̄ is — and the rule is the vjp of that copy. So the forward's inner
values die as soon as the forward pass is done with them (nothing in the backward
reads them), and the copy runs when the backward pass reaches the block: the
scheduler runs nodes in id order and frees each value after its last reader. The
copy can never be merged with the forward by the simplifier (its inputs differ).

The block may read (or return) float nodes it does not take as arguments (a layer's
weights, made before it or inside it): they become the call's last inputs (``lifted``),
read directly rather than through stand-ins, and the replay maps them too, so they get
gradients.

Random draws inside the block are replayed, not redrawn: a random node is not copied,
the copy reads the forward's draw (whose value is therefore kept until the backward).

Forward mode is the rule transposed, like any custom_vjp function; remat saves memory
in reverse mode only. One registered rule serves every block, so a saved graph with
remat blocks loads without the block's code (the copy is made from the graph).
"""
from __future__ import annotations

import functools

from .autodiff import vjp_above
from .custom import CustomFunction
from .custom_op import build_call, check_arguments, custom_call, stand_ins
from .errors import DifferentiationError, UsageError, located
from .ops.base import NONDIFF, Op, apply, reapply

__all__ = ["remat"]


def _after_infer(x, g):
    return x.shape, x.dtype


remat_after = Op(
    "remat_after", lambda xp, x, g: x, _after_infer,
    vjp=(lambda gbar, ans, x, g: gbar, NONDIFF), jvp=(lambda t, ans, x, g: t, NONDIFF),
    doc="x's value, read only once g is computed: it orders a remat block's recomputation "
        "after the block's output adjoint.  x̄ = Ḡ (identity in x); g is a dependency only.")


def _float(node) -> bool:
    return node.dtype.kind in "fc"


def _block_ids(out, mapping) -> list:
    """What a replay may copy: ``out``'s ancestors, ascending, walking neither into a
    mapped node (an input, replaced) nor below the lowest one (outside the block)."""
    data = out.graph.handles
    lo = min(mapping)
    seen, stack = {out.id}, [out.id]
    while stack:
        nid = stack.pop()
        if nid in mapping:
            continue
        for i in data[nid].input_ids:
            if i >= lo and i not in seen:
                seen.add(i)
                stack.append(i)
    return sorted(seen)


def _replay(out, mapping):
    """``out`` rebuilt over ``mapping`` ({id: node}): every node that depends on a mapped
    one is re-applied, except random nodes, whose forward draw is read as it is."""
    reapply(out.graph, _block_ids(out, mapping), mapping, stateful=False)
    return mapping.get(out.id, out)


def _remat_vjp(g, ans, *xs):
    """x̄ = vjp of the block, its values recomputed from its inputs"""
    if ans.op is not custom_call:
        raise DifferentiationError("fg.remat's rule replays its block from the graph, so it "
                                   "needs the block's call node, not a value standing in")
    stand = stand_ins(ans)                      # explicit inputs: read through stand-ins
    lifted = range(len(xs) - ans.attrs.get("lifted", 0), len(xs))   # read directly
    used = set(stand.values()) | set(lifted)
    late = {k: apply(remat_after, xs[k], g) for k in sorted(used) if _float(xs[k])}
    if not late:
        return tuple(None for _ in xs)
    mapping = {sid: late.get(k, xs[k]) for sid, k in stand.items()}
    mapping.update({xs[k].id: late[k] for k in lifted})
    copy = _replay(ans.inputs[0], mapping)
    order = sorted(late)
    bars = vjp_above(copy, [late[k] for k in order], g)
    terms = [None] * len(xs)
    for k, b in zip(order, bars):
        terms[k] = b
    return tuple(terms)


def _no_forward(*args):
    raise DifferentiationError("fg.remat's registered rule has no forward of its own: "
                               "call fg.remat(block)(*args)")


#: the one registered function every remat block calls (its forward is the block's)
REMAT = CustomFunction(_no_forward, "vjp", name="flowgrad.remat")
REMAT.defvjp(_remat_vjp)
REMAT.label = "remat"   # formulas write remat(…); a box is named after its block
#: its rule is the built-in reverse sweep of the block, whose dtypes are autodiff's own:
#: custom_op's check that a user's rule keeps the dtype does not apply
REMAT.builtin_rule = True


def remat(block):
    """``block`` whose inner values are recomputed in the backward pass instead of kept:
    ``fg.remat(block)(*args)`` builds the block (one box in drawings, named after it);
    its gradient re-runs the block from its inputs when the backward pass reaches it.
    Random draws inside are replayed. Float nodes the block reads without taking them
    (a layer's weights) become the call's last inputs, so they get their gradients."""
    if not callable(block):
        raise located(UsageError, f"fg.remat takes a function, got {block!r:.60}")
    label = getattr(block, "__name__", None) or "remat"

    @functools.wraps(block)
    def call(*args, **kwargs):
        if kwargs:
            raise located(UsageError, f"fg.remat({label}): pass the inputs positionally "
                                      f"(got keywords {sorted(kwargs)})")
        check_arguments(REMAT, args, label)
        return build_call(REMAT, args, forward=block, label=label, lift=True)
    return call
