"""A step's commit is all or nothing, wherever an interruption lands in it.

Every write of a commit (each variable's value, the optimizer's state and iteration
count, L-BFGS's memory, each declared state update: batch norm's running mean and
variance) is counted; a KeyboardInterrupt is raised at the k-th one, just before or just
after it, for every k. Afterwards the model (variables, state, running statistics,
iteration count) must equal, bit for bit, the model of an uninterrupted run after the
same number of steps (the step either happened entirely or not at all), and the next
step must carry on as the uninterrupted run does. The uninterrupted run itself is
checked against torch (float64) and the closed form of the running statistics.
"""
import numpy as np
import pytest
import torch

import flowgrad as fg

ROWS, FEATURES, OUT = 8, 3, 2
_rng = np.random.default_rng(27)
BATCHES = [_rng.standard_normal((ROWS, FEATURES)) * [1.0, 2.0, 3.0] + 4.0 for _ in range(3)]
TARGET = _rng.standard_normal((ROWS, OUT))
W0 = _rng.standard_normal((FEATURES, OUT))


class Interrupter:
    """Counts the commit's writes; raises KeyboardInterrupt at the ``k``-th, before or
    after that write (``after``), and before each write whose number is in ``again``
    (a second Ctrl-C, landing in the restoring writes)."""

    def __init__(self, k=0, after=False, again=()):
        self.k, self.after, self.again, self.count = k, after, set(again), 0

    def tick(self, write):
        self.count += 1
        if self.count in self.again:
            raise KeyboardInterrupt(f"again, before write {self.count}")
        if self.count != self.k:
            write()
        elif self.after:
            write()
            raise KeyboardInterrupt(f"after write {self.k}")
        else:
            raise KeyboardInterrupt(f"before write {self.k}")


class CountingDict(dict):
    """A leaf's ``more`` dict whose ``value`` writes go through an Interrupter."""

    __slots__ = ("counter",)

    def __setitem__(self, key, value):
        counter = getattr(self, "counter", None)
        if key == "value" and counter is not None:
            counter.tick(lambda: dict.__setitem__(self, key, value))
        else:
            dict.__setitem__(self, key, value)


#: the optimizer attributes a commit writes
COMMITTED = frozenset({"state", "iterations", "memory", "converged"})


def counting(cls):
    """``cls`` whose committed attributes are written through its ``counter``."""
    def __setattr__(self, name, value):
        counter = self.__dict__.get("counter")
        if name in COMMITTED and counter is not None:
            counter.tick(lambda: object.__setattr__(self, name, value))
        else:
            object.__setattr__(self, name, value)
    return type("Counting" + cls.__name__, (cls,), {"__setattr__": __setattr__})


OPTIMIZERS = {
    "SGD": (fg.optim.SGD, {"lr": 0.1}),                 # the written-out step
    "Momentum": (fg.optim.Momentum, {"lr": 0.1, "momentum": 0.9}),
    "Adam": (fg.optim.Adam, {"lr": 0.05}),
    "LBFGS": (fg.optim.LBFGS, {"lr": 1.0, "max_eval": 4}),
}


