"""The CPU backend: numpy itself."""
import numpy as np

from .base import Backend


class NumpyBackend(Backend):
    name = "numpy"
    xp = np

    def asarray(self, value, dtype=None):
        return np.asarray(value, dtype=dtype)

    def owns(self, array) -> bool:
        return isinstance(array, np.ndarray)
