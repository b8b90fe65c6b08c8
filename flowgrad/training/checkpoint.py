"""Saving and loading variables' values: one ``.npz`` archive of plain arrays.

    fg.save_variables("model.npz", g)            # every variable of graph g, by node name
    fg.save_variables("model.npz", [w, b])       # these, by node name
    fg.save_variables("model.npz", {"W1": w})    # these, under names of your choosing
    fg.load_variables("model.npz", g)            # the same three forms

**Format.** A zip archive (numpy's ``.npz``) whose member ``names.npy`` is a 1-d string
array of the variable names and whose members ``0.npy``, ``1.npy``, … are their values,
in that order: names are data, so any name (``file``, ``allow_pickle``, ``a/b``) is
stored as it is. ``np.load`` reads it (``f["names"]``, ``f["0"]``). A file of the first
layout, one member per name, still loads.

**Loading is safe with files you did not write.** Nothing is unpickled. Each member's
``.npy`` header (shape, dtype) is checked against the variable before any of its data is
read; the zip directory's declared size must be exactly what the header implies, and at
most that many bytes are ever decompressed, so a small file that would inflate to
gigabytes is refused after reading its header. Counts and sizes are checked before
anything is read or allocated: ``names.npy`` must list exactly as many names as the
archive holds arrays, and the members a load reads may declare at most ``max_bytes``
bytes in all — by default ``LOAD_RATIO`` (64) times the file's own size, so a file can
never make flowgrad decompress or allocate more than 64× what it takes on disk (a
checkpoint ``save_variables`` wrote is stored uncompressed: ~1×). Each array is read
straight into its one buffer (no second copy). Values must fit the variable's dtype
(no float64 1e300 into float32, no int64 2**40 into int32). Every problem — an empty,
truncated, corrupt or foreign file included — is a :class:`CheckpointError`, raised
after everything was read and checked and before any variable is assigned: a
checkpoint loads whole or not at all.

**Files are written with your umask** (0644 under the usual 022, as numpy and torch
write theirs); re-saving over an existing checkpoint keeps its mode.
"""
from __future__ import annotations

import numbers
import os
import pathlib
import struct
import zipfile
import zlib
from collections.abc import Mapping

import numpy as np

from ..backends import to_numpy
from ..errors import ArgumentError, FlowgradError, UsageError
from ..ops.base import at_user_line
from ..graph import Graph, Node
from ..state import assign_together
from ..userfiles import write_atomically

__all__ = ["CheckpointError", "save_variables", "load_variables", "LOAD_RATIO"]

_NAMES = "names.npy"
_MAX_NAMES_BYTES = 64 << 20     # the names array: 64 MiB is millions of long names
LOAD_RATIO = 64                 # default max_bytes: this many times the file's size
_CHUNK = 1 << 18                # data is decompressed into its array this much at a time
# what a broken or hostile zip raises while it is read (a missing file stays an OSError)
_READ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, KeyError,
                NotImplementedError, RuntimeError, OverflowError, zlib.error, struct.error)


class CheckpointError(FlowgradError, ValueError):
    """A checkpoint that does not fit the variables (a name missing or extra, a wrong
    shape, dtype or out-of-range value) or is not a readable checkpoint at all."""


def _named_variables(variables) -> dict[str, Node]:
    """{name: variable node} from a Graph, a mapping of names to nodes, or nodes."""
    if isinstance(variables, Graph):
        return {n.name: n for n in variables.nodes if n.kind == "variable"}
    if isinstance(variables, Node):
        variables = [variables]
    if isinstance(variables, Mapping):
        items = list(variables.items())
    else:
        items = [(getattr(v, "name", None), v) for v in variables]
    named = {}
    for name, v in items:
        if not isinstance(v, Node) or v.kind != "variable":
            raise UsageError(f"only fg.variable nodes are saved and loaded, got {v!r}"
                             + at_user_line())
        if not isinstance(name, str) or not name:
            raise CheckpointError(f"a checkpoint name must be a non-empty string, got {name!r}"
                                  + at_user_line())
        if name in named and named[name] is not v:
            raise CheckpointError(f"two variables share the name {name!r}; pass a dict "
                                  "{name: variable} to tell them apart" + at_user_line())
        named[name] = v
    return named


def save_variables(path, variables) -> pathlib.Path:
    """Write the current values of ``variables`` (a Graph — all its variables —, a list
    of variable nodes, or a ``{name: variable}`` dict) to ``path`` as ``.npz``.

    ``.npz`` is appended to a path without it (as numpy does). The file is written
    to a temporary name and then moved into place, so an interrupted save never
    leaves a half-written checkpoint; it gets the mode ``open()`` would give it (0o666
    less the umask, or the mode of the file it replaces). Returns the path written.
    """
    named = _named_variables(variables)
    if not named:
        raise CheckpointError("there are no variables to save" + at_user_line())
    path = pathlib.Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    members = {_NAMES: np.array(list(named), dtype=str)}
    for k, v in enumerate(named.values()):
        members[f"{k}.npy"] = np.asarray(to_numpy(v.value))
    with write_atomically(path) as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
        for member, arr in members.items():
            with zf.open(member, "w", force_zip64=True) as m:
                np.lib.format.write_array(m, arr, allow_pickle=False)
    return path


