"""Saving and loading variables' values: one ``.npz`` archive of plain arrays.

    fg.save_variables("model.npz", g)            # every variable of graph g, by node name
    fg.save_variables("model.npz", [w, b])       # these, by node name
    fg.save_variables("model.npz", {"W1": w})    # these, under names of your choosing
    fg.load_variables("model.npz", g)            # the same three forms

**Format.** A zip archive (numpy's ``.npz``) whose member ``names.npy`` is a 1-d string
array of the variable names and whose members ``0.npy``, ``1.npy``, … are their values,
in that order: names are data, so any name (``file``, ``allow_pickle``, ``a/b``) is
stored as it is. ``np.load`` reads it (``f["names"]``, ``f["0"]``). A file of the first
layout, one member per name, still loads. ``save_variables(..., optimizer=opt)`` adds the
optimizer's state (``opt.state_dict()``) under ``optimizer/``: ``optimizer/keys.npy``, an
(entries, 3) string array of each entry's path in the state dict (``("state", "w",
"m")``), and ``optimizer/0.npy`` … its arrays (numbers as 0-d arrays); a load without
``optimizer=`` does not read them.

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

import contextlib
import numbers
import os
import pathlib
import struct
import tokenize
import zipfile
import zlib
from collections.abc import Mapping

import numpy as np

from ..backends import to_numpy
from ..errors import ArgumentError, FlowgradError, UsageError
from ..ops.base import at_user_line
from ..graph import Graph, Node
from ..leaves import check_variable_value
from ..state import assign_together
from ..userfiles import write_atomically

__all__ = ["CheckpointError", "save_variables", "load_variables", "LOAD_RATIO"]

_NAMES = "names.npy"
_OPTIMIZER = "optimizer/"       # the optimizer's section: keys.npy, then 0.npy, 1.npy …
_OPTIMIZER_KEYS = _OPTIMIZER + "keys.npy"
_MAX_TEXT = 1024                # the optimizer's class name, as stored, at most this many bytes
_MAX_NAMES_BYTES = 64 << 20     # the names array: 64 MiB is millions of long names
LOAD_RATIO = 64                 # default max_bytes: this many times the file's size
_CHUNK = 1 << 18                # data is decompressed into its array this much at a time
# what a broken or hostile zip raises while it is read (a missing file stays an OSError)
# numpy parses a .npy header's dict with ast.literal_eval after tokenizing it: a damaged
# header is a SyntaxError, a TokenError or a TypeError there
_READ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, KeyError,
                NotImplementedError, RuntimeError, OverflowError, zlib.error, struct.error,
                SyntaxError, TypeError, tokenize.TokenError)


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


def save_variables(path, variables, optimizer=None) -> pathlib.Path:
    """Write the current values of ``variables`` (a Graph — all its variables —, a list
    of variable nodes, or a ``{name: variable}`` dict) to ``path`` as ``.npz``.

    With ``optimizer=opt``, the optimizer's complete state (``opt.state_dict()``: its
    moments, step count, numeric learning rate, L-BFGS memory) goes into the same file,
    keyed by the names the variables are saved under, read together with the values
    under the optimizer's lock (no step of another thread comes between); every
    variable the optimizer updates must be among ``variables``. ``fg.load_variables(
    path, variables, optimizer=opt)`` resumes from it.

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
    renamed = None if optimizer is None else _checkpoint_names(optimizer, named)
    members = {}
    with contextlib.nullcontext() if optimizer is None else optimizer.lock:
        members[_NAMES] = np.array(list(named), dtype=str)
        for k, v in enumerate(named.values()):
            members[f"{k}.npy"] = np.asarray(to_numpy(v.value))
        if optimizer is not None:
            members.update(_optimizer_members(optimizer.state_dict(), renamed))
    with write_atomically(path) as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
        for member, arr in members.items():
            with zf.open(member, "w", force_zip64=True) as m:
                np.lib.format.write_array(m, arr, allow_pickle=False)
    return path


