"""The region loops' disk cache (flowgrad/engine/region_cache.py) trusts only what no other user
can have written: planted files never run, foreign or loose files are not loaded, the
directories are made 0700, a refused directory is said once, and a broken entry is
rebuilt with a warning — with results bit-identical to the reference every time."""
import importlib.util
import marshal
import os
import pickle
import stat
import sys
import warnings

import numpy as np
import pytest

import flowgrad as fg
from flowgrad.engine import region_cache, region_kernels, regions

OTHER_UID = 12345


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    """Loops compiled at the first call; nothing compiled in this process yet."""
    monkeypatch.setattr(regions, "WARM_CALLS", 0)
    monkeypatch.setattr(region_kernels, "_compiled", {})


def use_dir(monkeypatch, path):
    monkeypatch.setenv("FLOWGRAD_CACHE_DIR", str(path))


def tanh4(n=200, power=4):
    with fg.Graph():
        x = fg.placeholder("x", shape=(n,))
        d = fg.tanh(x)
        for _ in range(power):
            d = fg.grad(fg.sum(d), x)
    return d, {"x": np.linspace(-2, 2, n)}


def loops(prog):
    ns = prog._generated.array_fn.__globals__
    return {k: v for k, v in ns.items() if k[0] == "r" and k[1:].isdigit()}


def run_checked(outs, feed):
    """Run a generated program and the reference; assert bit-identical results and
    return the program, its loops and the RegionCacheWarnings raised."""
    gen, ref = fg.compile(outs), fg.compile(outs, codegen=False)
    (lazy,) = loops(gen).values()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = gen(**feed)
    want = ref(**feed)
    assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
    assert gen(**feed).tobytes() == want.tobytes()
    cache_warnings = [w for w in caught if issubclass(w.category, region_cache.RegionCacheWarning)]
    return gen, lazy.region, cache_warnings


def compiled(prog):
    """The program's loops are numba functions (not the numpy fallback)."""
    return all(hasattr(f, "py_func") for f in loops(prog).values())


def entry_names(region):
    """Where numba keeps this region's index and first data file (its own naming)."""
    line = region.source.splitlines().index(next(
        s for s in region.source.splitlines() if s.startswith("def kernel("))) + 1
    base = f"r_{region.key}.kernel-{line}.py{sys.version_info[0]}{sys.version_info[1]}"
    return base + ".nbi", base + ".1.nbc"