class Model:
    """x -> BatchNorm -> x @ w -> squared error, plus a 0-d float64 variable ``c``
    (the optimizers' Python-float path), in a graph of its own."""

    def __init__(self, opt=None, backend="numpy", counted=False):
        self.graph = fg.Graph()
        with self.graph:
            self.x = fg.placeholder("x", shape=(None, FEATURES))
            self.bn = fg.nn.BatchNorm(FEATURES)
            self.w = fg.variable(W0.copy(), name="w")
            self.c = fg.variable(0.5, name="c")
            y = self.bn(self.x) @ self.w
            self.loss = fg.mean((y - TARGET) ** 2) + (self.c - 2.0) ** 2
            self.variables = self.bn.variables + [self.w, self.c]
            self.leaves = self.variables + self.bn.state
            self.counter = None
            if counted:                 # before the first step binds the leaves' dicts
                for v in self.leaves:
                    v.more = CountingDict(v.more)
            if opt is not None:
                cls, kwargs = OPTIMIZERS[opt]
                self.opt = (counting(cls) if counted else cls)(self.variables, **kwargs)
                self.prog = self.opt.training_program(self.loss, backend=backend)
            else:
                self.prog = fg.compile(self.loss, backend=backend)

    def arm(self, counter):
        """Send every counted write through ``counter`` (None: straight through)."""
        for v in self.leaves:
            v.more.counter = counter
        if hasattr(self, "opt"):
            object.__setattr__(self.opt, "counter", counter)

    def step(self, X):
        with self.graph:
            if hasattr(self, "opt"):
                return self.opt.step(self.prog, x=X)
            return self.prog(x=X)

    def snapshot(self):
        """Every value a step writes, flat: (name, value) pairs."""
        got = [(v.name.rsplit("/", 1)[-1], v.value) for v in self.leaves]
        opt = getattr(self, "opt", None)
        if opt is not None:
            got.append(("iterations", opt.iterations))
            got += [(f"state{k}.{key}", a) for k, st in enumerate(opt.state)
                    for key, a in sorted(st.items())]
            if isinstance(opt, fg.optim.LBFGS):
                got += [("converged", opt.converged), ("h_diag", opt.memory["h_diag"]),
                        ("x", opt.memory["x"]), ("g", opt.memory["g"]),
                        ("pairs", len(opt.memory["pairs"]))]
        return [(name, None if a is None else np.array(a, copy=True)) for name, a in got]


def _same(got, want):
    try:
        assert_same(got, want)
    except AssertionError:
        return False
    return True


def assert_same(got, want, where=""):
    assert [n for n, _ in got] == [n for n, _ in want], where
    for (name, a), (_, b) in zip(got, want):
        if a is None or b is None:
            assert a is b, f"{where}: {name}"
        else:
            assert a.dtype == b.dtype and np.array_equal(a, b), f"{where}: {name} {a} != {b}"


def reference(opt, backend, steps):
    """The snapshots of an uninterrupted model: before any step, then after each."""
    model = Model(opt, backend)
    snaps = [model.snapshot()]
    for s in range(steps):
        model.step(BATCHES[s % len(BATCHES)])
        snaps.append(model.snapshot())
    return snaps


# -- the uninterrupted run, against torch -------------------------------------------------------

def test_the_reference_steps_match_torch_and_the_closed_form():
    """Adam over gamma, beta, w and c with batch norm's running statistics: torch's
    BatchNorm1d and torch.optim.Adam, float64, the same three batches."""
    snaps = reference("Adam", "numpy", 3)
    bn = torch.nn.BatchNorm1d(FEATURES, momentum=0.1, eps=1e-5, dtype=torch.float64)
    w = torch.tensor(W0, requires_grad=True)
    c = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    topt = torch.optim.Adam([bn.weight, bn.bias, w, c], lr=0.05)
    mean, var = np.zeros(FEATURES), np.ones(FEATURES)
    for X in BATCHES:
        topt.zero_grad()
        y = bn(torch.tensor(X)) @ w
        (((y - torch.tensor(TARGET)) ** 2).mean() + (c - 2.0) ** 2).backward()
        topt.step()
        mean = 0.9 * mean + 0.1 * X.mean(axis=0)
        var = 0.9 * var + 0.1 * X.var(axis=0, ddof=1)
    got = dict(snaps[-1])
    want = {"gamma": bn.weight, "beta": bn.bias, "w": w, "c": c,
            "running_mean": bn.running_mean, "running_var": bn.running_var}
    for name, t in want.items():
        np.testing.assert_allclose(got[name], t.detach().numpy(), rtol=1e-10, atol=1e-13,
                                   err_msg=name)
    np.testing.assert_allclose(got["running_mean"], mean, rtol=1e-12)
    np.testing.assert_allclose(got["running_var"], var, rtol=1e-12)
    assert got["iterations"] == 3
    for k, p in enumerate([bn.weight, bn.bias, w, c]):
        st = topt.state[p]
        np.testing.assert_allclose(got[f"state{k}.m"], st["exp_avg"].numpy(), rtol=1e-10,
                                   atol=1e-15)
        np.testing.assert_allclose(got[f"state{k}.s"], st["exp_avg_sq"].numpy(), rtol=1e-10,
                                   atol=1e-15)


