"""The backend interface: an array namespace ``xp`` plus host conversion and dtype policy.

A backend is small on purpose: ops compute with ``backend.xp`` only, so adding
one is a file that names its namespace and how arrays cross to and from the host.
"""
from __future__ import annotations

import numpy as np


class Backend:
    name = "abstract"
    xp = None
    #: the float dtype a backend prefers when the user states none
    default_float = np.dtype(np.float64)

    def asarray(self, value, dtype=None):
        """``value`` as an array of this backend (moved to its device once)."""
        return self.xp.asarray(value, dtype=dtype)

    def to_numpy(self, array) -> np.ndarray:
        """An array of this backend brought back to the host."""
        return np.asarray(array)

    def owns(self, array) -> bool:
        """Whether ``array`` already lives on this backend (no conversion needed)."""
        return False

    def __repr__(self):
        return f"<flowgrad backend {self.name}>"
