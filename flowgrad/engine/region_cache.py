"""The disk cache of region loops (region_kernels.py): where it lives, and which of its
files flowgrad may use.

The directory is ``$FLOWGRAD_CACHE_DIR``, else ``~/.cache/flowgrad/regions``. Per loop it
holds ``r_<key>.py`` (the generated source) and, under ``__pycache__/``, numba's index
(``.nbi``) and compiled code (``.nbc``) of its ``kernel`` — both pickles, and loading a
pickle runs whatever code it names. So the cache is used only where no other user can
have written into it:

* Every directory flowgrad creates for it (``__pycache__`` included) is made 0700. The
  cache directory and its ``__pycache__`` must be owned by this user and not writable by
  group or others, and each directory above them owned by this user or root and not
  group/world-writable unless sticky (``/tmp``): else another user could swap it. A
  directory that fails is refused with one warning per process and directory, and loops
  compile in memory (no files read or written).
* ``r_<key>.py`` is never imported (importing would also read a planted ``.pyc``): the
  module is built in memory from the source flowgrad generated; the file only gives numba
  a path to key its cache on, and is rewritten when it holds other text.
* numba reads a loop's ``.nbi``/``.nbc`` only when each is a regular file owned by this
  user and not writable by group or others; files that fail are removed (with a warning)
  and the loop compiled afresh. Files numba writes are made so (numba creates them with
  the umask's mode).
* A corrupt or truncated entry (numba fails to load it) is removed with a warning and
  compiled and saved again: never a silent, lasting loss of the compiled loop.

Trust is ownership and mode, not a keyed digest: numba writes and reads its own files,
so a digest would mean hooking both inside numba, and a file only this user (or root)
could have written is exactly what a digest would prove; this user can run code as
themselves anyway.
"""
from __future__ import annotations

import os
import stat
import sys
import tempfile
import threading
import types
import warnings

from numba.core.caching import CompileResultCacheImpl, FunctionCache, InTreeCacheLocator

__all__ = ["RegionCacheWarning", "cache_dir", "cached_kernel"]

_PYCACHE = "__pycache__"


class RegionCacheWarning(RuntimeWarning):
    """The region cache refused a directory or a file, or rebuilt a broken entry."""


_warned: set = set()
_warned_lock = threading.Lock()


def _warn_once(directory: str, message: str) -> None:
    """One warning per process and directory: a refused cache is said once, not per loop."""
    with _warned_lock:
        if directory in _warned:
            return
        _warned.add(directory)
    warnings.warn(f"flowgrad region cache: {message}; loops are compiled in memory",
                  RegionCacheWarning, stacklevel=3)


def _mode_problem(st, what, owners=None, sticky_ok=False) -> str | None:
    """Why a file or directory with stat ``st`` cannot be trusted, or None: it must be
    owned by one of ``owners`` (default: this user) and not writable by group or others
    (a sticky directory, if ``sticky_ok``: others cannot rename what is in it)."""
    uid = os.geteuid()
    if st.st_uid not in (owners or (uid,)):
        return f"{what} is owned by uid {st.st_uid}, not by you (uid {uid})"
    sticky = sticky_ok and stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX
    if st.st_mode & 0o022 and not sticky:
        return f"{what} is writable by group or others (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def _dir_problem(path: str) -> str | None:
    """Why ``path`` (a real path) cannot hold the cache: it must be a directory owned by
    this user, not group/world-writable, under directories that no other user can
    rename it out of (owned by this user or root, not writable by others unless sticky)."""
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        return f"{path!r} is not a directory"
    problem = _mode_problem(st, repr(path))
    parent = os.path.dirname(path)
    while problem is None and parent != path:       # up to the root, iteratively
        path, parent = parent, os.path.dirname(parent)
        problem = _mode_problem(os.lstat(path), f"its parent {path!r}",
                                (os.geteuid(), 0), sticky_ok=True)
    return problem


def _make_private_dir(path: str) -> None:
    """Create ``path`` and any missing parents 0700 (whatever the umask)."""
    missing = []
    while not os.path.lexists(path):
        missing.append(path)
        path = os.path.dirname(path)
    for p in reversed(missing):
        try:
            os.mkdir(p, 0o700)
        except FileExistsError:        # another process made it: checked like any other
            continue
        os.chmod(p, 0o700)


def _checked_dir(path: str) -> str | None:
    """``path`` created 0700 if missing, and returned if it can be trusted; None (after
    one warning for this directory) if not."""
    try:
        _make_private_dir(path)
        problem = _dir_problem(path)
        if problem is None and not os.access(path, os.W_OK | os.X_OK):
            problem = f"{path!r} is not writable"
    except OSError as exc:
        problem = f"{path!r} cannot be used ({exc})"
    if problem is not None:
        _warn_once(path, problem)
        return None
    return path


