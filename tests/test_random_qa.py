"""fg.random's, fg.custom_vjp's and fg.remat's argument refusals are flowgrad errors
(still the TypeError / ValueError they were) naming the user's line."""
import numpy as np
import pytest

import flowgrad as fg


REFUSALS = [   # (call, error class, message): each at the first value refused
    (lambda: fg.random.normal((2,), std=-1e-300), fg.ArgumentError, "std must be ≥ 0"),
    (lambda: fg.random.normal((2,), mean=float("nan")), fg.UsageError, "mean must be a finite"),
    (lambda: fg.random.uniform((2,), low=1.0, high=0.9999), fg.ArgumentError, "low ≤ high"),
    (lambda: fg.random.bernoulli((2,), p=1.0000001), fg.ArgumentError, "p must lie"),
    (lambda: fg.random.normal((2,), dtype="int8"), fg.UsageError, "dtype must be a float"),
    (lambda: fg.random.uniform(like=2.0), fg.UsageError, "not the Python scalar"),
    (lambda: fg.custom_vjp(3), fg.UsageError, "decorates a function"),
    (lambda: fg.custom_jvp(name=""), fg.ArgumentError, "non-empty string"),
    (lambda: fg.custom_vjp(lambda x: x).defvjp(3), fg.UsageError, "takes a function"),
    (lambda: fg.remat(3), fg.UsageError, "takes a function"),
]


@pytest.mark.parametrize("call, cls, message", REFUSALS)
def test_refusals_are_typed_and_name_the_users_line(call, cls, message):
    with fg.Graph():
        with pytest.raises(cls, match=message) as err:
            call()
    assert isinstance(err.value, (TypeError, ValueError))     # what they were before
    assert f"at {__file__}:" in str(err.value)                # the lambda's line above


def test_the_boundaries_are_accepted():
    with fg.Graph():
        draws = [fg.random.normal((2,), std=0.0, seed=1),
                 fg.random.uniform((2,), low=1.0, high=1.0, seed=2),
                 fg.random.bernoulli((2,), p=1.0, seed=3),
                 fg.random.bernoulli((2,), p=0.0, seed=4, dtype="int8")]
        values = fg.run(draws)
    np.testing.assert_array_equal(values[0], [0.0, 0.0])
    np.testing.assert_array_equal(values[1], [1.0, 1.0])
    np.testing.assert_array_equal(values[2], [1.0, 1.0])
    assert values[3].dtype == np.int8 and not values[3].any()
