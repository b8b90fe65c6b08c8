"""Every case of op_cases: the value against numpy, and first and second derivatives in
reverse and forward mode against central finite differences in float64."""
import pytest

from op_cases import CASES
from opcheck import check_op


@pytest.mark.parametrize("name,fn,arrays,reference", CASES, ids=[c[0] for c in CASES])
def test_op_values_and_derivatives(name, fn, arrays, reference):
    check_op(fn, *arrays, reference=reference, order=2)