class Plant:
    """Unpickling this runs code: it writes ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('planted code ran')",)


def region_of(monkeypatch, tmp_path, n=200):
    """The region (key, source) a tanh4 program compiles, found in a scratch directory."""
    use_dir(monkeypatch, tmp_path / "scratch")
    d, feed = tanh4(n)
    _, region, _ = run_checked(d, feed)
    monkeypatch.setattr(region_kernels, "_compiled", {})
    return region


def plant(directory, region, marker, *, pyc=True):
    """Another user's files: the region's module with its exact text and a ``.pyc`` that
    writes ``marker`` (an import would run it), numba index and data files that write it
    when unpickled."""
    pycache = directory / "__pycache__"
    pycache.mkdir(parents=True, exist_ok=True)
    for name in entry_names(region):
        (pycache / name).write_bytes(pickle.dumps(Plant(marker)))
    if pyc:
        py = directory / f"r_{region.key}.py"
        py.write_text(region.source)
        st = py.stat()
        code = compile(f"open({str(marker)!r}, 'w').write('planted code ran')", str(py), "exec")
        header = importlib.util.MAGIC_NUMBER + bytes(4) + \
            (int(st.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little") + \
            (st.st_size & 0xFFFFFFFF).to_bytes(4, "little")
        pathlib_pyc = importlib.util.cache_from_source(str(py))
        with open(pathlib_pyc, "wb") as f:
            f.write(header + marshal.dumps(code))
    return pycache


# -- planted code never runs --------------------------------------------------------------------

@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o775], ids=["world", "world-sticky", "group"])
def test_a_planted_file_in_a_shared_directory_never_runs(tmp_path, monkeypatch, mode):
    region = region_of(monkeypatch, tmp_path)
    shared, marker = tmp_path / "shared", tmp_path / "marker"
    plant(shared, region, marker)
    for p in [shared, shared / "__pycache__"]:
        os.chmod(p, mode)
    use_dir(monkeypatch, shared)
    d, feed = tanh4()
    gen, _, said = run_checked(d, feed)
    assert not marker.exists()
    assert compiled(gen)                                 # compiled in memory instead
    assert len(said) == 1 and "writable by group or others" in str(said[0].message)


def test_a_directory_owned_by_another_user_is_refused(tmp_path, monkeypatch):
    region = region_of(monkeypatch, tmp_path)
    theirs, marker = tmp_path / "theirs", tmp_path / "marker"
    pycache = plant(theirs, region, marker)
    for p in [theirs, pycache, *pycache.iterdir(), *theirs.glob("*.py")]:
        os.chown(p, OTHER_UID, OTHER_UID)
    os.chmod(theirs, 0o755)
    use_dir(monkeypatch, theirs)
    d, feed = tanh4()
    gen, _, said = run_checked(d, feed)
    assert not marker.exists() and compiled(gen)
    assert len(said) == 1 and f"owned by uid {OTHER_UID}" in str(said[0].message)


def test_a_parent_others_can_write_is_refused_unless_sticky(tmp_path, monkeypatch):
    """Another user who can write the parent could rename the cache away and put theirs
    in its place; a sticky parent (like /tmp) forbids that."""
    parent = tmp_path / "parent"
    parent.mkdir()
    os.chmod(parent, 0o777)
    assert region_cache.cache_dir is region_kernels.cache_dir
    use_dir(monkeypatch, parent / "cache")
    with pytest.warns(region_cache.RegionCacheWarning, match="its parent .*writable"):
        assert region_cache.cache_dir() is None
    os.chmod(parent, 0o1777)
    assert region_cache.cache_dir() == str(parent / "cache")


@pytest.mark.parametrize("how", ["other-owner", "group-writable", "world-writable", "symlink"])
def test_a_cache_file_that_is_not_trusted_is_not_loaded(tmp_path, monkeypatch, how):
    """The directory is the user's own (0700), but a numba index in it is not: owned by
    another uid (root can make one), writable by others, or a link: never unpickled;
    removed, and the loop compiled and saved again."""
    region = region_of(monkeypatch, tmp_path)
    cache, marker = tmp_path / "cache", tmp_path / "marker"
    pycache = plant(cache, region, marker, pyc=False)
    os.chmod(cache, 0o700)
    os.chmod(pycache, 0o700)
    index, data = (pycache / name for name in entry_names(region))
    if how == "other-owner":
        os.chown(index, OTHER_UID, OTHER_UID)
    elif how == "symlink":
        (tmp_path / "elsewhere.nbi").write_bytes(index.read_bytes())
        index.unlink()
        index.symlink_to(tmp_path / "elsewhere.nbi")
    else:
        os.chmod(index, 0o664 if how == "group-writable" else 0o646)
    use_dir(monkeypatch, cache)
    d, feed = tanh4()
    gen, _, said = run_checked(d, feed)
    assert not marker.exists() and compiled(gen)
    assert len(said) == 1 and "not loaded" in str(said[0].message)
    st = index.lstat()                                   # rebuilt: the user's own, loadable
    assert stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022
    monkeypatch.setattr(region_kernels, "_compiled", {})
    again, _, said = run_checked(d, feed)
    assert not said and not marker.exists()
    (fn,) = loops(again).values()
    assert sum(fn.stats.cache_hits.values()) == 1        # read back from the disk


# -- the directories' modes ---------------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o002, 0o000])
def test_the_cache_directories_are_created_0700_whatever_the_umask(tmp_path, monkeypatch, umask):
    use_dir(monkeypatch, tmp_path / "a" / "b" / "regions")
    old = os.umask(umask)
    try:
        d, feed = tanh4()
        _, _, said = run_checked(d, feed)
    finally:
        os.umask(old)
    assert not said
    for p in [tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "regions",
              tmp_path / "a" / "b" / "regions" / "__pycache__"]:
        assert stat.S_IMODE(p.stat().st_mode) == 0o700, p
    files = [p for p in (tmp_path / "a").rglob("*") if p.is_file()]
    assert any(p.suffix == ".nbi" for p in files)
    assert all(not p.stat().st_mode & 0o022 for p in files)   # numba's files tightened


def test_a_refused_directory_is_said_once_per_process(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    use_dir(monkeypatch, shared)
    said = []
    for n, power in [(200, 4), (201, 3), (202, 2)]:          # three programs, three loops
        d, feed = tanh4(n, power)
        _, _, warned = run_checked(d, feed)
        said += warned
    assert len(said) == 1
    assert not list(shared.iterdir())                        # nothing written there
    other = tmp_path / "other"                               # another directory: said again
    other.mkdir()
    os.chmod(other, 0o777)
    use_dir(monkeypatch, other)
    monkeypatch.setattr(region_kernels, "_compiled", {})
    d, feed = tanh4()
    assert len(run_checked(d, feed)[2]) == 1


# -- broken entries are rebuilt ------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["index-truncated", "data-truncated", "index-garbage",
                                    "data-empty"])
def test_a_corrupt_or_truncated_entry_is_rebuilt_with_a_warning(tmp_path, monkeypatch, damage):
    use_dir(monkeypatch, tmp_path / "cache")
    d, feed = tanh4()
    _, region, said = run_checked(d, feed)
    assert not said
    index, data = (tmp_path / "cache" / "__pycache__" / n for n in entry_names(region))
    target = index if damage.startswith("index") else data
    content = target.read_bytes()
    target.write_bytes({"index-truncated": content[:len(content) // 2],
                        "data-truncated": content[:len(content) // 2],
                        "index-garbage": b"\x80\x05garbage" + content[10:],
                        "data-empty": b""}[damage])
    monkeypatch.setattr(region_kernels, "_compiled", {})
    gen, _, said = run_checked(d, feed)                  # bit-identical, asserted inside
    assert compiled(gen)                                 # not the numpy fallback for good
    assert len(said) == 1 and "could not be loaded" in str(said[0].message)
    monkeypatch.setattr(region_kernels, "_compiled", {})
    again, _, said = run_checked(d, feed)                # rebuilt: loads from disk again
    assert not said
    (fn,) = loops(again).values()
    assert sum(fn.stats.cache_hits.values()) == 1
