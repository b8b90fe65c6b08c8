"""Mistakes at grad, vjp, jvp, hvp, jacobian and hessian are typed FlowgradErrors that end
with the user's line (file:line of the call), as the core API's are; jacobian and hessian
of something that is not a node said AttributeError ('int' has no attribute 'graph')."""
import numpy as np
import pytest

import flowgrad as fg

HERE = __file__.rsplit("/", 1)[-1]


def _mistakes(x, s):
    return {
        "grad of a vector": (lambda: fg.grad(x, x), fg.DifferentiationError),
        "grad wrt a number": (lambda: fg.grad(s, 3), fg.UsageError),
        "grad of a number": (lambda: fg.grad(3.0, x), fg.UsageError),
        "grad wrt an int node": (lambda: fg.grad(s, fg.placeholder("i", (), "int64")),
                                 fg.DifferentiationError),
        "jacobian wrt a number": (lambda: fg.jacobian(x, 3), fg.UsageError),
        "jacobian of a number": (lambda: fg.jacobian(3, x), fg.UsageError),
        "jacobian mode": (lambda: fg.jacobian(x, x, mode="up"), fg.ArgumentError),
        "jacobian method": (lambda: fg.jacobian(x, x, method="loop"), fg.ArgumentError),
        "hessian of a vector": (lambda: fg.hessian(x, x), fg.DifferentiationError),
        "hessian wrt a list": (lambda: fg.hessian(s, [x]), fg.UsageError),
        "vjp cotangent shape": (lambda: fg.vjp(x, x, np.ones(2)), fg.DifferentiationError),
        "jvp tangent shape": (lambda: fg.jvp(x, x, np.ones(2)), fg.DifferentiationError),
        "jvp tangent count": (lambda: fg.jvp(x, [x, x], [np.ones(3)]), fg.DifferentiationError),
        "hvp vector count": (lambda: fg.hvp(s, [x, x], [np.ones(3)]), fg.DifferentiationError),
    }


@pytest.mark.parametrize("name", list(_mistakes(None, None)))
def test_transform_mistakes_name_the_users_line(name):
    with fg.Graph():
        x = fg.placeholder("x", shape=(3,))
        s = fg.sum(fg.sin(x))
        make, cls = _mistakes(x, s)[name]
        with pytest.raises(cls) as info:
            make()
    assert isinstance(info.value, fg.FlowgradError)
    last = str(info.value).splitlines()[-1]
    assert last.startswith("  at ") and HERE in last, str(info.value)
