"""Resuming training: an optimizer's complete state (moments, step count, numeric
learning rate, L-BFGS memory) saved with the variables and loaded into a fresh graph
gives, bitwise, the run that never stopped; torch.optim's state_dict carries the same
numbers; hostile or mismatched files are CheckpointErrors that change nothing."""
import io
import zipfile

import numpy as np
import pytest

import flowgrad as fg

RNG = np.random.default_rng(3)
X, Y = RNG.normal(size=(16, 3)), RNG.normal(size=(16, 2))
INIT = {"W": RNG.normal(size=(3, 2)) * 0.5, "b": np.array([0.1, -0.2]), "s": 1.3}

OPTIMIZERS = {
    "SGD": lambda v: fg.optim.SGD(v, lr=0.1),
    "SGD-wd-clip": lambda v: fg.optim.SGD(v, lr=0.1, weight_decay=0.05, clipnorm=0.5),
    "Momentum": lambda v: fg.optim.Momentum(v, lr=0.05, momentum=0.9),
    "Nesterov": lambda v: fg.optim.Momentum(v, lr=0.05, momentum=0.8, nesterov=True),
    "Adam": lambda v: fg.optim.Adam(v, lr=0.02),
    "Adam-schedule": lambda v: fg.optim.Adam(v, lr=fg.optim.warmup_cosine(0.05, 4, 20)),
    "AdamW": lambda v: fg.optim.AdamW(v, lr=0.02, weight_decay=0.3),
    "RMSProp": lambda v: fg.optim.RMSProp(v, lr=0.01),
    "RMSProp-centered-momentum": lambda v: fg.optim.RMSProp(v, lr=0.005, momentum=0.5,
                                                            centered=True),
    "Adagrad": lambda v: fg.optim.Adagrad(v, lr=0.1, lr_decay=0.01,
                                          initial_accumulator_value=0.2),
    "Adagrad-step-decay": lambda v: fg.optim.Adagrad(v, lr=fg.optim.step_decay(0.2, 5)),
    "LBFGS": lambda v: fg.optim.LBFGS(v, history_size=3),
}


def model(make, dtype=np.float64, padding=0):
    """A fresh graph (``padding`` extra nodes first, so that node ids differ from
    another build's: the state is keyed by name, never by id), its optimizer and step."""
    g = fg.Graph()
    with g:
        for k in range(padding):
            fg.constant(float(k))
        x = fg.placeholder("x", shape=(None, 3), dtype=dtype)
        y = fg.placeholder("y", shape=(None, 2), dtype=dtype)
        W = fg.variable(INIT["W"].astype(dtype), name="W")
        b = fg.variable(INIT["b"].astype(dtype), name="b")
        s = fg.variable(np.array(INIT["s"], dtype=dtype), name="s")   # 0-d: the float path
        loss = fg.mean((fg.tanh(x @ W + b) * s - y) ** 2) + 0.05 * s ** 4
        opt = make([W, b, s])
        train = opt.minimize(loss)
    return g, opt, train, [W, b, s], {x: X.astype(dtype), y: Y.astype(dtype)}


def values(vs):
    return [np.array(v.value) for v in vs]


def assert_bitwise(got, want):
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a.reshape(-1).view(np.uint8), b.reshape(-1).view(np.uint8))


def assert_same_state(d1, d2):
    assert d1.keys() == d2.keys()
    for key in d1:
        if isinstance(d1[key], dict):
            assert_same_state(d1[key], d2[key])
        elif isinstance(d1[key], np.ndarray):
            assert_bitwise([d1[key]], [d2[key]])
        else:
            assert d1[key] == d2[key], key