# -- optimizer steps, interrupted at every write --------------------------------------------------

#: writes of one step's commit: 4 variables (gamma, beta, w, c), 2 running statistics
#: and the optimizer's iteration count (SGD), + its state (Momentum, Adam), + memory and
#: converged (L-BFGS)
WRITES = {"SGD": 7, "Momentum": 8, "Adam": 8, "LBFGS": 9}


def _interrupted_steps(opt, backend, after):
    model = Model(opt, backend, counted=True)
    counter = Interrupter()                  # counts only
    model.arm(counter)
    model.step(BATCHES[0])
    # SGD off numpy takes the generic step, which writes its (empty) state too
    n = WRITES[opt] + (opt == "SGD" and backend != "numpy")
    assert counter.count == n                # every write of the commit is seen
    snaps = reference(opt, backend, n + 3)
    assert_same(model.snapshot(), snaps[1], "one step")
    done = 1
    for k in range(1, n + 1):
        model.arm(Interrupter(k, after))
        held = [v.value for v in model.leaves]
        with pytest.raises(KeyboardInterrupt):
            model.step(BATCHES[done % len(BATCHES)])
        assert model.opt.iterations in (done, done + 1)
        if model.opt.iterations == done:     # undone: the very arrays are back, no copy
            assert all(v.value is a for v, a in zip(model.leaves, held))
        done = model.opt.iterations
        assert_same(model.snapshot(), snaps[done], f"interrupted at write {k}")
    model.arm(None)
    for _ in range(2):                       # and it carries on as if never interrupted
        model.step(BATCHES[done % len(BATCHES)])
        done += 1
        assert_same(model.snapshot(), snaps[done], "after the interruptions")


@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
def test_an_interrupted_step_writes_all_or_nothing(opt, after):
    _interrupted_steps(opt, "numpy", after)


@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
@pytest.mark.parametrize("opt", ["SGD", "Adam"])
def test_an_interrupted_dask_step_writes_all_or_nothing(opt, after):
    pytest.importorskip("dask")
    _interrupted_steps(opt, "dask", after)


def test_without_state_updates_the_step_is_atomic_too():
    """A program whose loss computes no batch statistics: variables and optimizer only."""
    model = Model(counted=True)
    with model.graph:
        opt = model.opt = counting(fg.optim.Adam)([model.w, model.c], lr=0.1)
        prog = opt.training_program(fg.sum(model.w) + model.c * model.c)
    assert not prog.state_updates
    before = model.snapshot()
    for k in range(1, 5):                    # 2 variables, the state, the iteration count
        model.arm(Interrupter(k, after=True))
        with pytest.raises(KeyboardInterrupt):
            opt.step(prog)
        assert_same(model.snapshot(), before, f"interrupted at write {k}")
    model.arm(None)
    opt.step(prog)
    # Adam's first step on a gradient of ones: w − lr·1/(1 + eps)
    np.testing.assert_allclose(model.w.value, W0 - 0.1 / (1 + 1e-8), rtol=1e-14)
    assert opt.iterations == 1


@pytest.mark.parametrize("opt", ["SGD", "Adam", "LBFGS"])
def test_a_second_interruption_inside_the_undo_still_undoes_everything(opt):
    """Ctrl-C at write k, then again at each write of the undo that follows: the undo
    starts over (state.undo_fully), and the model holds the step before, the very
    arrays it held."""
    model = Model(opt, counted=True)
    model.step(BATCHES[0])
    n = WRITES[opt]
    want = model.snapshot()
    for k in range(1, n + 1):
        for j in range(1, n + 3):             # the undo stores n or n + 1 values
            model.arm(Interrupter(k, after=True, again={k + j, k + j + 2}))
            held = [v.value for v in model.leaves]
            with pytest.raises(KeyboardInterrupt, match=f"after write {k}"):
                model.step(BATCHES[1])
            assert all(v.value is a for v, a in zip(model.leaves, held))
            assert_same(model.snapshot(), want, f"interrupted at {k}, again at {k + j}")
    model.arm(None)
    model.step(BATCHES[1])
    assert_same(model.snapshot(), reference(opt, "numpy", 2)[2], "after the interruptions")


