"""SGD's step written out as one Python function per binding (numpy only): the
updates ``w − lr·g`` of every variable and the commit, without the generic loop's calls.
``flowgrad.training.optim`` makes it once per program for SGD itself (not a subclass, and only
without weight decay or clipping)."""
from __future__ import annotations

import numpy as np

from ..state import undo_fully


def sgd_function(bound):
    """SGD's step after the program has run, written out for one binding (numpy only):
    ``sgd(opt, outs, lr, pending=None)`` -> what ``step`` returns. It computes every
    ``w − lr·g`` — 0-d float64 variables on Python floats, the same bits as on arrays,
    with numpy's value and warning where the result is not finite — then writes them
    all, counts the step and writes ``pending`` (the run's prepared state updates), or,
    if interrupted while writing, puts the old values back (``optim.restore``). The
    generic loop (``_new_values``) does the same through ``SGD._update``; this is that
    loop unrolled, without its calls."""
    from .optim import restore       # (optim imports this module at its top)
    ns = {"ndarray": np.ndarray, "asarray": bound.asarray, "array": np.array,
          "undo_fully": undo_fully, "restore": restore}
    body, commit, old = [], [], []
    for k, (is_float, dtype, d) in enumerate(zip(bound.floats, bound.dtypes, bound.dicts)):
        ns[f"D{k}"], ns[f"T{k}"] = d, dtype
        g = f"outs[{k + 1}]"
        body.append(f"o{k} = D{k}['value']")
        on_arrays = [f"v = o{k} if type(o{k}) is ndarray else asarray(o{k})",
                     f"n{k} = v - lr * {g}",
                     f"d = n{k}.dtype",
                     f"if d is not T{k} and d != T{k}:",
                     f"    n{k} = n{k}.astype(T{k})",
                     # 0-d arithmetic gives a numpy scalar: the value stays an array
                     f"if type(n{k}) is not ndarray:",
                     f"    n{k} = asarray(n{k})"]
        if is_float:
            body += [f"f = float(o{k}) - lr * float({g})",
                     "if f - f == 0.0:",              # finite: inf − inf and nan are nan
                     f"    n{k} = array(f)",
                     "else:"] + ["    " + line for line in on_arrays]
        else:
            body += on_arrays
        commit.append(f"    D{k}['value'] = n{k}")
        old.append(f"o{k}")
    n = len(bound.dicts)
    body = ["if type(outs) is not list:", "    outs = [outs]"] + body
    # the run's declared state updates (a prepared state.Pending) are written inside
    # the same commit, and undone with it
    body += ["t = opt.iterations + 1", "try:"] + commit + [
        "    opt.iterations = t", "    if pending is not None:", "        pending.write()",
        "except BaseException:",
        f"    undo_fully(restore, opt, DICTS, ({', '.join(old)},), None, t - 1, pending)",
        "    raise", f"return outs[0] if len(outs) == {n + 1} else [outs[0], *outs[{n + 1}:]]"]
    ns["DICTS"] = bound.dicts
    src = "def sgd(opt, outs, lr, pending=None):\n" + "".join(f"    {line}\n" for line in body)
    exec(compile(src, "<flowgrad SGD step>", "exec"), ns)
    ns["sgd"].source = src
    return ns["sgd"]
