"""Writing a file all at once: to a temporary name beside it, then moved into place,
so that a reader never sees half a file and a failed write leaves the old one.

The temporary file is created with mode 0o666 and the user's umask applies, as for
any file the user's programs write (numpy's ``np.save`` and ``open`` do the same);
``tempfile.mkstemp`` would make it 0o600 whatever the umask.
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import secrets


@contextlib.contextmanager
def atomic_write(path):
    """``with atomic_write(path) as f: f.write(...)``: ``path`` appears, complete, when
    the block ends without an exception; otherwise nothing is left behind."""
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    # O_EXCL: never follow or reuse a file someone else put at the temporary name
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