def cache_dir() -> str | None:
    """The cache directory ($FLOWGRAD_CACHE_DIR, else ~/.cache/flowgrad/regions), created
    0700 if missing; None when it cannot be trusted or written (no disk cache)."""
    base = os.environ.get("FLOWGRAD_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "flowgrad", "regions")
    base = os.path.realpath(base)     # the directories checked are the ones really used
    return _checked_dir(base)


def _file_problem(path: str) -> str | None:
    """Why the file at ``path`` cannot be trusted (regular, this user's, not writable by
    group or others), or None."""
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        return f"{path!r} is not a regular file"
    return _mode_problem(st, repr(path))


def _holds(path: str, text: str) -> bool:
    """Whether ``path`` is a trusted file holding exactly ``text``."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or _mode_problem(st, ""):
            return False
        return f.read(len(text.encode()) + 1) == text.encode()


def _write(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (other processes may be reading it), 0600."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _module(source: str, key: str, path: str):
    """The region's module, built from ``source`` in memory, never imported from
    ``path`` (an import would read a ``.pyc`` too); numba finds a cached kernel's globals
    through ``sys.modules``, so the module is registered there under its name."""
    name = f"flowgrad_region_{key}"
    module = sys.modules.get(name)
    if module is None or (getattr(module, "fg_source", None), module.__file__) != (source, path):
        module = types.ModuleType(name)
        module.__file__, module.fg_source = path, source
        exec(compile(source, path, "exec"), module.__dict__)
        sys.modules[name] = module
    return module


class _InTreeImpl(CompileResultCacheImpl):
    """numba's cache of compile results, kept only in the module's own ``__pycache__``
    (never a NUMBA_CACHE_DIR or user-wide directory flowgrad has not checked)."""
    _locator_classes = [InTreeCacheLocator]


class CheckedCache(FunctionCache):
    """numba's disk cache of one region kernel, which lets numba read (unpickle) the
    kernel's files only after checking them, and rebuilds an entry numba cannot load."""

    _impl_class = _InTreeImpl

    def __init__(self, py_func, directory: str, key: str):
        super().__init__(py_func)
        if os.path.realpath(self.cache_path) != directory:   # NUMBA_CACHE_LOCATOR_CLASSES
            raise OSError(f"numba chose {self.cache_path!r}, not {directory!r}")
        self.fg_directory, self.fg_prefix = directory, f"r_{key}."

    def _fg_entries(self):
        try:
            with os.scandir(self.fg_directory) as it:
                return [e.path for e in it if e.name.startswith(self.fg_prefix)
                        and e.name.endswith((".nbi", ".nbc"))]
        except OSError:
            return []

    def _fg_remove(self, why: str) -> None:
        warnings.warn(f"flowgrad region cache: {why}; the entry is removed and the loop "
                      f"compiled again", RegionCacheWarning, stacklevel=2)
        for path in self._fg_entries():
            try:
                os.unlink(path)
            except OSError:
                pass

    def _fg_trusted(self) -> bool:
        """The entry's files are all trusted (or have just been removed)."""
        for path in self._fg_entries():
            try:
                problem = _file_problem(path)
            except FileNotFoundError:     # another process replaced or removed it
                continue
            except OSError as exc:
                problem = f"{path!r} cannot be checked ({exc})"
            if problem is not None:
                self._fg_remove(f"{problem}: not loaded")
                return False
        return True

    def load_overload(self, sig, target_context):
        self._fg_trusted()
        try:
            return super().load_overload(sig, target_context)
        except Exception as exc:          # corrupt, truncated, another numba's format …
            self._fg_remove(f"a cache entry could not be loaded ({type(exc).__name__}: "
                            f"{exc})")
            return None

    def save_overload(self, sig, data):
        if not self._fg_trusted():        # numba's save reads the index first
            return
        try:
            super().save_overload(sig, data)
        except Exception as exc:
            self._fg_remove(f"a cache entry could not be saved ({type(exc).__name__}: "
                            f"{exc})")
        for path in self._fg_entries():   # numba writes with the umask's mode
            try:
                st = os.lstat(path)
                if stat.S_ISREG(st.st_mode) and st.st_mode & 0o022:
                    os.chmod(path, stat.S_IMODE(st.st_mode) & ~0o022)
            except OSError:               # gone already: checked again when loaded
                pass


def cached_kernel(source: str, key: str, jit):
    """The function ``kernel`` of a region module's source, jitted by ``jit`` (numba.njit
    with the loop's options, no cache) and given a checked disk cache under
    ``cache_dir()``; None when there is no trusted directory (compile in memory)."""
    base = cache_dir()
    pycache = base and _checked_dir(os.path.join(base, _PYCACHE))
    if pycache is None:
        return None
    path = os.path.join(base, f"r_{key}.py")
    try:
        if not _holds(path, source):
            _write(path, source)
    except OSError as exc:
        _warn_once(base, f"{path!r} cannot be written ({exc})")
        return None
    module = _module(source, key, path)
    fn = jit(module.kernel)
    try:
        cache = CheckedCache(module.kernel, pycache, key)
    except (OSError, RuntimeError) as exc:
        _warn_once(pycache, f"numba's cache cannot be placed there ({exc})")
        return fn
    fn._cache = cache        # numba's Dispatcher.enable_caching sets the same attribute
    return fn