def load_variables(path, variables, strict: bool = True, max_bytes=None) -> list[str]:
    """Assign values saved by ``save_variables`` to ``variables`` (same three forms).

    With ``strict`` (the default) every variable must be in the file and every array
    in the file must belong to a variable; ``strict=False`` loads the names the two
    share and ignores the rest. Shapes must match, dtypes cast safely (``same_kind``)
    and every value fit the variable's dtype, else ``CheckpointError`` — and then no
    variable is changed. A file that is not a readable checkpoint is a
    ``CheckpointError`` too. Returns the names loaded.

    ``max_bytes`` bounds the bytes the members read may declare (decompressed), checked
    before any is read: by default ``LOAD_RATIO`` (64) times the file's size. A
    checkpoint compressed more than that (``np.savez_compressed`` of mostly zeros) needs
    an explicit ``max_bytes=``.
    """
    named = _named_variables(variables)
    if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(
            max_bytes, numbers.Integral) or max_bytes < 0):
        raise ArgumentError(f"max_bytes must be a non-negative integer or None, got {max_bytes!r}"
                            + at_user_line())
    where = os.fspath(path) if isinstance(path, (str, os.PathLike)) else repr(path)
    f = path if hasattr(path, "read") else open(path, "rb")  # a missing file: OSError
    try:
        budget = _Budget(f, max_bytes, where)
        with zipfile.ZipFile(f) as zf:
            values = _read(zf, named, strict, where, budget)
    except CheckpointError:
        raise
    except (*_READ_ERRORS, OSError) as e:   # OSError: a seek a broken directory asked for
        raise CheckpointError(f"{where!r} is not a readable flowgrad checkpoint "
                              f"({type(e).__name__}: {e}); no variable was changed") from e
    finally:
        if f is not path:
            f.close()
    # everything read and checked: now assign, all or none (even if interrupted)
    assign_together([named[name] for name in values], list(values.values()))
    return list(values)


class _Budget:
    """The bytes of member data a load may still read: ``max_bytes``, or ``LOAD_RATIO``
    times the file's size."""

    def __init__(self, f, max_bytes, where):
        self.where, self.size = where, None
        if max_bytes is None:
            here = f.tell()
            self.size = f.seek(0, os.SEEK_END) - here
            f.seek(here)
            max_bytes = LOAD_RATIO * self.size
        self.left = self.limit = int(max_bytes)

    def take(self, nbytes: int, what: str) -> None:
        """Charge ``nbytes`` (before they are read), or refuse."""
        if nbytes > self.left:
            why = (f"max_bytes={self.limit}" if self.size is None else
                   f"{LOAD_RATIO}x the file's {self.size} bytes ({self.limit}); pass "
                   f"max_bytes= to load it anyway")
            raise CheckpointError(f"{self.where!r}: {what} would take "
                                  f"{self.limit - self.left + nbytes} bytes in all, more "
                                  f"than {why}")
        self.left -= nbytes


def _read(zf: zipfile.ZipFile, named: dict, strict: bool, where: str, budget) -> dict:
    """{name: array} for the variables to load, every member checked; raises
    CheckpointError (or one of _READ_ERRORS) and assigns nothing."""
    members = _members(zf, where, budget)
    missing = sorted(set(named) - set(members))
    extra = sorted(set(members) - set(named))
    if strict and (missing or extra):
        parts = []
        if missing:
            parts.append(f"variables missing from the file: {missing}")
        if extra:
            parts.append(f"arrays in the file that match no variable: {extra}")
        raise CheckpointError(f"{where!r} does not fit the variables; "
                              + "; ".join(parts) + " (strict=False loads the names they share)")
    budget.take(sum(members[n].file_size for n in named if n in members), "the arrays")
    values = {}
    for name, v in named.items():
        if name in members:
            values[name] = _read_value(zf, members[name], name, v)
    return values


