"""The one place a user's dtype argument is read: ``as_dtype`` turns a name, a numpy type
or a dtype into a numpy dtype, and refuses anything else with the list of names it knows.

numpy's own message for ``np.dtype("f32")`` ("data type 'f32' not understood") says what
failed but not what would work; every flowgrad function that takes ``dtype=`` reads it here.
"""
from __future__ import annotations

import numpy as np

from .errors import UsageError, located

#: the dtype names flowgrad accepts (with numpy's aliases of them: "f4", np.float32, float …)
NAMES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
         "float16", "float32", "float64", "complex64", "complex128")


def as_dtype(dtype, where: str) -> np.dtype:
    """``dtype`` as a numeric numpy dtype; ``where`` names the caller in the error
    (e.g. "placeholder 'x'"). Strings, objects, datetimes, extended precision (float128:
    no backend but numpy has it) and unknown names are refused."""
    try:
        dt = np.dtype(dtype)
    except (TypeError, ValueError):
        dt = None
    if dt is None or dt.name not in NAMES:   # float128, datetimes, strings, objects
        raise located(UsageError, f"{where}: dtype {dtype!r} is not one flowgrad knows; use one of "
                         f"{', '.join(NAMES)} (or a numpy type such as np.float32)")
    return dt
