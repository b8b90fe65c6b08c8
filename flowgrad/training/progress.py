"""fg.progress: a tqdm progress bar that shows the loss (and any metric) live.

    bar = fg.progress(range(200), desc="training")
    for epoch in bar:
        loss = opt.step(prog, x=X, t=T)
        bar.update_metrics(loss=loss)        # shown as "loss=0.1234" beside the bar

The bar is silent when stderr is not a terminal (a log file, a test, CI) unless
``disable=False``, and always with ``disable=True``. Metrics may be backend
arrays (a 0-d cupy array, say): they are brought to the host only when the bar
is about to be redrawn, at most every ``mininterval`` seconds, so a GPU loop is
not synchronised on every step — and never when the bar is silent.
"""
from __future__ import annotations

import importlib.util
import sys

if importlib.util.find_spec("ipywidgets") is not None:
    from tqdm.auto import tqdm  # a widget bar in Jupyter, a text bar elsewhere
else:
    # tqdm.auto picks the widget bar in any kernel and then warns "IProgress not found"
    # when ipywidgets is missing; the text bar works everywhere.
    from tqdm.std import tqdm


def _in_kernel() -> bool:
    """Running inside a Jupyter kernel (not merely having imported ipykernel, which
    starting a kernel from Python does)."""
    ipython = sys.modules.get("IPython")
    shell = getattr(ipython, "get_ipython", lambda: None)() if ipython else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def _interactive() -> bool:
    """A terminal on stderr, or a Jupyter kernel (whose stderr is no TTY)."""
    if _in_kernel():
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _format(value) -> str:
    from ..backends import to_numpy
    if isinstance(value, str):
        return value
    try:
        arr = to_numpy(value)
        if getattr(arr, "size", 0) == 1:
            return f"{float(arr.reshape(())):.4g}"
    except (TypeError, ValueError):
        pass
    return str(value)


class ProgressBar(tqdm):
    """A tqdm bar with :meth:`update_metrics`; use it as an iterable or a context manager."""

    def __init__(self, *args, **kwargs):
        self.metrics: dict = {}
        super().__init__(*args, **kwargs)

    def update_metrics(self, **metrics):
        """Record named values (loss, accuracy, ...) to show beside the bar. Cheap: the
        latest raw values are kept in ``bar.metrics`` and formatted only when tqdm
        redraws the bar, so what it shows is always the latest."""
        self.metrics.update(metrics)

    @property
    def format_dict(self):
        d = super().format_dict
        if self.metrics:
            d["postfix"] = ", ".join(f"{k}={_format(v)}" for k, v in self.metrics.items())
        return d


def progress(iterable=None, desc=None, disable=None, total=None, **kwargs) -> ProgressBar:
    """Wrap ``iterable`` (or count to ``total``) in a progress bar; ``disable=None``
    hides it off a terminal. Other keywords go to tqdm (``leave``, ``unit``, ...)."""
    if disable is None:
        disable = not _interactive()
    return ProgressBar(iterable, desc=desc, total=total, disable=disable, **kwargs)

__all__ = ["ProgressBar", "progress"]


def __dir__():
    # the public names only: dir(fg.progress) shows no np, math or threading
    return sorted(__all__)
