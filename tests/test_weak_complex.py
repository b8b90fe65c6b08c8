"""A Python complex is weakly typed, as numpy 2 (NEP 50) and JAX type it and as flowgrad
types a Python int or float: ``z * 1j`` keeps a complex64 ``z`` complex64 and ``x * 1j``
of a float32 ``x`` is complex64. It was a complex128 constant, so both were complex128
(and so were a complex64 input's derivative nodes). numpy 2 is the oracle for every
dtype and value, on every executor (reference interpreter, generated code, the scalar
path of 0-d programs, dask), first call and later; the graph file keeps the constant
weak; torch's autograd checks the derivatives. Also: ``fg.grad`` of a complex output is
refused, as torch's backward() and jax.grad refuse it, and ONNX export refuses complex
tensors (ONNX has no arithmetic on them) rather than write a model no runtime loads."""
import numpy as np
import pytest

import flowgrad as fg
from flowgrad.autodiff import ancestors
from flowgrad.io.attrs import decode, encode

torch = pytest.importorskip("torch")

#: every input dtype a Python complex may meet; numpy's promotion decides each result
DTYPES = ["complex64", "complex128", "float16", "float32", "float64", "int8", "int32",
          "uint8", "bool"]

#: (flowgrad, numpy) pairs: a Python complex alone, beside a weak float, folded with one
EXPRS = {
    "z * 1j": (lambda z: z * 1j, lambda a: a * 1j),
    "1j * z": (lambda z: 1j * z, lambda a: 1j * a),
    "z + (2 - 3j)": (lambda z: z + (2 - 3j), lambda a: a + (2 - 3j)),
    "z * 1j + 0.5": (lambda z: z * 1j + 0.5, lambda a: a * 1j + 0.5),
    "(z * 1j) * 0.5": (lambda z: (z * 1j) * 0.5, lambda a: (a * 1j) * 0.5),
    "z * (const(1j) * 0.5)": (lambda z: z * (fg.constant(1j) * 0.5), lambda a: a * 0.5j),
    "z / (1 + 1j)": (lambda z: z / (1 + 1j), lambda a: a / (1 + 1j)),
    "where(z != 0, z * 1j, 2j)": (lambda z: fg.where(fg.not_equal(z, 0), z * 1j, 2j),
                                  lambda a: np.where(a != 0, a * 1j, 2j)),
}


def _feed(dtype, shape):
    values = np.array([1.5, 2, 0, 3, 1, 2][:int(np.prod(shape))]).reshape(shape)
    if dtype.startswith("complex"):
        values = values + 1j * values[::-1] if shape else values + 0.25j
    return values.astype(dtype)


def _programs(outs):
    return {"interpreter": fg.compile(outs, codegen=False), "generated": fg.compile(outs),
            "dask": fg.compile(outs, backend="dask")}


def _assert_like_numpy(outs, wants, programs, feed, calls=3):
    for name, prog in programs.items():
        for call in range(calls):
            got = prog(**feed)
            for node, g, want in zip(outs, got, wants):
                g = np.asarray(fg.to_numpy(g))
                where = (name, call, node.name)
                assert node.dtype == want.dtype, where
                assert g.dtype == want.dtype, where
                np.testing.assert_allclose(g, want, rtol=1e-6, err_msg=str(where))