# -- resuming is the run that never stopped ---------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_resuming_from_a_checkpoint_is_the_uninterrupted_run(name, dtype, tmp_path):
    n, m = 7, 6
    _, opt, train, vs, feed = model(OPTIMIZERS[name], dtype)
    for _ in range(n + m):
        train(feed)
    want, want_state = values(vs), opt.state_dict()

    g, opt, train, vs, feed = model(OPTIMIZERS[name], dtype)
    for _ in range(n):
        train(feed)
    path = fg.save_variables(tmp_path / "ckpt", g, optimizer=opt)

    g, opt, train, vs, feed = model(OPTIMIZERS[name], dtype, padding=5)
    assert fg.load_variables(path, g, optimizer=opt) == ["W", "b", "s"]
    assert opt.iterations == n
    if callable(opt.lr):                                   # the schedule's position
        assert opt.learning_rate() == opt.lr(n)
    for _ in range(m):
        train(feed)
    assert_bitwise(values(vs), want)
    assert_same_state(opt.state_dict(), want_state)

    # the values alone (what a checkpoint held before): another trajectory, but for
    # SGD, whose only state is the step count
    g, opt, train, vs, feed = model(OPTIMIZERS[name], dtype)
    fg.load_variables(path, g)
    for _ in range(m):
        train(feed)
    same = all(np.array_equal(a, b) for a, b in zip(values(vs), want))
    assert same == name.startswith("SGD")


@pytest.mark.parametrize("dtype", [np.complex128, np.complex64])
def test_a_complex_variables_state_resumes(dtype, tmp_path):
    def build():
        g = fg.Graph()
        with g:
            z = fg.variable(np.array([1 + 2j, -0.5 + 0.25j], dtype=dtype), name="z")
            d = z - np.array([1 + 2j, -0.5 + 0.3j]).astype(dtype)
            loss = fg.astype(fg.sum(fg.abs(d) ** 2 + 0.1 * fg.abs(d) ** 4), "float64")
            opt = fg.optim.Adam([z], lr=0.1)
        return g, opt, opt.minimize(loss), z
    g, opt, train, z = build()
    for _ in range(9):
        train()
    want = np.array(z.value)
    g, opt, train, z = build()
    for _ in range(4):
        train()
    d = opt.state_dict()
    assert d["state"]["z"]["m"].dtype == dtype
    path = fg.save_variables(tmp_path / "z", g, optimizer=opt)
    g, opt, train, z = build()
    fg.load_variables(path, g, optimizer=opt)
    for _ in range(5):
        train()
    assert_bitwise([np.array(z.value)], [want])


# -- the same numbers as torch.optim's state_dict ---------------------------------------
TORCH = [
    ("Momentum", dict(lr=0.05, momentum=0.9), "SGD", dict(lr=0.05, momentum=0.9),
     {"v": "momentum_buffer"}),
    ("Adam", dict(lr=0.02), "Adam", dict(lr=0.02), {"m": "exp_avg", "s": "exp_avg_sq"}),
    ("AdamW", dict(lr=0.02, weight_decay=0.3), "AdamW", dict(lr=0.02, weight_decay=0.3),
     {"m": "exp_avg", "s": "exp_avg_sq"}),
    ("RMSProp", dict(lr=0.005, momentum=0.5, centered=True), "RMSprop",
     dict(lr=0.005, momentum=0.5, centered=True),
     {"s": "square_avg", "m": "grad_avg", "b": "momentum_buffer"}),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01), "Adagrad", dict(lr=0.1, lr_decay=0.01),
     {"sum": "sum"}),
]


def _torch_loss(torch, W, b, s):
    x, y = torch.from_numpy(X), torch.from_numpy(Y)
    return torch.mean((torch.tanh(x @ W + b) * s - y) ** 2) + 0.05 * s ** 4