def load_variables(path, variables, strict: bool = True, max_bytes=None,
                   optimizer=None) -> list[str]:
    """Assign values saved by ``save_variables`` to ``variables`` (same three forms).

    With ``strict`` (the default) every variable must be in the file and every array
    in the file must belong to a variable; ``strict=False`` loads the names the two
    share and ignores the rest. Shapes must match, dtypes cast safely (``same_kind``)
    and every value fit the variable's dtype, else ``CheckpointError`` — and then no
    variable is changed. A file that is not a readable checkpoint is a
    ``CheckpointError`` too. Returns the names loaded.

    With ``optimizer=opt``, the optimizer's state saved with ``save_variables(...,
    optimizer=)`` is loaded too (see ``Optimizer.load_state_dict``), written with the
    values as one: the file's state must be of the same optimizer class and
    state-shaping settings, for variables of these names, with exactly their shapes
    and dtypes, and every variable ``opt`` updates must be loaded from the file. A
    file without optimizer state (saved without ``optimizer=``, or by an older
    flowgrad) is then a ``CheckpointError``: resuming would silently restart the
    optimizer. Without ``optimizer=``, a file's optimizer state is ignored (not read).

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
    renamed = None if optimizer is None else _checkpoint_names(optimizer, named)
    where = os.fspath(path) if isinstance(path, (str, os.PathLike)) else repr(path)
    f = path if hasattr(path, "read") else open(path, "rb")  # a missing file: OSError
    try:
        budget = _Budget(f, max_bytes, where)
        with zipfile.ZipFile(f) as zf:
            members, section = _members(zf, where, budget)
            values = _read(zf, members, named, strict, where, budget)
            prepared = None if optimizer is None else _read_optimizer(
                zf, section, optimizer, renamed, values, where, budget)
    except CheckpointError:
        raise
    except (*_READ_ERRORS, OSError) as e:   # OSError: a seek a broken directory asked for
        raise CheckpointError(f"{where!r} is not a readable flowgrad checkpoint "
                              f"({type(e).__name__}: {e}); no variable was changed") from e
    finally:
        if f is not path:
            f.close()
    # everything read and checked: now assign, all or none (even if interrupted)
    nodes = [named[name] for name in values]
    if prepared is None:
        assign_together(nodes, list(values.values()))
    else:                          # the values and the optimizer's state as one write
        prepared.commit(nodes, [check_variable_value(v, x) for v, x in zip(nodes, values.values())])
    return list(values)


def check_saveable(variables, optimizer) -> None:
    """Refuse (UsageError), before anything is written, an ``optimizer=`` that
    ``save_variables(path, variables, optimizer=)`` would refuse."""
    _checkpoint_names(optimizer, _named_variables(variables))


def _checkpoint_names(optimizer, named: dict) -> dict[str, str]:
    """{node name: name in the checkpoint} of the optimizer's variables, each of which
    must be among ``named`` (its state is saved and loaded with its value)."""
    from .optim import Optimizer
    if not isinstance(optimizer, Optimizer):
        raise UsageError(f"optimizer= takes an fg.optim optimizer, got {optimizer!r}"
                         + at_user_line())
    by_node = {id(v): name for name, v in named.items()}
    missing = [v.name for v in optimizer.variables if id(v) not in by_node]
    if missing:
        raise UsageError(f"the optimizer updates {missing}, which are not among the "
                         f"variables given: an optimizer's state is saved and loaded with "
                         f"the values of all its variables" + at_user_line())
    return {v.name: by_node[id(v)] for v in optimizer.variables}


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


def _read(zf: zipfile.ZipFile, members: dict, named: dict, strict: bool, where: str,
          budget) -> dict:
    """{name: array} for the variables to load, every member checked; raises
    CheckpointError (or one of _READ_ERRORS) and assigns nothing."""
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


def _members(zf: zipfile.ZipFile, where: str, budget) -> tuple[dict, dict]:
    """({variable name: zip member}, from ``names.npy`` or, in the first layout, from
    the member names themselves; {member name: zip member} of the optimizer's section,
    the members under ``optimizer/``, which only a file with ``names.npy`` has)."""
    infos = zf.infolist()
    if not infos:
        raise CheckpointError(f"{where!r} is an empty archive, not a checkpoint")
    by_name = {}
    for info in infos:
        if info.filename in by_name:
            raise CheckpointError(f"{where!r} holds the member {info.filename!r} twice")
        by_name[info.filename] = info
    if _NAMES in by_name:        # the optimizer's section is read apart (_read_optimizer)
        section = {k: i for k, i in by_name.items() if k.startswith(_OPTIMIZER)}
        by_name = {k: i for k, i in by_name.items() if k not in section}
        infos = list(by_name.values())
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
        return {n: by_name[f"{k}.npy"] for k, n in enumerate(names)}, section
    members = {}
    for filename, info in by_name.items():
        if not filename.endswith(".npy"):
            raise CheckpointError(f"{where!r} holds {filename!r}, which is not a .npy "
                                  f"array: not a flowgrad checkpoint")
        members[filename[:-4]] = info
    return members, {}


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


# -- the optimizer's section -----------------------------------------------------------
# ``optimizer/keys.npy`` is an (entries, 3) string array: each row the path of one entry
# of the state dict, padded with "" ("optimizer", "", ""), ("settings", "centered", ""),
# ("state", <variable's name in the checkpoint>, "m"), ("memory", "s", ""); member
# ``optimizer/k.npy`` holds entry k (a number as a 0-d array). A None is not stored. Names
# are data, as in names.npy: any variable name is stored as it is ("" is none's name).

def _optimizer_members(state: dict, renamed: dict) -> dict[str, np.ndarray]:
    """The members of the optimizer's section for ``state`` (a state_dict), its
    variables' states keyed by their names in the checkpoint (``renamed``)."""
    state = {**state, "state": {renamed[n]: slots for n, slots in state["state"].items()}}
    paths, arrays = [], []
    todo = [((), state)]
    while todo:                                   # (iterative: the dict is 3 deep)
        prefix, d = todo.pop()
        for key, value in d.items():
            path = prefix + (key,)
            if isinstance(value, Mapping):
                todo.append((path, value))
            elif value is not None:
                paths.append(path + ("",) * (3 - len(path)))
                arrays.append(np.asarray(value))
    members = {_OPTIMIZER_KEYS: np.array(paths, dtype=str).reshape(len(paths), 3)}
    for k, arr in enumerate(arrays):
        members[f"{_OPTIMIZER}{k}.npy"] = arr
    return members


