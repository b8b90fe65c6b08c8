"""fg.nn.BatchNorm on float16 with a run-time batch length and more than 65504 values a
channel. The checked count (batch_norm_count) was made in x's float16, inf past 65504,
and the variance summed d² in float16 (inf too): inf / inf, every output NaN and the
running variance NaN, silently. The same batch with a static shape (numpy's mean, which
accumulates float16 in float32) was right. The count is now at least float32 and the
float16 d² is summed in it, as torch's half BatchNorm accumulates in float32. Against
torch in float64 on the same float16 values, every executor path."""
import numpy as np
import pytest

import flowgrad as fg

torch = pytest.importorskip("torch")

N, C, H, W = 80, 2, 30, 30                      # 72 000 values a channel
X = (np.random.default_rng(0).standard_normal((N, C, H, W)) * [[[[1.0]], [[3.0]]]]
     + 2.0).astype(np.float16)


def _torch_reference():
    bn = torch.nn.BatchNorm2d(C, dtype=torch.float64)
    y = bn(torch.tensor(X.astype(np.float64)))
    return y.detach().numpy(), bn.running_mean.numpy(), bn.running_var.numpy()


@pytest.mark.parametrize("flags", [{"codegen": False}, {}, {"backend": "dask"}])
@pytest.mark.parametrize("shape", [(None, C, H, W), (None, C, None, None)])
def test_float16_batch_norm_past_65504_values_a_channel(flags, shape):
    want_y, want_mean, want_var = _torch_reference()
    with fg.Graph():
        x = fg.placeholder("x", shape=shape, dtype="float16")
        bn = fg.nn.BatchNorm(C)
        y = bn(x)
        got = fg.to_numpy(fg.compile(y, **flags)(x=X))
    assert got.dtype == np.float16 and bn.running_var.value.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float64), want_y, atol=1e-2)
    np.testing.assert_allclose(bn.running_mean.value, want_mean, rtol=2e-3)
    np.testing.assert_allclose(bn.running_var.value, want_var, rtol=2e-3)


def test_float32_and_float64_build_no_cast():
    """The fix adds casts only for float16: a float32 layer's graph has no astype."""
    with fg.Graph() as g:
        bn = fg.nn.BatchNorm(C)
        bn(fg.placeholder("x", shape=(None, C), dtype="float32"))
        assert not [n for n in g.nodes if n.op is not None and n.op.name == "astype"]


def test_float16_mean_on_dask_is_numpys():
    """BatchNorm's batch mean on dask: dask's float16 mean (sum and count in float16)
    was NaN past 65504 entries, where numpy's (summed in float32) is right."""
    with fg.Graph():
        x = fg.placeholder("x", shape=(None, C, H, W), dtype="float16")
        m = fg.mean(x, axis=(0, 2, 3))
        got = fg.to_numpy(fg.compile(m, backend="dask")(x=X))
    want = np.mean(X, axis=(0, 2, 3))
    assert got.dtype == want.dtype == np.float16
    np.testing.assert_array_equal(got, want)