@pytest.mark.parametrize("ours, kw, theirs, tkw, slots", TORCH, ids=[c[0] for c in TORCH])
def test_the_state_is_torch_optims_state_dict(ours, kw, theirs, tkw, slots):
    """torch trains 6 steps; its state_dict, renamed, is loaded into a fresh flowgrad
    optimizer; both take 6 more steps: the same values (to 1e-11), and flowgrad's
    state_dict then holds torch's numbers."""
    torch = pytest.importorskip("torch")
    params = [torch.tensor(INIT[k], dtype=torch.float64, requires_grad=True)
              for k in ("W", "b", "s")]
    topt = getattr(torch.optim, theirs)(params, **tkw)

    def torch_steps(k):
        for _ in range(k):
            topt.zero_grad()
            _torch_loss(torch, *params).backward()
            topt.step()
    torch_steps(6)
    tstate = topt.state_dict()["state"]
    names = ["W", "b", "s"]
    d = {"optimizer": ours, "iterations": 6, "lr": kw["lr"],
         "settings": {"centered": True, "with_momentum": True} if ours == "RMSProp" else {},
         "state": {n: {slot: tstate[i][tslot].detach().numpy().copy()
                       for slot, tslot in slots.items()} for i, n in enumerate(names)}}
    assert all(int(tstate[i]["step"]) == 6 for i in range(3) if "step" in tstate[i])
    _, opt, train, vs, feed = model(lambda v: getattr(fg.optim, ours)(v, **kw))
    for v, p in zip(vs, params):
        v.value = p.detach().numpy().copy()
    opt.load_state_dict(d)
    for _ in range(6):
        train(feed)
    torch_steps(6)
    for v, p in zip(vs, params):
        np.testing.assert_allclose(v.value, p.detach().numpy(), rtol=1e-11, atol=1e-12)
    tstate = topt.state_dict()["state"]
    mine = opt.state_dict()
    assert mine["iterations"] == 12
    for i, n in enumerate(names):
        for slot, tslot in slots.items():
            np.testing.assert_allclose(mine["state"][n][slot], tstate[i][tslot].numpy(),
                                       rtol=1e-11, atol=1e-13)


# -- the learning rate ------------------------------------------------------------------
def test_a_numeric_rate_is_restored_and_a_schedule_is_kept(tmp_path):
    g, opt, train, vs, feed = model(lambda v: fg.optim.Adam(v, lr=0.1))
    for _ in range(3):
        train(feed)
    opt.lr = 0.025                              # what ReduceLROnPlateau does
    path = fg.save_variables(tmp_path / "c", g, optimizer=opt)
    g, opt, train, vs, feed = model(lambda v: fg.optim.Adam(v, lr=0.1))
    fg.load_variables(path, g, optimizer=opt)
    assert opt.lr == 0.025 and opt.state_dict()["lr"] == 0.025
    sched = fg.optim.exponential_decay(0.1, 0.5, every=2)
    g, opt, train, vs, feed = model(lambda v: fg.optim.Adam(v, lr=sched))
    fg.load_variables(path, g, optimizer=opt)
    assert opt.lr is sched and opt.learning_rate() == 0.1 * 0.5 ** 1      # step 3
    assert opt.state_dict()["lr"] is None


def test_fit_resumed_from_model_checkpoint_is_one_long_fit(tmp_path):
    """ModelCheckpoint saves the optimizer by default: two epochs, a fresh graph loaded
    from the last checkpoint, one more epoch: the weights of one three-epoch fit."""
    def fit(epochs, callbacks=(), load=None):
        g, opt, train, vs, feed = model(lambda v: fg.optim.Adam(v, lr=0.05), padding=epochs)
        if load is not None:
            fg.load_variables(load, g, optimizer=opt)
        opt.fit(train.program.outputs[0], data=feed, epochs=epochs, batch_size=5, seed=0,
                callbacks=list(callbacks), verbose=False)
        return opt, vs
    want_opt, want = fit(3)
    ckpt = fg.ModelCheckpoint(tmp_path / "e{epoch}.npz")
    fit(2, [ckpt])
    opt, got = fit(1, load=ckpt.saved[-1])
    assert opt.iterations == want_opt.iterations == 12
    assert_bitwise(values(got), values(want))


def test_model_checkpoint_save_optimizer_false_and_a_partial_variables_list(tmp_path):
    g, opt, train, vs, feed = model(lambda v: fg.optim.Adam(v, lr=0.05))
    loss = train.program.outputs[0]
    plain = fg.ModelCheckpoint(tmp_path / "plain.npz", save_optimizer=False)
    opt.fit(loss, data=feed, epochs=1, batch_size=8, callbacks=[plain], verbose=False)
    assert sorted(np.load(plain.saved[0]).files) == ["0", "1", "2", "names"]
    part = fg.ModelCheckpoint(tmp_path / "part.npz", variables=vs[:2])
    with pytest.raises(fg.ArgumentError, match=r"(?s)updates \['s'\].*save_optimizer=False"):
        opt.fit(loss, data=feed, epochs=1, batch_size=8, callbacks=[part], verbose=False)
    assert part.saved == [] and opt.iterations == 2      # refused before an epoch ran