@pytest.mark.parametrize("codegen", [True, False])
def test_a_second_interruption_inside_a_calls_undo(codegen):
    model = Model(counted=True)
    with model.graph:
        model.prog = fg.compile(model.loss, codegen=codegen)
    for k, j in [(1, 1), (1, 2), (2, 1), (2, 2)]:
        model.arm(Interrupter(k, after=True, again={k + j}))
        with pytest.raises(KeyboardInterrupt, match=f"after write {k}"):
            model.step(BATCHES[0])
        assert_same(model.snapshot(), reference(None, "numpy", 0)[0], f"{k}, {j}")


# -- plain program calls that write state ---------------------------------------------------------

@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
@pytest.mark.parametrize("codegen", [True, False])
def test_an_interrupted_call_writes_both_statistics_or_neither(codegen, after):
    model = Model(counted=True)
    if not codegen:
        with model.graph:
            model.prog = fg.compile(model.loss, codegen=False)
    snaps = reference(None, "numpy", 4)
    done = 0
    for k in (1, 2):                         # running mean, running var
        model.arm(Interrupter(k, after))
        with pytest.raises(KeyboardInterrupt):
            model.step(BATCHES[done % len(BATCHES)])
        got = model.snapshot()
        if not _same(got, snaps[done]):      # the call happened entirely, or not at all
            done += 1
        assert_same(got, snaps[done], f"interrupted at write {k}")
    model.arm(None)
    for _ in range(2):
        model.step(BATCHES[done % len(BATCHES)])
        done += 1
        assert_same(model.snapshot(), snaps[done], "after the interruptions")


# -- fit -------------------------------------------------------------------------------------------

class Snapshots(fg.Callback):
    def __init__(self, model):
        self.model, self.snaps = model, [model.snapshot()]

    def on_batch_end(self, batch, logs, state):
        self.snaps.append(self.model.snapshot())


def test_fit_interrupted_in_a_commit_leaves_whole_steps_and_resumes_exactly():
    """fit over 3 batches, interrupted at each write of the second batch's step: the
    model holds 1 or 2 whole steps, and fitting the remaining rows ends where the
    uninterrupted fit ends."""
    data = np.concatenate(BATCHES[:3])
    ref = Model("Adam")
    cb = Snapshots(ref)
    ref.opt.fit(ref.loss, {ref.x: data}, batch_size=ROWS, shuffle=False, callbacks=[cb],
                verbose=False)
    snaps = cb.snaps
    assert len(snaps) == 4
    model = Model("Adam", counted=True)
    start = model.snapshot()
    assert_same(start, snaps[0])
    initial = [v.value for v in model.leaves]
    n = WRITES["Adam"]
    for k in range(n + 1, 2 * n + 1):
        for after in (False, True):
            model.arm(None)                  # back to the start, uncounted
            for v, a in zip(model.leaves, initial):
                v.value = a
            model.opt.reset()
            model.arm(Interrupter(k, after))
            with pytest.raises(KeyboardInterrupt):
                model.opt.fit(model.loss, {model.x: data}, batch_size=ROWS, shuffle=False,
                              verbose=False)
            done = model.opt.iterations
            assert done in (1, 2)
            assert_same(model.snapshot(), snaps[done], f"fit interrupted at write {k}")
            model.arm(None)
            model.opt.fit(model.loss, {model.x: data[done * ROWS:]}, batch_size=ROWS,
                          shuffle=False, verbose=False)
            assert_same(model.snapshot(), snaps[3], f"fit resumed after write {k}")


# -- threads: an optimizer step and plain calls of one graph --------------------------------------

