"""The CPU backend: numpy itself."""
import numpy as np

from .base import Backend, host


class NumpyBackend(Backend):
    name = "numpy"
    xp = np
    fusion = "numexpr"
    regions = scalar_floats = lean_kernels = fast_feeds = in_place = True

    def asarray(self, value, dtype=None):
        # an array of another backend (a variable last trained on cupy) comes back to the host
        return np.asarray(value if isinstance(value, np.ndarray) else host(value), dtype=dtype)

    def owns(self, array) -> bool:
        return isinstance(array, (np.ndarray, np.generic))