# -- names: the checkpoint's, not the nodes' ids ----------------------------------------
def test_the_state_follows_the_names_the_variables_are_saved_under(tmp_path):
    g, opt, train, vs, feed = model(lambda v: fg.optim.Adam(v, lr=0.05))
    for _ in range(3):
        train(feed)
    want = opt.state_dict()
    path = fg.save_variables(tmp_path / "c", dict(zip(["w1", "w2", "w3"], vs)), optimizer=opt)
    g, opt, train, vs, feed = model(lambda v: fg.optim.Adam(v, lr=0.05))
    fg.load_variables(path, dict(zip(["w1", "w2", "w3"], vs)), optimizer=opt)
    assert_same_state(opt.state_dict(), want)
    with pytest.raises(fg.UsageError, match=r"updates \['s'\]"):
        fg.load_variables(path, {"w1": vs[0], "w2": vs[1]}, strict=False, optimizer=opt)
    with pytest.raises(fg.UsageError, match=r"updates \['s'\]"):
        fg.save_variables(tmp_path / "d", vs[:2], optimizer=opt)
    for call in (fg.save_variables, fg.load_variables):
        with pytest.raises(fg.UsageError, match="optimizer= takes an fg.optim optimizer"):
            call(path, vs, optimizer=opt.state_dict())


# -- refusals: each a CheckpointError that changes nothing -------------------------------
def trained(make=OPTIMIZERS["Adam"], steps=3, dtype=np.float64):
    g, opt, train, vs, feed = model(make, dtype)
    for _ in range(steps):
        train(feed)
    return g, opt, vs


def assert_refused(path, make, match, **kw):
    g, opt, vs = trained(make, steps=2)
    before, state = values(vs), opt.state_dict()
    with pytest.raises(fg.CheckpointError, match=match):
        fg.load_variables(path, g, optimizer=opt, **kw)
    assert_bitwise(values(vs), before)
    assert_same_state(opt.state_dict(), state)


@pytest.mark.parametrize("saved, loaded, match", [
    (OPTIMIZERS["Adam"], OPTIMIZERS["AdamW"], "saved by fg.optim.Adam; this optimizer is "
                                              "fg.optim.AdamW"),
    (OPTIMIZERS["Momentum"], OPTIMIZERS["SGD"], "saved by fg.optim.Momentum"),
    (lambda v: fg.optim.RMSProp(v, centered=True), lambda v: fg.optim.RMSProp(v),
     r"settings \{'centered': True, 'with_momentum': False\}"),
    (lambda v: fg.optim.RMSProp(v), lambda v: fg.optim.RMSProp(v, momentum=0.1),
     "with_momentum"),
    (lambda v: fg.optim.LBFGS(v, history_size=3), lambda v: fg.optim.LBFGS(v, history_size=4),
     "history_size"),
])
def test_another_kind_or_layout_is_refused(saved, loaded, match, tmp_path):
    g, opt, _ = trained(saved)
    path = fg.save_variables(tmp_path / "c", g, optimizer=opt)
    assert_refused(path, loaded, match)


def test_settings_that_do_not_shape_the_state_are_the_new_optimizers(tmp_path):
    g, opt, _ = trained(lambda v: fg.optim.RMSProp(v, momentum=0.5, eps=1e-6))
    path = fg.save_variables(tmp_path / "c", g, optimizer=opt)
    g, opt, _, _, _ = model(lambda v: fg.optim.RMSProp(v, momentum=0.7, eps=1e-4))
    fg.load_variables(path, g, optimizer=opt)
    assert opt.iterations == 3 and (opt.momentum, opt.eps) == (0.7, 1e-4)


