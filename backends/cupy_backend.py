"""The NVIDIA GPU backend: cupy's namespace. Needs ``pip install flowgrad[gpu]``.

cupy is imported when this backend is first asked for (``fg.compile(..., backend="cupy")``),
never by ``import flowgrad``. Where it is missing, or no GPU answers, asking for it
raises ``fg.BackendError`` saying how to install it.

Where the data lives:

* **feeds** given as numpy arrays cross to the device once per call, cast to the
  placeholder's dtype on the host first (a float64 batch fed to a float32 placeholder
  moves half the bytes); cupy arrays are used as they are;
* **constants** move once, when the program is compiled;
* **variables** move on their first read and are *stored back* on the device, and an
  optimizer writes its updates there too, so training never copies a parameter back
  and forth. ``w.value`` is then a cupy array; ``fg.to_numpy(w.value)`` brings it home.

dtype policy: every node keeps the dtype it was built with (the graph decides, not the
backend), so float64 graphs run in float64. ``default_float`` is float32, the dtype GPUs
are fast in: build placeholders and variables with ``dtype="float32"`` for speed.
"""
from __future__ import annotations

import numpy as np

from flowgrad.errors import BackendError

from .base import Backend, host

INSTALL = ("install it with `pip install flowgrad[gpu]` (cupy-cuda12x; a CUDA 13 driver "
           "also takes cupy-cuda13x) on a machine with an NVIDIA GPU and its driver")


def _load_cupy():
    """cupy, checked to reach a working GPU; BackendError otherwise."""
    try:
        import cupy
    except Exception as e:  # ImportError, or a broken CUDA install failing at import
        raise BackendError(f"the cupy backend needs cupy, which could not be imported "
                           f"({type(e).__name__}: {e}); {INSTALL}") from None
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError("no CUDA device")
        int((cupy.arange(3) + 1).sum())  # a kernel really runs (driver, NVRTC)
    except BackendError:
        raise
    except Exception as e:
        raise BackendError(f"the cupy backend found no usable NVIDIA GPU "
                           f"({type(e).__name__}: {e}); {INSTALL}") from None
    return cupy


class CupyBackend(Backend):
    name = "cupy"
    default_float = np.dtype(np.float32)
    fusion = "elementwise"

    def __init__(self):
        cupy = _load_cupy()
        self.xp = cupy
        self._ndarray = cupy.ndarray

    def asarray(self, value, dtype=None):
        if isinstance(value, self._ndarray):
            return value if dtype is None or value.dtype == dtype else value.astype(dtype)
        value = host(value)
        if dtype is not None:
            value = np.asarray(value, dtype=dtype)  # cast on the host, then one copy
        return self.xp.asarray(value)

    def to_numpy(self, array) -> np.ndarray:
        return self.xp.asnumpy(array)

    def owns(self, array) -> bool:
        return isinstance(array, self._ndarray)

    def read_variable(self, node):
        value = node.more["value"]
        arr = self.asarray(value)
        if arr is not value:
            node.more["value"] = arr  # kept on the device: the next read is a no-op
        return arr

    def synchronize(self):
        """Wait for every kernel queued on the current device (for timing)."""
        self.xp.cuda.Device().synchronize()