@pytest.mark.parametrize("shape", [(3,), ()], ids=["array", "scalar path"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_a_python_complex_promotes_as_numpy_2(dtype, shape):
    with fg.Graph():
        z = fg.placeholder("z", shape=shape, dtype=dtype)
        outs = [f(z) for f, _ in EXPRS.values()]
    a = _feed(dtype, shape)
    with np.errstate(all="ignore"):
        wants = [np.asarray(f(a)) for _, f in EXPRS.values()]
    for want in wants:   # numpy's own rule, to be sure the oracle is NEP 50's
        assert want.dtype == np.result_type(np.dtype(dtype), 1j)
    _assert_like_numpy(outs, wants, _programs(outs), {"z": a})


def test_the_cases_the_rule_is_about():
    """The dtypes the issue names, spelled out (numpy 2: np.ones(2, np.complex64) * 1j
    is complex64; float32 · 1j complex64; float16 · 1j complex64; int32 · 1j
    complex128)."""
    for dtype, want in [("complex64", "complex64"), ("float32", "complex64"),
                        ("float16", "complex64"), ("int32", "complex128"),
                        ("float64", "complex128")]:
        with fg.Graph():
            y = fg.placeholder("z", shape=(2,), dtype=dtype) * 1j
            assert y.dtype == want
            assert fg.run(y, {"z": np.ones(2, dtype)}).dtype == want


def test_a_numpy_complex_scalar_stays_strong_as_a_numpy_float_scalar_does():
    """numpy 2 types its own scalars strongly (np.complex128(1j) makes complex64 ·
    it complex128), and flowgrad does so for np.float64: the same for complex."""
    a = _feed("complex64", (3,))
    with fg.Graph():
        z = fg.placeholder("z", shape=(3,), dtype="complex64")
        x = fg.placeholder("x", shape=(3,), dtype="float32")
        outs = [z * np.complex128(1j), z * np.float64(0.5), x * np.complex64(1j),
                z * fg.constant(1j, dtype="complex128")]
    wants = [a * np.complex128(1j), a * np.float64(0.5),
             a.real * np.complex64(1j), a * np.complex128(1j)]
    assert [w.dtype for w in wants] == ["complex128", "complex128", "complex64",
                                        "complex128"]
    _assert_like_numpy(outs, wants, _programs(outs), {"z": a, "x": a.real.copy()})


def test_constant_folding_of_fills_keeps_the_weak_type():
    """The simplifier folds ones_like(z) * 1j to a fill; its dtype is numpy's."""
    a, r = _feed("complex64", (3,)), _feed("float32", (3,))
    with fg.Graph():
        z = fg.placeholder("z", shape=(3,), dtype="complex64")
        x = fg.placeholder("x", shape=(3,), dtype="float32")
        outs = [fg.ones_like(z) * 1j, fg.ones_like(z) * 1j + z, fg.zeros_like(x) + 1j,
                fg.ones_like(x) * (2 + 1j) * x]
    wants = [np.ones(3, np.complex64) * 1j, np.ones(3, np.complex64) * 1j + a,
             np.zeros(3, np.float32) + 1j, np.ones(3, np.float32) * (2 + 1j) * r]
    _assert_like_numpy(outs, wants, _programs(outs), {"z": a, "x": r})


def test_large_arrays_through_fused_code():
    """Long elementwise chains on large arrays take the fused paths of generated code
    (numexpr chains, numba regions from the second call on): the same dtypes."""
    rng = np.random.default_rng(3)
    a = (rng.standard_normal(50_000) + 1j * rng.standard_normal(50_000)).astype("complex64")
    with fg.Graph():
        z = fg.placeholder("z", shape=(None,), dtype="complex64")
        c = (z * 1j + 0.5) * (2 - 1j) - z
        outs = [c, fg.abs(c) * 2.0 + 1.0, fg.real(c) * 0.5 - 1.0]
    c_ = (a * 1j + 0.5) * (2 - 1j) - a
    wants = [c_, np.abs(c_) * 2.0 + 1.0, np.real(c_) * 0.5 - 1.0]
    _assert_like_numpy(outs, wants, _programs(outs), {"z": a}, calls=4)


def test_vectorize_keeps_the_weak_type():
    a = _feed("complex64", (2, 3))
    with fg.Graph():
        z = fg.placeholder("z", shape=(3,), dtype="complex64")
        zb = fg.placeholder("zb", shape=(2, 3), dtype="complex64")
        y = fg.vectorize(z * 1j + 0.5, {z: zb})
    _assert_like_numpy([y], [a * 1j + 0.5], _programs([y]), {"zb": a})


# -- loops --------------------------------------------------------------------------------

def _loop_graph(z):
    """A scan, while loop and cond over ``z`` whose bodies capture Python complexes, one
    returning a Python complex as a complex64 carry, one a cond branch's result."""
    c, ys = fg.scan(lambda c, x: (c * 1j + x, x * (0.5 + 2j)), fg.zeros_like(z[0]), z)
    w = fg.while_loop(lambda c: fg.abs(c) < 10.0, lambda c: c * (1 + 1j) + 1j, z[0])
    k = fg.cond(fg.abs(z[0]) > 1.0, lambda a: a * 1j, lambda a: 1j, z[0])
    s = fg.scan(lambda c, x: (1j, x), z[0], z)[0]
    both = fg.cond(fg.abs(z[0]) > 1.0, lambda: 1j, lambda: 2j)
    return [c, ys, w, k, s, both]


def _loop_numpy(a):
    c = np.complex64(0)
    for x in a:
        c = c * 1j + x
    w = a[0]
    while abs(w) < 10:
        w = w * (1 + 1j) + 1j
    k = a[0] * 1j if abs(a[0]) > 1 else np.complex64(1j)
    both = np.complex128(1j if abs(a[0]) > 1 else 2j)   # two Python numbers: as numpy's
    return [np.asarray(c), a * (0.5 + 2j), np.asarray(w), np.asarray(k),
            np.asarray(np.complex64(1j)),
            np.asarray(both)]


@pytest.mark.parametrize("scale", [1, 0.25])
def test_loop_bodies_capturing_a_python_complex(scale):
    a = (_feed("complex64", (3,)) * scale).astype("complex64")
    with fg.Graph():
        outs = _loop_graph(fg.placeholder("z", shape=(3,), dtype="complex64"))
    wants = _loop_numpy(a)
    _assert_like_numpy(outs, wants, _programs(outs), {"z": a})
    for prog in _programs(outs).values():   # a loop's 0-d result is a numpy scalar, not
        got = prog(z=a)                      # the Python complex the body returned
        assert type(got[5]) is np.complex128 and type(got[4]) is np.complex64


# -- graph files --------------------------------------------------------------------------

def test_a_weak_complex_round_trips_through_a_graph_file_as_weak(tmp_path):
    a = _feed("complex64", (3,))
    with fg.Graph() as g:
        z = fg.placeholder("z", shape=(3,), dtype="complex64")
        outs = [(z * 1j + (0.5 - 2j)).named("y"), (z * complex(np.nan, np.inf)).named("n")]
        outs += _loop_graph(z)
        names = ["y", "n"] + [o.name for o in outs[2:]]
    fg.save_graph(tmp_path / "w.fg", g)
    g2 = fg.load_graph(tmp_path / "w.fg")
    weak = sorted((n.value.real, n.value.imag) for n in g2.nodes
                  if n.kind == "constant" and n.weak and type(n.value) is complex)
    assert weak[:2] == [(0.0, 1.0), (0.5, -2.0)] and np.isnan(weak[-1][0])
    loaded = [g2.by_name(n) for n in names]
    assert [n.dtype for n in loaded] == [n.dtype for n in outs]
    assert loaded[0].dtype == "complex64"
    with np.errstate(invalid="ignore"):
        wants = [a * 1j + (0.5 - 2j), a * complex(np.nan, np.inf)] + _loop_numpy(a)
    got = fg.run(loaded, {"z": a})
    for g_, w in zip(got, wants):
        assert np.asarray(g_).dtype == w.dtype
        np.testing.assert_allclose(g_, w, rtol=1e-6)


def test_complex_attribute_encoding_and_its_boundaries():
    """A Python complex is "$complex": [re, im] (NaN and infinities as "$float"), and a
    numpy complex scalar a "$scalar" of it; a payload that is not two floats is refused."""
    for value in (1j, complex(-0.0, 2.5), complex(np.inf, np.nan)):
        data = encode(value, None, "here")
        back = decode(data, None, "here")
        assert type(back) is complex
        assert str(back) == str(value)
        assert np.signbit(back.real) == np.signbit(value.real)
    back = decode(encode(np.complex64(1 + 2j), None, "here"), None, "here")
    assert type(back) is np.complex64 and back == 1 + 2j
    for bad in ([1.0], [1.0, 2.0, 3.0], [1, 2.0], [1.0, True], [1.0, "2"],
                [1.0, {"$float": "1"}], {"re": 1.0}):
        with pytest.raises(fg.GraphFileError, match="malformed complex"):
            decode({"$complex": bad}, None, "here")


# -- ONNX ---------------------------------------------------------------------------------

def test_onnx_export_refuses_complex_tensors_naming_the_node(tmp_path):
    """ONNX (opset 18) has no arithmetic on complex tensors; the exporter wrote Mul on a
    complex64 input, which onnx.checker passes and a runtime refuses. A real graph with
    weak floats still exports."""
    pytest.importorskip("onnx")
    with fg.Graph():
        z = fg.placeholder("z", shape=(3,), dtype="complex64")
        with pytest.raises(fg.GraphFileError, match=r"node 'z' \(complex64, built at "
                           r".*test_weak_complex.py:\d+\) is not exported.*complex"):
            fg.export_onnx(z * 1j, tmp_path / "z.onnx")
    with fg.Graph():
        x = fg.placeholder("x", shape=(3,), dtype="float32")
        with pytest.raises(fg.GraphFileError, match=r"the Python complex 1j \(node"):
            fg.export_onnx(x * 1j, tmp_path / "x.onnx")
        fg.export_onnx(x * 0.5 + 1, tmp_path / "real.onnx")


# -- derivatives --------------------------------------------------------------------------

def _wide(node, dtype):
    """The dtypes of ``node``'s ancestors (weak numbers aside) wider than ``dtype``'s."""
    wide = {"complex64": {"complex128", "float64"}, "float32": {"complex128", "float64"}}
    g = node.graph
    return {str(g.node(i).dtype) for i in ancestors([node])
            if not g.node(i).weak} & wide[dtype]


@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_vjp_and_jvp_of_z_times_1j_keep_the_dtype(dtype):
    a, v = _feed(dtype, (3,)), (_feed(dtype, (3,)) * (0.5 - 1j)).astype(dtype)
    with fg.Graph():
        z = fg.placeholder("z", shape=(3,), dtype=dtype)
        back, fwd = fg.vjp(z * 1j, z, v), fg.jvp(z * 1j, z, v)
        assert back.dtype == fwd.dtype == dtype
        if dtype == "complex64":
            assert not _wide(back, dtype) and not _wide(fwd, dtype)
        progs = _programs([back, fwd])
    t = torch.tensor(a, requires_grad=True)
    (t * 1j).backward(torch.tensor(v))
    want_fwd = torch.func.jvp(lambda u: u * 1j, (torch.tensor(a),), (torch.tensor(v),))[1]
    assert t.grad.dtype == getattr(torch, dtype)
    _assert_like_numpy([back, fwd], [t.grad.numpy(), want_fwd.numpy()], progs, {"z": a})


@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_gradient_of_a_real_loss_is_torchs(dtype):
    """Σ|z·(2+i) + x·i|² with a complex z and a real x of the same precision: the
    gradients have the inputs' dtypes, and no node of a complex64 graph is wider."""
    real = "float32" if dtype == "complex64" else "float64"
    a, r = _feed(dtype, (3,)), _feed(real, (3,))
    with fg.Graph():
        z = fg.placeholder("z", shape=(3,), dtype=dtype)
        x = fg.placeholder("x", shape=(3,), dtype=real)
        loss = fg.sum(fg.abs(z * (2 + 1j) + x * 1j) ** 2)
        gz, gx = fg.grad(loss, [z, x])
        assert (loss.dtype, gz.dtype, gx.dtype) == (real, dtype, real)
        if dtype == "complex64":
            assert not _wide(gz, dtype) and not _wide(gx, dtype)
        progs = _programs([loss, gz, gx])
    tz, tx = torch.tensor(a, requires_grad=True), torch.tensor(r, requires_grad=True)
    tl = ((tz * (2 + 1j) + tx * 1j).abs() ** 2).sum()
    tl.backward()
    wants = [tl.detach().numpy(), tz.grad.numpy(), tx.grad.numpy()]
    _assert_like_numpy([loss, gz, gx], wants, progs, {"z": a, "x": r})


def test_grad_of_a_complex_output_is_refused_naming_it_and_vjp_answers():
    """torch: "grad can be implicitly created only for real scalar outputs"; jax.grad
    wants a real output unless holomorphic=True. fg.grad seeded 1 silently (torch's
    backward(1)). The boundary: the real part of the same output is differentiated,
    and fg.vjp with the cotangent 1 gives torch's backward(1)."""
    a = _feed("complex64", (3,))
    with fg.Graph():
        z = fg.placeholder("z", shape=(3,), dtype="complex64")
        y = fg.sum(z * (2 - 1j))
        with pytest.raises(fg.DifferentiationError,
                           match=r"real scalar output.*'sum\w*' is complex64 \(built at "
                                 r".*test_weak_complex.py:\d+\).*fg.vjp(.|\n)*"
                                 r"at .*test_weak_complex.py:\d+"):
            fg.grad(y, z)
        g_real, g_vjp = fg.grad(fg.real(y), z), fg.vjp(y, z, 1)
    t = torch.tensor(a, requires_grad=True)
    (t * (2 - 1j)).sum().backward(torch.tensor(1 + 0j))
    t2 = torch.tensor(a, requires_grad=True)
    (t2 * (2 - 1j)).sum().real.backward()
    _assert_like_numpy([g_vjp, g_real], [t.grad.numpy(), t2.grad.numpy()],
                       _programs([g_vjp, g_real]), {"z": a})


@pytest.mark.parametrize("dtype", ["complex64", "float32"])
def test_a_python_number_cotangent_folded_through_the_rules_keeps_the_input_dtype(dtype):
    """vjp(z·1j, z, 1j) of a 0-d z: the rule over two Python numbers folds at build time,
    and the cast to z's dtype (astype of a weak constant node) folded back to a Python
    complex128 (a float64 6.0 for vjp(x·2, x, 3.0), an older slip of the same cast)."""
    a = np.asarray(0.5 - 1.5j if dtype == "complex64" else 1.25, dtype)
    factor, cot = (1j, 1j) if dtype == "complex64" else (2, 3.0)
    with fg.Graph():
        z = fg.placeholder("z", shape=(), dtype=dtype)
        back = fg.vjp(z * factor, z, cot)
        assert back.dtype == dtype
        progs = _programs([back])
    t = torch.tensor(a, requires_grad=True)
    (t * factor).backward(torch.tensor(cot, dtype=t.dtype))
    _assert_like_numpy([back], [t.grad.numpy()], progs, {"z": a})
    for prog in progs.values():
        assert isinstance(prog(z=a)[0], (np.ndarray, np.generic))