def test_a_float32_state_does_not_load_into_float64_variables(tmp_path):
    g, opt, _ = trained(dtype=np.float32)
    path = fg.save_variables(tmp_path / "c", g, optimizer=opt)
    # the values cast (float32 -> float64 is safe); the state must be exact
    assert_refused(path, OPTIMIZERS["Adam"], r"'state/\w/\w' declares shape \(.*\) and dtype "
                                             r"float32; this optimizer holds shape \(.*\), "
                                             r"dtype float64")


def test_a_checkpoint_without_optimizer_state_is_refused_with_optimizer(tmp_path):
    g, opt, _ = trained()
    old = fg.save_variables(tmp_path / "old", g)         # as every checkpoint was before
    assert_refused(old, OPTIMIZERS["Adam"], "holds no optimizer state")
    g2, opt2, vs2 = trained(steps=0)
    assert fg.load_variables(old, g2) == ["W", "b", "s"]   # the values alone still load
    assert opt2.iterations == 0
    new = fg.save_variables(tmp_path / "new", g, optimizer=opt)
    assert fg.load_variables(new, g2) == ["W", "b", "s"]   # the state is ignored unasked
    assert opt2.iterations == 0


def rewrite(path, out, change):
    """Copy the archive at ``path`` to ``out``, ``change(members)`` editing its
    {name: bytes} first."""
    with zipfile.ZipFile(path) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    change(members)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return out


def npy(arr, data=None):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=False)
    return buf.getvalue() if data is None else buf.getvalue()[:-arr.nbytes] + data


def member_of(path, entry):
    """The member name holding the optimizer entry ``entry`` (a path tuple)."""
    keys = np.load(path)["optimizer/keys"]
    for k, row in enumerate(keys):
        if tuple(p for p in row if p) == entry:
            return f"optimizer/{k}.npy"
    raise KeyError(entry)


def test_headers_are_checked_before_the_data(tmp_path):
    g, opt, _ = trained()
    path = fg.save_variables(tmp_path / "c", g, optimizer=opt)
    m = member_of(path, ("state", "W", "m"))
    # a header declaring one row more, and no data at all: the shape is what is refused
    bad = rewrite(path, tmp_path / "shape.npz",
                  lambda ms: ms.update({m: npy(np.zeros((4, 2)), data=b"")}))
    assert_refused(bad, OPTIMIZERS["Adam"], r"'state/W/m' declares shape \(4, 2\) and dtype "
                                            r"float64; this optimizer holds shape \(3, 2\)")
    huge = npy(np.zeros((1, 2)), data=b"").replace(b"(1, 2)", b"(10000000000, 2)")
    bad = rewrite(path, tmp_path / "huge.npz", lambda ms: ms.update({m: huge}))
    assert_refused(bad, OPTIMIZERS["Adam"], r"declares shape \(10000000000, 2\)")


def test_lbfgs_memory_is_bounded_by_history_size_from_the_header(tmp_path):
    g, opt, _ = trained(OPTIMIZERS["LBFGS"], steps=6)
    path = fg.save_variables(tmp_path / "c", g, optimizer=opt)
    assert opt.state_dict()["memory"]["s"].shape == (3, 9)        # history_size pairs
    m = member_of(path, ("memory", "s"))
    four = rewrite(path, tmp_path / "four.npz",          # the first count over: refused
                   lambda ms: ms.update({m: npy(np.zeros((4, 9)), data=b"")}))
    assert_refused(four, OPTIMIZERS["LBFGS"], r"'memory/s' declares shape \(4, 9\) and dtype "
                                              r"float64; this optimizer holds at most shape "
                                              r"\(3, 9\)")
    two = rewrite(path, tmp_path / "two.npz",              # fits the header; s, y disagree
                  lambda ms: ms.update({m: npy(np.zeros((2, 9)))}))
    assert_refused(two, OPTIMIZERS["LBFGS"], r"memory 's' has shape \(2, 9\)")