def test_steps_and_plain_calls_from_two_threads_lose_no_running_update():
    """One thread takes optimizer steps, another calls an evaluation program that also
    updates the running statistics, all on one batch: the step holds the graph's state
    lock from its run to its commit, so the statistics move exactly once per call."""
    import sys
    import threading
    X, m, n = BATCHES[0], 0.01, 150
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, FEATURES))
        bn = fg.nn.BatchNorm(FEATURES, momentum=m)    # slow: every lost update shows
        y = bn(x)
        train = fg.optim.SGD(bn.variables, lr=1e-3).minimize(fg.mean(y ** 2))
        other = fg.compile(fg.sum(y))
        train(x=X)
        other(x=X)
        start = threading.Barrier(2)

        def work(f):
            start.wait()
            for _ in range(n):
                f(x=X)
        old = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)
        try:
            threads = [threading.Thread(target=work, args=(f,)) for f in (train, other)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
        finally:
            sys.setswitchinterval(old)
    calls = 2 * n + 2
    mean, var = np.zeros(FEATURES), np.ones(FEATURES)
    for _ in range(calls):
        mean = (1 - m) * mean + m * X.mean(axis=0)
        var = (1 - m) * var + m * X.var(axis=0, ddof=1)
    np.testing.assert_allclose(bn.running_mean.value, mean, rtol=1e-12)
    np.testing.assert_allclose(bn.running_var.value, var, rtol=1e-12)


# -- writes that belong together outside a step: restore_best, load_variables ---------------------

def test_early_stopping_restores_the_running_statistics_of_the_best_epoch():
    """restore_best puts back the weights of the best epoch, and the running statistics
    those weights were trained with (they were left at the last epoch's). "loss" in
    mode "max" makes epoch 0 the best: after it, the statistics have seen its 3 batches,
    in closed form."""
    data = np.concatenate(BATCHES)
    model = Model("Adam")
    cb = fg.EarlyStopping("loss", mode="max", patience=1)
    epochs = []

    class Epochs(fg.Callback):
        def on_epoch_end(self, epoch, logs, state):
            epochs.append(model.snapshot())
    model.opt.fit(model.loss, {model.x: data}, epochs=4, batch_size=ROWS, shuffle=False,
                  callbacks=[Epochs(), cb], verbose=False)
    assert cb.best_epoch == 0 and len(epochs) == 3             # stopped after epoch 2
    got = dict(model.snapshot())
    want = dict(epochs[0])
    for name in ("gamma", "beta", "w", "c", "running_mean", "running_var"):
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    mean, var = np.zeros(FEATURES), np.ones(FEATURES)
    for X in BATCHES:
        mean = 0.9 * mean + 0.1 * X.mean(axis=0)
        var = 0.9 * var + 0.1 * X.var(axis=0, ddof=1)
    np.testing.assert_allclose(got["running_mean"], mean, rtol=1e-12)
    np.testing.assert_allclose(got["running_var"], var, rtol=1e-12)


@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
def test_an_interrupted_load_changes_no_variable(tmp_path, after):
    model = Model("Adam", counted=True)
    path = fg.save_variables(tmp_path / "v.npz", model.graph)
    model.step(BATCHES[0])                   # now the values differ from the file's
    want = model.snapshot()
    for k in range(1, len(model.leaves) + 1):
        model.arm(Interrupter(k, after, again={k + 2}))
        with pytest.raises(KeyboardInterrupt):
            fg.load_variables(path, model.graph)
        assert_same(model.snapshot(), want, f"interrupted at write {k}")
    model.arm(None)
    assert len(fg.load_variables(path, model.graph)) == len(model.leaves)
    for v, a in zip(model.leaves, reference("Adam", "numpy", 0)[0]):
        np.testing.assert_array_equal(v.value, a[1])


def test_assign_together_checks_everything_before_writing():
    from flowgrad.state import assign_together
    model = Model()
    w0, c0 = model.w.value, model.c.value
    with pytest.raises(fg.FeedError, match="'c' has shape"):    # the last value is bad
        assign_together([model.w, model.c], [W0 + 1.0, np.zeros(1)])
    assert model.w.value is w0 and model.c.value is c0
    with pytest.raises(fg.UsageError, match="2 variables but 1 values"):
        assign_together([model.w, model.c], [W0])
    with pytest.raises(fg.UsageError, match="only variables"):
        assign_together([model.x], [BATCHES[0]])
    assign_together([model.w, model.c], [W0 + 1.0, 3])
    np.testing.assert_array_equal(model.w.value, W0 + 1.0)
    assert model.c.value.dtype == np.float64 and float(model.c.value) == 3.0