def _read_optimizer(zf, section, optimizer, renamed, values, where, budget):
    """The optimizer's state in the file, read and checked against ``optimizer``: a
    PreparedState to commit with the values. Every member's header is checked against
    what the optimizer can hold before its data is read."""
    if not section:
        raise CheckpointError(f"{where!r} holds no optimizer state (it was saved without "
                              f"optimizer=, or by an older flowgrad); load it without "
                              f"optimizer= to start the optimizer afresh")
    unloaded = [c for c in renamed.values() if c not in values]
    if unloaded:
        raise CheckpointError(f"{where!r}: the optimizer updates {unloaded}, whose values "
                              f"are not loaded from the file: its state needs them")
    paths = _optimizer_paths(zf, section, where, budget)
    layout = _optimizer_layout(optimizer, renamed)
    infos, total = [], 0
    for k, path in enumerate(paths):
        info = section[f"{_OPTIMIZER}{k}.npy"]
        infos.append(info)
        total += info.file_size
    budget.take(total, "the optimizer's state")
    node_names = {c: n for n, c in renamed.items()}
    d = {"lr": None, "settings": {}, "state": {n: {} for n in renamed}}
    for key, name in optimizer.state_file_layout():     # absent: None (x before a step)
        d.setdefault(key, {})[name] = None
    for path, info in zip(paths, infos):
        with zf.open(info) as m:
            shape, fortran, dtype, offset = _header(m, info, "/".join(path))
            _check_entry(path, shape, dtype, layout, where)
            arr = _data(m, info, shape, fortran, dtype, offset, where, "/".join(path))
        if path[0] == "state":
            d["state"][node_names[path[1]]][path[2]] = arr
        elif len(path) == 1:
            d[path[0]] = arr
        else:
            d.setdefault(path[0], {})[path[1]] = arr
    try:
        return optimizer.prepared_state(d)
    except CheckpointError as e:
        raise CheckpointError(f"{where!r}: {e}; nothing was changed") from None