def test_names_that_match_no_variable_are_refused(tmp_path):
    g, opt, _ = trained()
    path = fg.save_variables(tmp_path / "c", g, optimizer=opt)

    def rename(ms):
        keys = np.load(io.BytesIO(ms["optimizer/keys.npy"]))
        keys[keys == "W"] = "V"
        ms["optimizer/keys.npy"] = npy(keys)
    bad = rewrite(path, tmp_path / "names.npz", rename)
    assert_refused(bad, OPTIMIZERS["Adam"], "'state/V/m', which this optimizer has no place for")


def test_the_keys_are_counted_before_they_are_read(tmp_path):
    g, opt, _ = trained()
    path = fg.save_variables(tmp_path / "c", g, optimizer=opt)
    keys = np.load(path)["optimizer/keys"]
    liar = npy(keys, data=b"").replace(f"({len(keys)}, 3)".encode(), b"(1000, 3)")
    bad = rewrite(path, tmp_path / "keys.npz", lambda ms: ms.update({"optimizer/keys.npy": liar}))
    assert_refused(bad, OPTIMIZERS["Adam"], "declares 1000 entries, but the optimizer's "
                                            f"section holds {len(keys)} arrays")
    gone = rewrite(path, tmp_path / "gone.npz", lambda ms: ms.pop("optimizer/3.npy"))
    assert_refused(gone, OPTIMIZERS["Adam"], f"declares {len(keys)} entries, but the "
                                             f"optimizer's section holds {len(keys) - 1}")


def test_the_state_counts_against_max_bytes(tmp_path):
    g, opt, _ = trained()
    path = fg.save_variables(tmp_path / "c", g, optimizer=opt)
    with zipfile.ZipFile(path) as zf:
        total = sum(i.file_size for i in zf.infolist())
    g2, opt2, _ = trained(steps=0)
    fg.load_variables(path, g2, optimizer=opt2, max_bytes=total)            # exactly enough
    assert_refused(path, OPTIMIZERS["Adam"], "the optimizer's state would take",
                   max_bytes=total - 1)


def test_every_truncation_is_refused_and_changes_nothing(tmp_path):
    g, opt, _ = trained(OPTIMIZERS["RMSProp-centered-momentum"])
    data = fg.save_variables(tmp_path / "c", g, optimizer=opt).read_bytes()
    g2, opt2, vs2 = trained(OPTIMIZERS["RMSProp-centered-momentum"], steps=2)
    before, state = values(vs2), opt2.state_dict()
    for n in range(0, len(data), 7):
        (tmp_path / "t.npz").write_bytes(data[:n])
        with pytest.raises(fg.CheckpointError):
            fg.load_variables(tmp_path / "t.npz", g2, optimizer=opt2)
    assert_bitwise(values(vs2), before)
    assert_same_state(opt2.state_dict(), state)


def test_load_state_dict_refuses_what_does_not_fit():
    _, opt, vs = trained()
    good = opt.state_dict()
    state = opt.state_dict()

    def refused(change, match):
        d = opt.state_dict()
        change(d)
        with pytest.raises(fg.CheckpointError, match=match):
            opt.load_state_dict(d)
        assert_same_state(opt.state_dict(), state)
    refused(lambda d: d.pop("lr"), r"missing \['lr'\]")
    refused(lambda d: d.update(extra=1), r"unexpected \['extra'\]")
    refused(lambda d: d["state"].pop("b"), r"missing \['b'\]")
    refused(lambda d: d["state"]["W"].pop("s"), r"missing \['s'\]")
    refused(lambda d: d["state"]["W"].update(m=d["state"]["W"]["m"].tolist()), "numpy array")
    refused(lambda d: d["state"]["b"].update(m=np.zeros(3)), r"shape \(3,\)")
    refused(lambda d: d["state"]["b"].update(m=np.zeros(2, np.float32)), "dtype float32")
    refused(lambda d: d.update(iterations=-1), "≥ 0")
    refused(lambda d: d.update(iterations=2.5), "must be an int")
    refused(lambda d: d.update(lr=float("nan")), "finite")
    opt.load_state_dict(good)