def _members(zf: zipfile.ZipFile, where: str, budget) -> dict[str, zipfile.ZipInfo]:
    """{variable name: zip member}, from ``names.npy`` or, in the first layout, from
    the member names themselves."""
    infos = zf.infolist()
    if not infos:
        raise CheckpointError(f"{where!r} is an empty archive, not a checkpoint")
    by_name = {}
    for info in infos:
        if info.filename in by_name:
            raise CheckpointError(f"{where!r} holds the member {info.filename!r} twice")
        by_name[info.filename] = info
    if _NAMES in by_name and len(by_name) == len(infos):
        info = by_name[_NAMES]
        with zf.open(info) as m:
            shape, fortran, dtype, offset = _header(m, info, where)
            if len(shape) != 1 or dtype.kind != "U" or \
                    shape[0] * dtype.itemsize > _MAX_NAMES_BYTES:
                raise CheckpointError(f"{where!r}: names.npy must be a 1-d array of names, "
                                      f"it declares shape {shape} and dtype {dtype}")
            if shape[0] != len(infos) - 1:       # counted before a name is read
                raise CheckpointError(f"{where!r}: names.npy declares {shape[0]} names, "
                                      f"but the archive holds {len(infos) - 1} arrays")
            budget.take(info.file_size, "names.npy")
            names = _data(m, info, shape, fortran, dtype, offset, where, _NAMES)
        names = [str(n) for n in names]
        if sorted(by_name) != sorted([_NAMES] + [f"{k}.npy" for k in range(len(names))]):
            raise CheckpointError(f"{where!r}: names.npy lists {len(names)} arrays, but the "
                                  f"archive holds {sorted(by_name)}")
        if len(set(names)) != len(names) or not all(names):
            raise CheckpointError(f"{where!r}: names.npy holds an empty or repeated name")
        return {n: by_name[f"{k}.npy"] for k, n in enumerate(names)}
    members = {}
    for filename, info in by_name.items():
        if not filename.endswith(".npy"):
            raise CheckpointError(f"{where!r} holds {filename!r}, which is not a .npy "
                                  f"array: not a flowgrad checkpoint")
        members[filename[:-4]] = info
    return members


def _read_value(zf, info, name, v) -> np.ndarray:
    """The value of member ``info`` for variable ``v``: its header checked against ``v``
    before a byte of data is read, then the data, cast to ``v``'s dtype if it fits."""
    with zf.open(info) as m:
        shape, fortran, dtype, offset = _header(m, info, name)
        if shape != v.shape:
            raise CheckpointError(f"{name!r}: the file holds shape {shape}, "
                                  f"the variable has shape {v.shape}")
        if not np.can_cast(dtype, v.dtype, "same_kind"):
            raise CheckpointError(f"{name!r}: the file holds dtype {dtype}, "
                                  f"the variable has dtype {v.dtype}")
        arr = _data(m, info, shape, fortran, dtype, offset, name, name)
    if arr.dtype == v.dtype:
        return arr
    if v.dtype.kind in "iu" and arr.dtype.kind in "iu":     # a range check, no copy
        lo, hi = np.iinfo(v.dtype).min, np.iinfo(v.dtype).max
        fits = arr.size == 0 or (int(arr.min()) >= lo and int(arr.max()) <= hi)
        cast = arr.astype(v.dtype) if fits else None
    else:
        with np.errstate(all="ignore"):
            cast = arr.astype(v.dtype)
            if v.dtype.kind in "fc":
                fits = np.array_equal(np.isfinite(cast), np.isfinite(arr))
            else:
                fits = np.array_equal(cast.astype(arr.dtype), arr)
    if not fits:
        raise CheckpointError(f"{name!r}: the file holds {dtype} values that do not fit "
                              f"the variable's dtype {v.dtype} (overflow)")
    return cast


def _header(m, info, what):
    """(shape, fortran order, dtype, header length) from a member's ``.npy`` header."""
    version = np.lib.format.read_magic(m)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(m)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(m)
    else:
        raise CheckpointError(f"{what!r}: unsupported .npy format version {version}")
    if dtype.hasobject:
        raise CheckpointError(f"{what!r} holds Python objects, which only unpickling "
                              "(allow_pickle) could read: refused")
    return tuple(int(s) for s in shape), bool(fortran), dtype, m.tell()


def _data(m, info, shape, fortran, dtype, offset, where, what) -> np.ndarray:
    """Exactly the bytes the header declares, never more: the zip directory's size
    must agree, and a short or overlong member (or a bad CRC) is refused. The data is
    decompressed chunk by chunk straight into the array's one buffer."""
    count = int(np.prod(shape, dtype=object))
    nbytes = count * dtype.itemsize
    if info.file_size != offset + nbytes:
        raise CheckpointError(f"{what!r} in {where!r}: the header declares {nbytes} bytes of "
                              f"data, the archive {info.file_size - offset}")
    flat = np.empty(count, dtype)
    raw = flat.view(np.uint8) if nbytes else flat[:0]
    done = 0
    while done < nbytes:
        chunk = m.read(min(nbytes - done, _CHUNK))
        if not chunk:
            break
        raw[done:done + len(chunk)] = np.frombuffer(chunk, np.uint8)
        done += len(chunk)
    if done != nbytes or m.read(1):           # reading to the end checks the CRC too
        raise CheckpointError(f"{what!r} in {where!r} is truncated or overlong")
    return flat.reshape(shape, order="F" if fortran else "C")