def _optimizer_paths(zf, section, where, budget) -> list[tuple]:
    """The entries' paths from ``optimizer/keys.npy``, its size checked before it is
    read and its members counted against the archive's."""
    info = section.get(_OPTIMIZER_KEYS)
    if info is None:
        raise CheckpointError(f"{where!r}: the optimizer's section has no keys.npy")
    with zf.open(info) as m:
        shape, fortran, dtype, offset = _header(m, info, _OPTIMIZER_KEYS)
        if len(shape) != 2 or shape[1] != 3 or dtype.kind != "U" or \
                shape[0] * 3 * dtype.itemsize > _MAX_NAMES_BYTES:
            raise CheckpointError(f"{where!r}: {_OPTIMIZER_KEYS} must be an (entries, 3) "
                                  f"array of names, it declares shape {shape} and dtype {dtype}")
        if shape[0] != len(section) - 1:          # counted before a name is read
            raise CheckpointError(f"{where!r}: {_OPTIMIZER_KEYS} declares {shape[0]} entries, "
                                  f"but the optimizer's section holds {len(section) - 1} arrays")
        budget.take(info.file_size, _OPTIMIZER_KEYS)
        rows = _data(m, info, shape, fortran, dtype, offset, where, _OPTIMIZER_KEYS)
    want = {_OPTIMIZER_KEYS} | {f"{_OPTIMIZER}{k}.npy" for k in range(shape[0])}
    if set(section) != want:
        raise CheckpointError(f"{where!r}: {_OPTIMIZER_KEYS} lists {shape[0]} entries, but "
                              f"the optimizer's section holds {sorted(section)}")
    paths = []
    for row in rows:
        parts = [str(p) for p in row]
        n = next((k for k, p in enumerate(parts) if not p), 3)
        if n == 0 or any(parts[n:]):
            raise CheckpointError(f"{where!r}: the optimizer entry {parts} is not a path")
        paths.append(tuple(parts[:n]))
    if len(set(paths)) != len(paths):
        raise CheckpointError(f"{where!r}: the optimizer's section lists an entry twice")
    return paths


def _optimizer_layout(optimizer, renamed) -> dict:
    """{path: (largest shape, dtype or kinds)} of what the optimizer's state may hold;
    ("state", name) maps to the variable (each of its slots has its shape and dtype)."""
    text = np.dtype(f"<U{_MAX_TEXT // 4}")
    layout = {("optimizer",): ((), text), ("iterations",): ((), "i"), ("lr",): ((), "f")}
    for v in optimizer.variables:
        layout[("state", renamed[v.name])] = (v.shape, v.dtype)
    layout.update(optimizer.state_file_layout())
    return layout


def _check_entry(path, shape, dtype, layout, where):
    """Refuse an entry the optimizer cannot hold, from its header alone: an unknown
    path, a variable's state not of its shape and dtype, or an array larger than the
    optimizer's (LBFGS: history_size pairs), before a byte of its data is read."""
    if path[0] == "settings" and len(path) == 2:
        want = ((), "bif")
    else:
        want = layout.get(path[:2] if path[0] == "state" and len(path) == 3 else path)
    if want is None:
        raise CheckpointError(f"{where!r}: the optimizer's state holds {'/'.join(path)!r}, "
                              f"which this optimizer has no place for")
    largest, kind = want
    if isinstance(kind, str):              # a number of one of these dtype kinds
        fits = shape == () and dtype.kind in kind.replace("i", "iu") and dtype.itemsize <= 8
    elif kind.kind == "U":                 # text: at most _MAX_TEXT bytes
        fits = shape == () and dtype.kind == "U" and dtype.itemsize <= kind.itemsize
    elif path[0] == "state":
        fits = shape == largest and dtype == kind
    else:
        fits = dtype == kind and len(shape) == len(largest) and \
            all(n <= m for n, m in zip(shape, largest))
    if not fits:
        holds = ("a number" if isinstance(kind, str) else "text" if kind.kind == "U" else
                 f"shape {largest}, dtype {kind}" if path[0] == "state" else
                 f"at most shape {largest}, dtype {kind}")
        raise CheckpointError(f"{where!r}: the optimizer's {'/'.join(path)!r} declares "
                              f"shape {shape} and dtype {dtype}; this optimizer holds "
                              f"{holds} there")