class Flaky(fg.optim.Adam):
    """Adam whose step count cannot be written while ``fail`` is set: a Ctrl-C landing
    in the middle of a load's commit (after the values and the moments were stored)."""
    fail = False

    @property
    def iterations(self):
        return self._count

    @iterations.setter
    def iterations(self, value):
        if self.fail and value == 3:          # the loaded count (undoing it works)
            raise KeyboardInterrupt
        self._count = value


def test_an_interrupted_load_puts_everything_back(tmp_path):
    g, opt, _ = trained(Flaky)
    path = fg.save_variables(tmp_path / "c", g, optimizer=opt)
    g, opt, vs = trained(Flaky, steps=1)
    before, state = values(vs), opt.state_dict()
    opt.fail = True
    with pytest.raises(KeyboardInterrupt):
        fg.load_variables(path, g, optimizer=opt)
    opt.fail = False
    assert_bitwise(values(vs), before)
    assert_same_state(opt.state_dict(), state)
    fg.load_variables(path, g, optimizer=opt)
    assert opt.iterations == 3


def test_a_state_that_lost_its_variables_is_not_saved_short():
    _, opt, vs = trained()
    opt.variables = vs[:2]                        # replaced without reset(): 3 states
    with pytest.raises(fg.OptimizerError, match="3 states for 2 variables"):
        opt.state_dict()


class _DeviceArray(np.ndarray):
    """A device array as cupy's: arithmetic with a host (numpy) array is a TypeError."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if any(type(a) is np.ndarray for a in inputs):
            raise TypeError("implicit conversion between host and device arrays")
        plain = [a.view(np.ndarray) if isinstance(a, _DeviceArray) else a for a in inputs]
        out = getattr(ufunc, method)(*plain, **kwargs)
        return out.view(_DeviceArray) if isinstance(out, np.ndarray) else out


def _device_backend():
    from flowgrad.backends.numpy_backend import NumpyBackend

    class DeviceBackend(NumpyBackend):   # reads go through asarray, as on cupy
        name = "fake-device"
        in_place = regions = scalar_floats = lean_kernels = fast_feeds = False
        fusion = None

        def asarray(self, value, dtype=None):
            host = value.view(np.ndarray) if isinstance(value, _DeviceArray) else value
            return np.asarray(host, dtype=dtype).view(_DeviceArray)
    return DeviceBackend()


def test_a_loaded_state_moves_to_a_device_backend(tmp_path):
    """A checkpoint's state is numpy; on a backend whose arrays live elsewhere (cupy) the
    next step reads it through the backend, as it reads the variables' values, instead
    of mixing host and device arrays. The resumed run equals the uninterrupted one."""
    def run(steps, backend=None, path=None, load=None):
        with fg.Graph():
            w = fg.variable(np.array([0.5, -1.0, 2.0]), name="w")
            opt = fg.optim.Adam([w], lr=0.1)
            train = opt.minimize(fg.sum(fg.tanh(w) ** 2 + 0.1 * w), backend=backend)
            if load is not None:
                fg.load_variables(load, [w], optimizer=opt)
            for _ in range(steps):
                train()
            if path is not None:
                fg.save_variables(path, [w], optimizer=opt)
            return np.array(w.value.view(np.ndarray))

    want = run(5)
    path = tmp_path / "ckpt.npz"
    run(3, path=path)
    got = run(2, backend=_device_backend(), load=path)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16"])
@pytest.mark.parametrize("make", [lambda v: fg.optim.SGD(v, lr=0.1),
                                  lambda v: fg.optim.SGD(v, lr=0.1, weight_decay=0.5),
                                  lambda v: fg.optim.Adam(v, lr=0.1)],
                         ids=["SGD", "SGD-generic", "Adam"])
def test_a_0d_variable_stays_a_0d_array_of_its_dtype(make, dtype):
    """0-d arithmetic in numpy gives a numpy scalar: after a step a 0-d float32 variable's
    value was np.float32, not an array as before the step and as a float64 one stays."""
    with fg.Graph():
        v = fg.variable(np.array(1.5, dtype), name="v")
        opt = make([v])
        train = opt.minimize(v * v)
        for _ in range(2):
            train()
        assert type(v.value) is np.ndarray and v.value.shape == () and v.value.dtype == dtype
