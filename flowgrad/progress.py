"""fg.progress: a tqdm progress bar, quiet when the output is not a terminal."""
from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress(iterable, desc=None, disable=None, **kwargs):
    """Wrap ``iterable`` in a tqdm bar; ``disable=None`` hides it off a TTY."""
    if disable is None:
        disable = not sys.stderr.isatty()
    return tqdm(iterable, desc=desc, disable=disable, **kwargs)
