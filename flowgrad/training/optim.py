"""Optimizers that update ``fg.variable``s in place from a program's gradients.

An optimizer holds a list of variables. ``opt.step(prog, **feed)`` runs a program
whose outputs are *the loss, then one gradient per variable* (then, optionally,
any extra outputs such as metrics), replaces each variable's value by its update
and returns the loss. ``opt.minimize(loss)`` builds that program for you.

Updates are written once, against the program's backend namespace ``xp``, and are
out of place: a value read from ``w.value`` earlier is never mutated, and the state
(momentum, Adam's moments) lives as arrays of the program's backend (numpy, cupy;
dask computes new values and state once per step, into numpy). A step is atomic
and holds the optimizer's lock (see :class:`Optimizer`). The learning rate is a number or a *schedule*: any callable of the iteration
number ``k = 0, 1, 2, ...`` (the number of steps taken before this one; see
flowgrad/training/schedules.py). The update rules (each ``torch.optim``'s formula) are in
flowgrad/training/optim_rules.py, what the step does to gradients first (clipping, the
finiteness check) in flowgrad/training/optim_grads.py, L-BFGS in flowgrad/training/lbfgs.py.

A step costs little beyond the program itself: the check of the program's outputs
runs once per program (the verdict is cached, weakly, with what a step needs to know
of the program), the built-in updates of 0-d float64 variables run on Python
floats, to the same bits as on 0-d arrays, and SGD on numpy runs its updates and
commit as one function written out for the program's variables (flowgrad/training/optim_sgd.py).

    opt = fg.optim.Adam([w, b], lr=fg.optim.exponential_decay(1e-2, 0.5, every=100))
"""
from __future__ import annotations

import math
import numbers
import operator
import threading
import weakref

import numpy as np

from . import optim_grads
from ..autodiff import grad, is_gradient
from ..backends import get_backend
from ..errors import GraphError, NumericsError, OptimizerError, UsageError
from ..ops.base import at_user_line
from ..graph import Node, same_graph
from .optim_sgd import sgd_function
from ..engine.program import Program
from ..state import commit_lock, is_state, store_values, undo_fully
from .schedules import cosine_decay, exponential_decay, step_decay, warmup_cosine  # noqa: F401

__all__ = ["Optimizer", "SGD", "Momentum", "Adam", "AdamW", "RMSProp", "Adagrad", "LBFGS",
           "OptimizerError", "exponential_decay", "cosine_decay", "warmup_cosine",
           "step_decay"]


