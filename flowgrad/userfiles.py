"""Writing a user's file (a checkpoint, a graph file) atomically, with the mode the user
expects.

The data goes to a new file beside the target and is moved onto it only when complete,
so an interrupted save never leaves a half-written file. That new file is created as
``open()`` would create it — 0o666 less the umask, as numpy's and torch's savers do (not
``tempfile.mkstemp``'s 0600, which made every saved file private whatever the umask) —
and a file that already exists keeps its mode (as it would when ``open()`` truncated it).
"""
from __future__ import annotations

import contextlib
import os
import secrets
import stat

__all__ = ["write_atomically"]

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | \
    getattr(os, "O_CLOEXEC", 0)


def _new_file(path: str) -> tuple[int, str]:
    """(descriptor, name) of a new file in ``path``'s directory, mode 0o666 less the umask
    (the kernel applies the umask: no process-wide ``os.umask`` call, which threads race)."""
    directory, name = os.path.split(path)
    for _ in range(100):          # a clash of 48 random bits: try another name
        tmp = os.path.join(directory or ".", f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, _FLAGS, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path!r}")


@contextlib.contextmanager
def write_atomically(path):
    """``with write_atomically(path) as f:`` — ``f`` is a binary file; when the block
    ends without an error it replaces ``path``, else it is removed."""
    path = os.fspath(path)
    try:
        st = os.stat(path)
        keep = stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else None
    except OSError:
        keep = None
    fd, tmp = _new_file(path)
    try:
        with os.fdopen(fd, "wb") as f:
            if keep is not None:
                os.fchmod(f.fileno(), keep)
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