def check_real(name, value, low, high=math.inf, *, low_open=False, high_open=True):
    """``value`` as a float in the interval (``low``/``high`` open or closed as told);
    a bool or a non-number is a TypeError, NaN, ±inf or a value outside an OptimizerError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UsageError(f"{name} must be a real number, got {value!r}" + at_user_line())
    v = float(value)
    too_low = v <= low if low_open else v < low
    too_high = v >= high if high_open else v > high
    if not math.isfinite(v) or too_low or too_high:
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        raise OptimizerError(f"{name} must be a finite number in {lo}{low}, {high}{hi}, "
                             f"got {value!r}")
    return v


class Optimizer:
    """Base class: ``step(prog, **feed)`` runs ``prog`` — whose outputs are the loss,
    then one gradient per variable — applies the update and returns the loss.

    A subclass writes ``_update(value, g, state, lr, t, xp) -> (new value, new state)``:
    ``value`` and ``g`` are arrays of the backend whose namespace is ``xp``, ``state``
    the variable's state dict of the previous step (empty at first; read it, never
    mutate it), ``t = 1, 2, …`` the number of this step. Nothing is written until
    every variable's update has been computed (see :meth:`step`). (The built-in
    updates also run on Python floats, ``xp`` being ``math``, for 0-d float64
    variables on numpy; a subclass's own ``_update`` always gets arrays.)

    Settings every optimizer takes (keywords, fixed when it is made):

    - ``weight_decay``: the L2 term ``weight_decay · w`` added to each gradient, as
      ``torch.optim`` does (``AdamW``: decoupled, ``w`` shrinks by ``lr·weight_decay``).
    - at most one of ``clipnorm`` (each gradient scaled to a 2-norm ≤ clipnorm),
      ``global_clipnorm`` (all gradients scaled together) and ``clipvalue`` (entries
      clamped), as ``torch.nn.utils.clip_grad_norm_``/``clip_grad_value_`` before the
      step; applied inside the step, so the program still outputs (and ``step`` still
      checks) the true gradients.
    - ``check_finite``: refuse (``NumericsError``, nothing written) a step whose loss or
      gradients hold a NaN or ±inf; ``fit`` turns it on (TerminateOnNaN).

    **Threads**: a step holds the optimizer's lock from reading the variables to
    writing them back, so steps of one optimizer from several threads are serialised
    and none is lost. Two optimizers updating the *same* variables are not coordinated,
    and one optimizer fits one ``fit`` at a time (a second, from another thread, is an
    OptimizerError). docs/threads.md has the whole contract.
    """

    #: AdamW's: weight decay applied to the value, not added to the gradient
    decoupled_weight_decay = False

    def __init__(self, variables, lr, *, weight_decay=0.0, clipnorm=None, clipvalue=None,
                 global_clipnorm=None, check_finite=False):
        self.variables = [variables] if isinstance(variables, Node) else list(variables)
        if not self.variables:
            raise OptimizerError("an optimizer needs at least one fg.variable to update"
                                 + at_user_line())
        for v in self.variables:
            if not isinstance(v, Node) or v.kind != "variable":
                raise UsageError(f"optimizers update fg.variable nodes, got {v!r}"
                                 + at_user_line())
            if v.dtype.kind not in "fc":
                raise UsageError(f"variable {v.name!r} has dtype {v.dtype}: only float (or "
                                 "complex) variables have gradients to follow; make it "
                                 "float, or leave it out of the optimizer" + at_user_line())
            if is_state(v):          # written by its declared update, never trained
                raise OptimizerError(f"variable {v.name!r} is state (a running estimate "
                                     f"its layer updates each run), not a parameter: "
                                     f"pass layer.variables, which leave it out")
        if len({v.id for v in self.variables}) != len(self.variables):
            raise OptimizerError("a variable is listed twice" + at_user_line())
        self.graph = same_graph(self.variables)
        if not callable(lr):
            check_real("lr", lr, 0.0, low_open=True)
        self.lr = lr
        self._weight_decay = check_real("weight_decay", weight_decay, 0.0)
        clips = {"clipnorm": clipnorm, "clipvalue": clipvalue,
                 "global_clipnorm": global_clipnorm}
        given = {k: check_real(k, v, 0.0, low_open=True) for k, v in clips.items() if v is not None}
        if len(given) > 1:
            raise OptimizerError(f"give at most one of clipnorm, clipvalue and "
                                 f"global_clipnorm, got {sorted(given)}")
        complex_ = [v.name for v in self.variables if v.dtype.kind == "c"]
        if "clipvalue" in given and complex_:   # numpy orders complex numbers by re, then im
            raise OptimizerError(f"clipvalue clamps real numbers; the variables {complex_} "
                                 f"are complex (torch's clip_grad_value_ refuses them too): "
                                 f"use clipnorm or global_clipnorm")
        self._clip = given or None
        #: check the loss and the gradients of every step before anything is written: a
        #: NaN or ±inf is a NumericsError and the step changes nothing (``fit`` turns it
        #: on through its ``TerminateOnNaN`` callback)
        self.check_finite = bool(check_finite)
        self._programs = {}          # training_program's cache
        self.iterations = 0
        self.state: list[dict] = [{} for _ in self.variables]
        self._lock = threading.RLock()
        self._fitting = None         # the thread running this optimizer's fit, if one is
        self._bound = weakref.WeakKeyDictionary()   # {program: its _Binding}, by _bind
        self._last = None            # (weak ref to the last program stepped, its _Binding)

    # the gradient settings are fixed when the optimizer is made (a step decides once
    # per program whether it may take SGD's written-out path)
    weight_decay = property(lambda self: self._weight_decay,
                            doc="L2 penalty: ``weight_decay · w`` is added to the gradient "
                                "(AdamW: ``w`` shrinks by ``lr · weight_decay`` instead)")
    clipnorm = property(lambda self: (self._clip or {}).get("clipnorm"),
                        doc="each gradient scaled to a 2-norm of at most this")
    clipvalue = property(lambda self: (self._clip or {}).get("clipvalue"),
                         doc="each gradient entry clamped to [−clipvalue, clipvalue]")
    global_clipnorm = property(lambda self: (self._clip or {}).get("global_clipnorm"),
                               doc="all gradients scaled together to a 2-norm of at most this")

    def learning_rate(self) -> float:
        """The rate of the next step: ``lr`` itself, or ``lr(iterations)`` for a schedule.
        A schedule value that is not a finite number ≥ 0 is an OptimizerError."""
        if not callable(self.lr):
            return float(self.lr)
        value = self.lr(self.iterations)
        try:
            return check_real("lr", value, 0.0)
        except (TypeError, OptimizerError) as e:
            raise OptimizerError(f"the learning-rate schedule {self.lr!r} returned {value!r} "
                                 f"at iteration {self.iterations}; no variable was changed "
                                 f"({e})") from None

    # -- binding a program ------------------------------------------------------------
    def _bind(self, prog) -> "_Binding":
        """Check, once per program, that its outputs are ``[loss, *grad(loss, variables)]``
        (then any extras): output 0 a float scalar of the variables' graph, and output
        ``1 + k`` the node ``fg.grad`` (or ``fg.adjoints``) returned as the gradient of
        that very loss w.r.t. ``variables[k]``. A gradient written out by hand is not
        recognised: compile ``fg.grad(loss, variables)``. The verdict is cached (weakly,
        per program) with what a step needs to know of the program; a refusal is not."""
        if not isinstance(prog, Program):
            raise UsageError(f"step takes a compiled fg.Program, got {type(prog).__name__}"
                             + at_user_line())
        bound = self._bound.get(prog)
        if bound is not None:
            return bound
        if prog.graph is not self.graph:
            raise GraphError(f"the program belongs to {prog.graph!r}, but the optimizer's "
                             f"variables to {self.graph!r}; compile the loss of this model")
        n, outs = len(self.variables), prog.outputs
        if len(outs) < n + 1:
            raise OptimizerError(
                f"the program must output the loss and then one gradient per variable "
                f"({n + 1} outputs: [loss, *fg.grad(loss, {self._names()})]), got {len(outs)}")
        loss = outs[0]
        if loss.shape != () or loss.dtype.kind != "f":
            raise OptimizerError(f"output 0 of the program, {loss.name!r}, must be the scalar "
                                 f"float loss; it has shape {loss.shape} and dtype {loss.dtype}")
        for k, (var, g) in enumerate(zip(self.variables, outs[1:n + 1])):
            if not is_gradient(g, loss, var):
                raise OptimizerError(
                    f"output {k + 1} of the program, {g.name!r}, is not the gradient of the "
                    f"loss {loss.name!r} w.r.t. variable {var.name!r}: the outputs must be "
                    f"[loss, *fg.grad(loss, {self._names()})], in the optimizer's order")
        bound = _Binding(self.variables, prog)
        self._bound[prog] = bound
        return bound

    def _names(self) -> str:
        return "[" + ", ".join(v.name for v in self.variables) + "]"

    # -- a step -------------------------------------------------------------------------
    def step(self, prog: Program, /, *args, **feed):
        """Run ``prog`` with the feeds, update every variable, return the loss.

        When ``prog`` has outputs beyond the loss and the gradients (metrics,
        predictions), returns ``[loss, *extras]`` instead. The step is atomic: every
        new value and state is computed before any is written, and the writes (the
        variables, the optimizer's state, ``iterations`` and the run's declared state
        updates, such as batch norm's running statistics) are one commit that an
        exception (a NaN schedule, Ctrl-C, MemoryError), wherever it lands, undoes:
        all of them are written, or none.
        """
        # The hot path of every training loop: what can be decided once per program
        # lives in its _Binding; per step, only the reads, the updates and the swap.
        # The lock (reentrant: a schedule may call back into the optimizer) is taken
        # without a ``with`` frame: release in ``finally`` is the same guarantee.
        lock = self._lock
        lock.acquire()
        try:
            last = self._last                      # the program of the previous step
            if last is None or last[0]() is not prog or last[1].variables is not self.variables:
                last = self._lookup(prog)
            bound = last[1]
            lr = self.lr
            if type(lr) is not float:    # a schedule (or an int): checked each step
                lr = self.learning_rate()
            if prog.state_updates:         # declared state: written with this step
                return self._stateful_step(prog, bound, last[2], args, feed, lr)
            outs = prog.call(args, feed)     # prog(*args, **feed), feeds not repacked
            if self.check_finite:
                self._refuse_non_finite(prog, bound, outs)
            if last[2] is not None:                # SGD on numpy: updates, commit, result
                return last[2](self, outs, lr)
            return self._step(bound, outs, lr)
        finally:
            lock.release()

    def _stateful_step(self, prog, bound, sgd, args, feed, lr):
        """A step of a program with declared state updates (flowgrad/state.py, batch
        norm's running statistics): the run's updates are written inside the step's
        commit, with the variables, the optimizer's state and its iteration count, so
        that a refused, failed or interrupted step writes none of them. The graph's
        state lock is held from the run to the commit, as a plain call holds it."""
        with commit_lock(prog.graph):
            outs, pending = prog.call_pending(args, feed)
            if self.check_finite:
                self._refuse_non_finite(prog, bound, outs)
            pending.prepare()                  # checked and old values read: no write
            if sgd is not None:
                return sgd(self, outs, lr, pending)
            return self._step(bound, outs, lr, pending)

    def _step(self, bound, outs, lr, pending=None):
        """The generic step after the program ran: every update, then the commit (with
        the run's declared state updates, a prepared ``state.Pending``, if any)."""
        if type(outs) is not list:
            outs = [outs]
        update = self._update
        states, t, dicts = self.state, self.iterations + 1, bound.dicts
        old = list(map(_value, dicts))         # also what a failed commit restores
        new_values, new_states = self._new_values(bound, update, old, outs, lr, t)
        if bound.materialize is not None:     # dask: compute them now, together
            new_values, new_states = bound.materialize((new_values, new_states))
        # commit: write every variable, the state, the count and the declared state
        # updates (references only); if interrupted anywhere, put the old ones back
        try:
            for d, new in zip(dicts, new_values):
                d["value"] = new
            self.state, self.iterations = new_states, t
            if pending is not None:
                pending.write()
        except BaseException:
            undo_fully(restore, self, dicts, old, states, t - 1, pending)
            raise
        return outs[0] if len(outs) == len(dicts) + 1 else [outs[0], *outs[len(dicts) + 1:]]

    def _lookup(self, prog):
        """``(weak ref to prog, its binding (made on its first step), SGD's written-out
        step or None)``, remembered as the last one. Whether this optimizer's update is
        SGD's own (not a subclass's or an instance's) is decided here, once per binding."""
        try:
            bound = self._bound.get(prog)
        except TypeError:            # not weak-referenceable: certainly no Program
            bound = None
        if bound is None or bound.variables is not self.variables:
            bound = self._rebind(prog)
        sgd = None
        if getattr(self._update, "__func__", None) is _SGD_UPDATE and bound.ndarray is not None \
                and not self._weight_decay and self._clip is None and not bound.half:
            if bound.sgd is None:        # written once per binding, for SGD only
                bound.sgd = sgd_function(bound)
            sgd = bound.sgd
        self._last = last = (weakref.ref(prog), bound, sgd)
        return last

    def _refuse_non_finite(self, prog, bound, outs):
        """A NumericsError, before anything is written, when the loss or a gradient of
        this step holds a NaN or ±inf (``check_finite``)."""
        bad = optim_grads.first_non_finite(outs[0], outs[1:bound.n + 1], bound.xp)
        if bad is None:
            return
        k, count = bad
        if k < 0:
            what = f"the loss {prog.outputs[0].name!r} is {float(outs[0])!r}"
        else:
            size = math.prod(bound.variables[k].shape)
            what = (f"the gradient w.r.t. variable {bound.variables[k].name!r} holds "
                    f"{count} non-finite entr{'y' if count == 1 else 'ies'} (of {size})")
        raise NumericsError(f"step {self.iterations + 1}: {what}; the step was refused and "
                            f"no variable or state was changed (lower the learning rate, "
                            f"clip the gradients, or look for a log/division of 0 in the "
                            f"loss: fg.detect_anomaly() names the node)",
                            node=prog.outputs[k + 1])

    def _gradients(self, bound, old, outs):
        """The gradients the update rule sees: the program's, clipped, plus the L2 term
        ``weight_decay · w`` (not for a decoupled decay, which the rule applies)."""
        grads = outs[1:bound.n + 1]
        if self._clip is not None:
            grads = optim_grads.clip(grads, bound.xp, **self._clip)
        wd = 0.0 if self.decoupled_weight_decay else self._weight_decay
        if wd:
            asarray, ndarray = bound.asarray, bound.ndarray
            grads = [g + wd * (v if type(v) is ndarray else asarray(v))
                     for g, v in zip(grads, old)]
        return grads

    def _new_values(self, bound, update, old, outs, lr, t):
        """Every variable's new value and state, none written yet."""
        if self._clip is not None or self._weight_decay:
            outs = [outs[0], *self._gradients(bound, old, outs)]
        states = self.state
        xp, asarray, ndarray = bound.xp, bound.asarray, bound.ndarray
        dtypes, n = bound.dtypes, bound.n
        new_values, new_states = [None] * n, [None] * n
        built_in = getattr(update, "__func__", None) in _FLOAT_SAFE
        floats = bound.floats if built_in else ()
        pairs = bound.complex if built_in else ()
        for k in range(n):
            value = old[k]
            if floats and floats[k]:
                done = _float_update(update, value, outs[k + 1], states[k], lr, t)
                if done is not None:
                    new_values[k], new_states[k] = done
                    continue
            state = states[k]
            if type(value) is not ndarray:     # ndarray: None unless numpy's own
                value = asarray(value)
                if ndarray is None and state:  # a loaded state is numpy: on the backend
                    state = {key: asarray(a) for key, a in state.items()}
            if pairs and pairs[k]:
                new, new_states[k] = _complex_update(update, value, outs[k + 1], state,
                                                     lr, t, xp)
            elif built_in and dtypes[k] == np.float16:
                new, new_states[k] = half_update(update, value, outs[k + 1], state, lr, t, xp)
            else:
                new, new_states[k] = update(value, outs[k + 1], state, lr, t, xp)
            dt = new.dtype
            if dt is not dtypes[k] and dt != dtypes[k]:
                new = new.astype(dtypes[k])
            if type(new) is not ndarray and ndarray is not None:
                new = np.asarray(new)      # 0-d arithmetic gives a numpy scalar: an array
            new_values[k] = new
        return new_values, new_states

    def _rebind(self, prog) -> "_Binding":
        """Bind ``prog`` for the first time, or again when ``opt.variables`` was replaced
        since its binding was made (the binding is per variables list)."""
        try:
            self._bound.pop(prog, None)
        except TypeError:
            pass
        if len(self.state) != len(self.variables):
            raise OptimizerError(f"the optimizer has {len(self.state)} states for "
                                 f"{len(self.variables)} variables: call reset() after "
                                 "changing its variables")
        return self._bind(prog)

    def training_program(self, loss: Node, extras=(), backend=None) -> Program:
        """The program ``[loss, *fg.grad(loss, variables), *extras]`` that ``step`` takes,
        made once per loss, extras, backend and variables and reused after: calling
        ``fit`` or ``minimize`` again adds no node to the graph and compiles nothing."""
        with self._lock:
            return self._training_program(loss, list(extras), get_backend(backend))

    def _training_program(self, loss, extras, backend):
        # keyed by the nodes' ids: each entry holds its nodes, so no id is reused
        variables = tuple(map(id, self.variables))
        key = (id(loss), variables, tuple(map(id, extras)), backend)
        prog = self._programs.get(key)
        if prog is None:
            made = self._programs.get((id(loss), variables))
            if made is None:         # the gradient nodes, shared by every backend/extras
                made = self._programs[(id(loss), variables)] = (
                    loss, grad(loss, self.variables))
            prog = self._programs[key] = Program([loss, *made[1], *extras], backend)
        return prog

    def minimize(self, loss: Node, backend=None, extras=()) -> "Trainer":
        """A callable ``train(**feed)`` that takes one step per call and returns the loss
        (or ``[loss, *extras]`` when ``extras`` nodes are given)."""
        return Trainer(self, self.training_program(loss, extras, backend))

    def fit(self, loss: Node, data: dict, epochs: int = 1, batch_size=32, **options):
        """Train on ``data`` ({placeholder: array}) for ``epochs`` of shuffled mini-batches;
        returns a :class:`flowgrad.training.fit.History`. Options: ``val`` (feeds evaluated after
        each epoch), ``metrics`` ({name: scalar node}), ``callbacks`` (``EarlyStopping``,
        ``ModelCheckpoint``, ``ReduceLROnPlateau`` …), ``training`` (a boolean placeholder
        fed True, and False for validation), ``shuffle``, ``seed``, ``backend``,
        ``verbose``, ``val_batch_size``, ``terminate_on_nan`` (default True: a NaN or
        ±inf loss or gradient is a NumericsError naming the epoch and batch, raised
        before that step writes anything). The programs are made once per loss, metrics
        and backend (``training_program``), so calling fit again adds nothing to the
        graph. See flowgrad/training/fit.py.

        One fit at a time per optimizer: a fit of it already running in another thread
        is an OptimizerError (docs/threads.md)."""
        from .fit import fit
        me = threading.get_ident()
        with self._lock:
            # a fit sets and restores the optimizer's check_finite, and its callbacks
            # read and change lr and the variables: two fits at once left check_finite
            # set for good and interleaved their epochs' steps into one count
            outer = self._fitting
            if outer is not None and outer != me:
                raise OptimizerError(
                    f"{self!r} is already fitting in another thread; one optimizer "
                    "trains one fit at a time (give each thread its own model and "
                    "optimizer, or call step() from several threads)" + at_user_line())
            self._fitting = me
        try:
            return fit(self, loss, data, epochs=epochs, batch_size=batch_size, **options)
        finally:
            if outer is None:        # the outermost fit of this thread
                self._fitting = None

    # -- the state as data (flowgrad/training/optim_state.py) --------------------------
    lock = property(lambda self: self._lock,
                    doc="the optimizer's (reentrant) lock, which a step holds from reading "
                        "the variables to writing them: hold it to read the values and the "
                        "state of one step (``fg.save_variables(..., optimizer=)`` does)")

    #: the keys of a variable's state after a step (None: whatever ``_update`` writes,
    #: each an array of the variable's shape and dtype)
    _state_slots = None

    def _state_settings(self) -> dict:
        """The settings that decide what the state holds: a state saved under other
        ones is refused by ``load_state_dict``."""
        return {}

    def state_dict(self) -> dict:
        """The optimizer's complete state as plain data, as ``torch.optim``'s
        ``state_dict()``: ``{"optimizer": class name, "iterations": steps taken (Adam's
        t, a schedule's position), "lr": the numeric rate or None for a schedule,
        "settings": {the settings that decide the state's layout}, "state": {variable
        name: {slot: array}}}`` (LBFGS adds ``"memory"``). The arrays are numpy copies,
        each of its variable's shape and dtype, keyed by the variable's name (not its
        id), so a fresh graph built by the same code can load it. See
        flowgrad/training/optim_state.py."""
        from . import optim_state
        with self._lock:
            d = optim_state.snapshot(self, self._state_settings(), self._state_slots)
            d.update(self._extra_state())
        return d

    def load_state_dict(self, state: dict) -> None:
        """Make ``state`` (what ``state_dict`` returned, maybe by another optimizer of
        the same kind and settings over variables of the same names, shapes and
        dtypes) this optimizer's state: moments, step count and — when both rates are
        numbers — the learning rate (which ``ReduceLROnPlateau`` may have lowered; a
        schedule of this optimizer is kept, and resumes at the loaded step count).
        Other settings (betas, eps, weight decay, clipping) are this optimizer's own.
        Everything is checked first (a ``CheckpointError`` changes nothing), then
        written at once. The variables' values are not part of it: load them with
        ``fg.load_variables``, or both with ``fg.load_variables(..., optimizer=opt)``."""
        self.prepared_state(state).commit()

    def prepared_state(self, state: dict):
        """``state`` checked against this optimizer, not yet written: an
        ``optim_state.PreparedState`` whose ``commit()`` writes it (used by
        ``fg.load_variables`` to write the variables and the state as one)."""
        from . import optim_state
        extra = self._extra_state_keys()
        prepared = optim_state.prepare(self, state, self._state_settings(),
                                       self._state_slots, extra)
        prepared.update(self._checked_extra_state({k: state[k] for k in extra}))
        return prepared

    def _extra_state_keys(self) -> tuple:
        """The keys a subclass adds to the state dict."""
        return ()

    def _extra_state(self) -> dict:
        """The subclass's part of ``state_dict`` (called holding the lock)."""
        return {}

    def _checked_extra_state(self, extra: dict) -> dict:
        """{attribute: new value} from the subclass's part of a state dict, checked."""
        return {}

    def state_file_layout(self) -> dict:
        """{(key, name): (largest shape, dtype)} of the arrays a subclass adds to its
        state dict (LBFGS's memory): ``fg.load_variables`` checks a file's headers
        against it before reading their data. Empty for the other optimizers."""
        return {}

    def reset(self):
        """Forget the state (moments, iteration count); variables keep their values."""
        with self._lock:
            self.iterations = 0
            self.state = [{} for _ in self.variables]

    def _update(self, value, g, state, lr, t, xp):
        raise NotImplementedError

    def __repr__(self):
        return f"<flowgrad.training.optim.{type(self).__name__} {self._names()} after {self.iterations} steps>"


class _Binding:
    """What a step needs of one program, decided when the program is first bound: the
    variables' data dicts (read and written directly; the setter's checks are for the
    user's assignments), their dtypes, and the backend's hooks. It holds no reference
    to the program (the optimizer's cache is weak in it)."""

    __slots__ = ("variables", "n", "dicts", "dtypes", "xp", "asarray", "ndarray",
                 "materialize", "floats", "complex", "half", "sgd")

    def __init__(self, variables, prog):
        backend = prog.backend
        self.variables = variables
        self.n = len(variables)
        self.dicts = tuple(v.more for v in variables)   # (a leaf's value lives in .more)
        self.dtypes = tuple(v.dtype for v in variables)
        self.xp, self.asarray = backend.xp, backend.asarray
        # a numpy ndarray needs no conversion on the numpy backend (asarray is the
        # identity there); on any other backend every read goes through asarray
        self.ndarray = np.ndarray if backend.in_place else None
        self.materialize = getattr(backend, "materialize", None)
        # variables whose update may run on Python floats (see _float_update): a 0-d
        # float64 variable and gradient, on numpy
        f64 = np.dtype(np.float64)
        self.floats = tuple(
            self.ndarray is not None and v.shape == () and v.dtype == f64
            and g.shape == () and g.dtype == f64
            for v, g in zip(variables, prog.outputs[1:]))
        # complex variables, whose built-in updates run on (real, imaginary) pairs
        self.complex = tuple(v.dtype.kind == "c" for v in variables)
        # float16 variables, whose built-in updates run in float32 (half_update): SGD's
        # written-out step (float16 arithmetic) is not used where there is one
        self.half = np.dtype(np.float16) in self.dtypes
        self.sgd = None              # SGD's written-out step (Optimizer._lookup makes it)


def _float_update(update, value, g, state, lr, t):
    """The update of a 0-d float64 variable on Python floats, with ``math`` as its ``xp``:
    ten times cheaper than on 0-d arrays, and the same bits (IEEE double arithmetic,
    correctly rounded sqrt), for the built-in updates (``_FLOAT_SAFE``), which use only
    arithmetic and ``xp.sqrt``. Returns (new value, new state) — a 0-d array and
    np.float64 state, as the array path leaves them — or None where Python would raise
    (``0/0``) or a result is not finite: then the array path runs, with numpy's values
    and warnings."""
    try:
        if state:
            state = {key: float(a) for key, a in state.items()}
        new, new_state = update(float(value), float(g), state, lr, t, math)
    except (ArithmeticError, ValueError):
        return None
    if not _isfinite(new):
        return None
    for a in new_state.values():
        if not _isfinite(a):
            return None
    return _array(new), {key: _float64(a) for key, a in new_state.items()} if new_state \
        else new_state


def half_update(update, value, g, state, lr, t, xp):
    """A built-in update of a float16 variable, computed in float32 with the new value
    and state rounded to float16 once, as torch's CPU kernels compute each half step
    (opmath): in float16, g² of a gradient past 255 was inf, so Adam's, RMSProp's and
    Adagrad's step m/√s was 0 and the variable never moved (torch's moves); float32 also
    keeps eps = 1e-8 (0 in float16) from letting 0/0 make a NaN where g is 0."""
    def wide(a):
        return a.astype(np.float32)
    new, new_state = update(wide(value), wide(g), {key: wide(a) for key, a in state.items()},
                            lr, t, xp)
    return new, {key: a.astype(np.float16) for key, a in new_state.items()}


def _complex_update(update, value, g, state, lr, t, xp):
    """A built-in update of a complex variable, as ``torch.optim`` does it
    (``view_as_real``): on the real and imaginary parts as independent real numbers.
    The rules square the gradient entry-wise (Adam's, RMSProp's and Adagrad's g·g),
    which on complex numbers would be (re² − im²) + 2i·re·im instead of re² and im²
    apart. The state stays complex, in the variable's dtype (as torch keeps it)."""
    def pairs(a):
        return xp.stack([a.real, a.imag])

    def joined(r):
        return (r[0] + 1j * r[1]).astype(value.dtype)
    new, new_state = update(pairs(value), pairs(g), {key: pairs(a) for key, a in state.items()},
                            lr, t, xp)
    return joined(new), {key: joined(a) for key, a in new_state.items()}


def restore(opt, dicts, old, states, iterations, pending):
    """A step's commit undone: the variables' old values (``dicts``, ``old``), the
    optimizer's state (``states``; None where the step did not write it, as SGD's
    written-out step) and ``iterations``, and ``pending``'s state updates (or None).
    Reference stores only, so that ``undo_fully`` may run it again."""
    if pending is not None:
        pending.undo()
    store_values(dicts, old)
    if states is not None:
        opt.state = states
    opt.iterations = iterations


_isfinite, _array, _float64 = math.isfinite, np.array, np.float64
_value = operator.itemgetter("value")


class Trainer:
    """``opt.minimize(loss)``: the compiled program and its optimizer, one step per call."""

    def __init__(self, opt, prog):
        self.optimizer, self.program = opt, prog

    def __call__(self, /, *args, **feed):
        return self.optimizer.step(self.program, *args, **feed)

    def __repr__(self):
        from .fit import describe_trainer
        return describe_trainer(self)


# the update rules build on Optimizer and check_real, so they come after them
from .optim_rules import SGD, Adagrad, Adam, AdamW, Momentum, RMSProp  # noqa: E402
from .lbfgs import LBFGS  # noqa: E402

#: updates written with arithmetic and ``xp.sqrt`` only, safe on Python floats
_FLOAT_SAFE = frozenset({SGD._update, Momentum._update, Adam._update, AdamW._update,
                         RMSProp._update, Adagrad._update})
_SGD_UPDATE = SGD._update       # the update sgd_function writes out


def __dir__():
    # the public names only: dir(fg.optim) shows no np, math or threading
    return sorted(__all__)
