"""Checkpoints against hostile and broken files: names that were keyword arguments, empty,
truncated, corrupt and foreign files, decompression bombs, values that overflow. Every
one is a CheckpointError and leaves the variables as they were."""
import io
import os
import stat
import struct
import time
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest

import flowgrad as fg


def model():
    W = fg.variable(np.arange(6.0).reshape(2, 3), name="W")
    b = fg.variable(np.array([0.5, -0.5, 1.5], dtype=np.float32), name="b")
    return W, b


def untouched(W, b):
    np.testing.assert_array_equal(W.value, np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(b.value, np.array([0.5, -0.5, 1.5], dtype=np.float32))


def npy(arr=None, *, shape=None, descr=None, data=None) -> bytes:
    """A .npy member: the header of ``arr`` (or of the ``shape``/``descr`` given) and
    ``data`` (default: arr's bytes)."""
    buf = io.BytesIO()
    if arr is not None:
        np.lib.format.write_array(buf, arr, allow_pickle=False)
        return buf.getvalue() if data is None else buf.getvalue()[:-arr.nbytes] + data
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + (data or b"")


def raw_zip(members) -> bytes:
    """A zip written field by field, so a test can make it lie: ``members`` are tuples
    (name, payload, method, declared uncompressed size, crc) — payload already compressed
    for method 8 (deflate)."""
    out, central = io.BytesIO(), io.BytesIO()
    for name, payload, method, usize, crc in members:
        fname = name.encode()
        offset = out.tell()
        out.write(struct.pack("<4s2B4HL2L2H", b"PK\x03\x04", 20, 0, 0, method, 0, 0x21,
                              crc, len(payload), usize, len(fname), 0))
        out.write(fname + payload)
        central.write(struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 0, 20, 0, 0, method,
                                  0, 0x21, crc, len(payload), usize, len(fname), 0, 0, 0, 0,
                                  0, offset))
        central.write(fname)
    cd = central.getvalue()
    start = out.tell()
    out.write(cd)
    out.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members),
                          len(cd), start, 0))
    return out.getvalue()


def stored(name, payload):
    return (name, payload, 0, len(payload), zlib.crc32(payload))


def assert_refused(path, W, b, match=None):
    with pytest.raises(fg.CheckpointError, match=match):
        fg.load_variables(path, [W, b])
    untouched(W, b)


# -- names are data -------------------------------------------------------------------------
def test_any_name_round_trips_even_numpys_keyword_arguments(tmp_path):
    names = ["allow_pickle", "file", "names", "0", "1.npy", "a/b", "ключ ü", "kwds"]
    with fg.Graph():
        vs = {n: fg.variable(np.full(k + 1, float(k)), name=f"v{k}") for k, n in enumerate(names)}
        path = fg.save_variables(tmp_path / "odd", vs)
        for v in vs.values():
            v.value = np.zeros(v.shape)
        assert fg.load_variables(path, vs) == names
        for k, v in enumerate(vs.values()):
            np.testing.assert_array_equal(v.value, np.full(k + 1, float(k)))
    with np.load(path, allow_pickle=False) as f:   # plain numpy reads it too
        assert f["names"].tolist() == names
        np.testing.assert_array_equal(f["7"], np.full(8, 7.0))


def test_a_checkpoint_of_the_first_layout_still_loads(tmp_path):
    W, b = model()
    np.savez(tmp_path / "old.npz", W=np.ones((2, 3)), b=np.zeros(3, np.float32))
    assert sorted(fg.load_variables(tmp_path / "old.npz", [W, b])) == ["W", "b"]
    np.testing.assert_array_equal(W.value, np.ones((2, 3)))


# -- empty, truncated, corrupt, foreign -------------------------------------------------------
@pytest.mark.parametrize("content", [
    b"", b"hello, world\n", b"PK\x05\x06" + bytes(18), b"PK\x03\x04garbage",
    npy(np.arange(6.0)),                                  # a .npy, not an .npz
    zlib.compress(b"not a zip"),
], ids=["empty", "text", "empty-zip", "bad-local-header", "npy", "zlib"])
def test_files_that_are_not_checkpoints(tmp_path, content):
    W, b = model()
    path = tmp_path / "x.npz"
    path.write_bytes(content)
    assert_refused(path, W, b)


def test_archives_that_are_not_checkpoints(tmp_path):
    W, b = model()
    cases = {
        "text-member": raw_zip([stored("W.npy", npy(np.ones((2, 3)))),
                                stored("readme.txt", b"hi")]),
        "not-npy-data": raw_zip([stored("W.npy", b"\x93NUMPY junk"),
                                 stored("b.npy", npy(np.zeros(3, np.float32)))]),
        "names-count": raw_zip([stored("names.npy", npy(np.array(["W", "b", "c"]))),
                                stored("0.npy", npy(np.ones((2, 3)))),
                                stored("1.npy", npy(np.zeros(3, np.float32)))]),
        "names-repeated": raw_zip([stored("names.npy", npy(np.array(["W", "W"]))),
                                   stored("0.npy", npy(np.ones((2, 3)))),
                                   stored("1.npy", npy(np.ones((2, 3))))]),
        "names-objects": raw_zip([stored("names.npy", npy(shape=(2,), descr="|O")),
                                  stored("0.npy", npy(np.ones((2, 3)))),
                                  stored("1.npy", npy(np.zeros(3, np.float32)))]),
        "names-absurd": raw_zip([stored("names.npy", npy(shape=(10**6,), descr="<U100000")),
                                 stored("0.npy", npy(np.ones((2, 3)))),
                                 stored("1.npy", npy(np.zeros(3, np.float32)))]),
        "member-twice": raw_zip([stored("W.npy", npy(np.ones((2, 3)))),
                                 stored("W.npy", npy(np.ones((2, 3)))),
                                 stored("b.npy", npy(np.zeros(3, np.float32)))]),
        "unknown-compression": raw_zip([("W.npy", b"x" * 200, 99, 200, 0),
                                        stored("b.npy", npy(np.zeros(3, np.float32)))]),
        "npy-version-9": raw_zip([stored("W.npy", b"\x93NUMPY\x09\x00" + bytes(60)),
                                  stored("b.npy", npy(np.zeros(3, np.float32)))]),
    }
    for name, content in cases.items():
        path = tmp_path / f"{name}.npz"
        path.write_bytes(content)
        assert_refused(path, W, b)


def test_every_truncation_is_refused(tmp_path):
    W, b = model()
    good = fg.save_variables(tmp_path / "good", [W, b]).read_bytes()
    for cut in range(len(good)):
        path = tmp_path / "cut.npz"
        path.write_bytes(good[:cut])
        assert_refused(path, W, b)


def test_a_flipped_byte_is_refused_or_harmless(tmp_path):
    """Flip every byte of a checkpoint in turn: each load is either a CheckpointError or
    gives back exactly the saved values (a byte no one reads, like a timestamp)."""
    W, b = model()
    good = fg.save_variables(tmp_path / "good", [W, b]).read_bytes()
    refused = 0
    for k in range(len(good)):
        bad = bytearray(good)
        bad[k] ^= 0xFF
        path = tmp_path / "flip.npz"
        path.write_bytes(bytes(bad))
        try:
            fg.load_variables(path, [W, b])
        except fg.CheckpointError:
            refused += 1
        untouched(W, b)
    assert refused > len(good) // 2          # data and headers are all covered by checks


def test_pickles_are_refused_without_being_read(tmp_path):
    W, b = model()
    evil = io.BytesIO()
    np.save(evil, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    path = tmp_path / "evil.npz"
    path.write_bytes(raw_zip([stored("W.npy", evil.getvalue()),
                              stored("b.npy", npy(np.zeros(3, np.float32)))]))
    assert_refused(path, W, b, match="allow_pickle")


# -- headers checked before data; decompression bounded -------------------------------------
def test_headers_are_checked_before_the_data(tmp_path):
    W, b = model()
    ok_b = stored("b.npy", npy(np.zeros(3, np.float32)))
    cases = {   # a header that disagrees with the graph; the data is never needed
        "shape": (stored("W.npy", npy(shape=(3, 2), descr="<f8", data=bytes(48))), "shape"),
        "huge": (stored("W.npy", npy(shape=(10**12,), descr="<f8")), "shape"),
        "dtype": (stored("W.npy", npy(shape=(2, 3), descr="<c16", data=bytes(96))), "dtype"),
        "short": (stored("W.npy", npy(shape=(2, 3), descr="<f8", data=bytes(40))), "bytes"),
        "long": (stored("W.npy", npy(shape=(2, 3), descr="<f8", data=bytes(56))), "bytes"),
    }
    for name, (member, match) in cases.items():
        path = tmp_path / f"{name}.npz"
        path.write_bytes(raw_zip([member, ok_b]))
        assert_refused(path, W, b, match=match)



@pytest.mark.parametrize("old, new", [(b"'descr': '<f8'", b"'descr': ',f8'"),
                                      (b"(2, 3), }", b"(2, 3), (")],
                         ids=["syntax-error", "unclosed-bracket"])
def test_a_damaged_header_dict_is_a_checkpoint_error(tmp_path, old, new):
    """numpy reads a header's dict with ast.literal_eval after tokenizing it: a damaged
    one raised a bare SyntaxError or tokenize.TokenError out of load_variables."""
    with fg.Graph():
        W, b = model()
        good = npy(np.arange(6.0).reshape(2, 3))
        assert old in good
        path = tmp_path / "damaged.npz"
        path.write_bytes(raw_zip([stored("W.npy", good.replace(old, new)),
                                  stored("b.npy", npy(np.zeros(3, np.float32)))]))
        assert_refused(path, W, b, match="not a readable")

def bomb(inflated_mib, declared=None, crc=0):
    """A deflated W.npy of a (2, 3) float64 header followed by ``inflated_mib`` MiB of
    zeros, built from one repeated flush block (so it costs nothing to make)."""
    header = npy(shape=(2, 3), descr="<f8")
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(header) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(bytes(1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)
    payload = head + block * inflated_mib + c.flush()
    size = len(header) + (inflated_mib << 20) if declared is None else declared
    return ("W.npy", payload, 8, size, crc), len(header)


@pytest.mark.parametrize("lie", [False, True], ids=["honest-directory", "lying-directory"])
def test_a_decompression_bomb_is_not_inflated(tmp_path, lie):
    """1.6 MB that inflates to 1.6 GB: refused after the header (the directory declares
    1.6 GB of data for 48 bytes of array) or, when the directory lies about the size,
    after reading at most the 48 bytes the header allows (then the CRC fails)."""
    W, b = model()
    member, header_len = bomb(1600)
    if lie:
        member, _ = bomb(1600, declared=header_len + 48)
    path = tmp_path / "bomb.npz"
    path.write_bytes(raw_zip([member, stored("b.npy", npy(np.zeros(3, np.float32)))]))
    assert path.stat().st_size < 2_000_000
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        assert_refused(path, W, b)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20                                     # never inflated whole
    assert time.perf_counter() - t0 < 5                       # inflating 1.6 GB takes longer


# -- values that do not fit -------------------------------------------------------------------
def test_values_that_overflow_the_variables_dtype(tmp_path):
    W, b = model()
    path = tmp_path / "big.npz"
    np.savez(path, W=np.ones((2, 3)), b=np.array([1.0, 1e300, 0.0]))
    assert_refused(path, W, b, match=r"'b'.*float64 values that do not fit .*float32")
    with fg.Graph():
        n = fg.variable(np.zeros(2, np.int32), name="n")
        np.savez(tmp_path / "int.npz", n=np.array([1, 2**40]))
        with pytest.raises(fg.CheckpointError, match="int64 values that do not fit"):
            fg.load_variables(tmp_path / "int.npz", [n])
        assert n.value.tolist() == [0, 0]
        np.savez(tmp_path / "int_ok.npz", n=np.array([1, -2**31]))
        fg.load_variables(tmp_path / "int_ok.npz", [n])
        assert n.value.tolist() == [1, -2**31] and n.value.dtype == np.int32
    # rounding is not overflow; NaN and inf saved as such come back as such
    np.savez(path, W=np.full((2, 3), np.nan), b=np.array([1 + 1e-12, np.inf, -np.inf]))
    fg.load_variables(path, [W, b])
    assert np.isnan(W.value).all() and b.value.tolist() == [1.0, np.inf, -np.inf]


def test_all_or_nothing_when_the_last_member_is_bad(tmp_path):
    W, b = model()
    path = tmp_path / "m.npz"
    path.write_bytes(raw_zip([stored("names.npy", npy(np.array(["W", "b"]))),
                              stored("0.npy", npy(np.ones((2, 3)))),
                              stored("1.npy", npy(np.zeros(3, np.float32))[:-4])]))
    assert_refused(path, W, b)
    # the same file, whole, loads
    path.write_bytes(raw_zip([stored("names.npy", npy(np.array(["W", "b"]))),
                              stored("0.npy", npy(np.ones((2, 3)))),
                              stored("1.npy", npy(np.zeros(3, np.float32)))]))
    fg.load_variables(path, [W, b])
    np.testing.assert_array_equal(W.value, np.ones((2, 3)))
    assert zipfile.is_zipfile(path)


# -- counts and sizes checked before anything is read or allocated ---------------------------
def deflated(name, header, zero_mib):
    """A deflated member: ``header`` then ``zero_mib`` MiB of zero bytes, compressed from
    one repeated flush block (cheap to make, ~1 KiB per MiB)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(header) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(bytes(1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)
    payload = head + block * zero_mib + c.flush()
    data = header + bytes(zero_mib << 20)
    return (name, payload, 8, len(data), zlib.crc32(data))


def peak_of(fn):
    """(peak traced bytes, seconds) of ``fn()``."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1], time.perf_counter() - t0
    finally:
        tracemalloc.stop()


def test_a_names_array_longer_than_the_archive_is_refused_before_it_is_read(tmp_path):
    """61 KiB that declares 16 M names (64 MiB of them, within names.npy's own cap) for
    an archive of 2 arrays: the count is checked against the archive from the header,
    before one name is read (it used to build 16 M strings: 1.46 GiB, 5 s)."""
    W, b = model()
    names = deflated("names.npy", npy(shape=(1 << 24,), descr="<U1"), 64)
    path = tmp_path / "names-bomb.npz"
    path.write_bytes(raw_zip([names, stored("0.npy", npy(np.ones((2, 3)))),
                              stored("1.npy", npy(np.zeros(3, np.float32)))]))
    assert path.stat().st_size < 80_000
    peak, seconds = peak_of(lambda: assert_refused(path, W, b))
    assert peak < 1 << 20 and seconds < 1
    assert_refused(path, W, b, match="declares 16777216 names, but the archive holds 2")


def test_names_over_64_mib_are_refused_from_the_header(tmp_path):
    """names.npy's own cap, pinned: 64 MiB of names passes it (and meets the count
    check), 4 bytes more is refused as it stands."""
    W, b = model()
    arrays = [stored("0.npy", npy(np.ones((2, 3)))), stored("1.npy", npy(np.zeros(3, np.float32)))]
    for count, match in [(1 << 24, "declares 16777216 names"),
                         ((1 << 24) + 1, "must be a 1-d array of names")]:
        path = tmp_path / "cap.npz"
        path.write_bytes(raw_zip([stored("names.npy", npy(shape=(count,), descr="<U1"))]
                                 + arrays))
        assert_refused(path, W, b, match=match)


@pytest.mark.parametrize("count", [1, 3])
def test_the_names_count_must_be_the_arrays_count(tmp_path, count):
    """The boundary on either side of 2 arrays (2 names load: the file above)."""
    W, b = model()
    path = tmp_path / "names.npz"
    path.write_bytes(raw_zip([stored("names.npy", npy(np.array(["W", "b", "c"][:count]))),
                              stored("0.npy", npy(np.ones((2, 3)))),
                              stored("1.npy", npy(np.zeros(3, np.float32)))]))
    assert_refused(path, W, b, match=f"declares {count} names, but the archive holds 2")


def test_a_file_cannot_ask_for_more_than_64_times_its_size(tmp_path):
    """Two names in a 32 MiB-wide string dtype: counts agree, the names fit names.npy's
    cap, but 64 MiB from a 64 KiB file is over 64x its size: refused before a byte of
    it is read, unless max_bytes= allows it."""
    W, b = model()
    header = npy(shape=(2,), descr=f"<U{8 << 20}")
    c = zlib.compressobj(9, zlib.DEFLATED, -15)        # "W", then zeros, then "b", zeros
    w_chr, b_chr = "W".encode("utf-32-le"), "b".encode("utf-32-le")
    pad = bytes((32 << 20) - 4)
    data_crc = zlib.crc32(pad, zlib.crc32(b_chr, zlib.crc32(pad, zlib.crc32(
        w_chr, zlib.crc32(header)))))
    payload = c.compress(header + w_chr) + c.compress(pad) + c.compress(b_chr) + \
        c.compress(pad) + c.flush()
    names = ("names.npy", payload, 8, len(header) + (64 << 20), data_crc)
    path = tmp_path / "wide-names.npz"
    path.write_bytes(raw_zip([names, stored("0.npy", npy(np.ones((2, 3)))),
                              stored("1.npy", npy(np.zeros(3, np.float32)))]))
    size = path.stat().st_size
    assert 64 * size < 64 << 20
    peak, seconds = peak_of(lambda: assert_refused(path, W, b, match="64x the file's"))
    assert peak < 1 << 20 and seconds < 1
    with zipfile.ZipFile(path) as zf:
        needed = sum(i.file_size for i in zf.infolist())
    with pytest.raises(fg.CheckpointError, match=f"max_bytes={needed - 1}"):
        fg.load_variables(path, [W, b], max_bytes=needed - 1)
    untouched(W, b)
    assert fg.load_variables(path, [W, b], max_bytes=needed) == ["W", "b"]
    np.testing.assert_array_equal(W.value, np.ones((2, 3)))


def test_the_default_limit_is_64_times_the_file_size_exactly(tmp_path):
    """A deflated checkpoint of zeros, padded with a zip comment to the first size at
    which its members' bytes are within 64x the file: loads; one byte less: refused."""
    with fg.Graph():
        big = fg.variable(np.ones(200_000), name="big")
        path = tmp_path / "z.npz"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("big.npy", npy(np.zeros(200_000)))
        base = path.stat().st_size
        with zipfile.ZipFile(path) as zf:
            needed = sum(i.file_size for i in zf.infolist())
        assert needed > 64 * base
        first = -(-needed // 64)                       # the smallest size that may load
        for size, loads in [(first - 1, False), (first, True)]:
            with zipfile.ZipFile(path, "a") as zf:
                zf.comment = b"x" * (size - base)
            assert path.stat().st_size == size
            if loads:
                assert fg.load_variables(path, [big]) == ["big"]
                assert not big.value.any()
            else:
                with pytest.raises(fg.CheckpointError, match="pass max_bytes="):
                    fg.load_variables(path, [big])
                assert big.value.all()
    with pytest.raises(ValueError, match="max_bytes"):
        fg.load_variables(path, [big], max_bytes=-1)


def test_an_array_is_read_into_its_buffer_once(tmp_path):
    """8 MB of float64 (and a Fortran-ordered copy) load with a peak of the array plus
    one read chunk (under 1 MiB), not the decompressed bytes and a copy of them."""
    with fg.Graph():
        value = np.arange(1 << 20, dtype=np.float64)
        v = fg.variable(np.zeros(1 << 20), name="v")
        f = fg.variable(np.zeros((1024, 1024), order="F"), name="f")
        path = tmp_path / "big.npz"
        np.savez(path, v=value, f=np.asfortranarray(value.reshape(1024, 1024)))
        peak, _ = peak_of(lambda: fg.load_variables(path, [v, f]))
        assert peak < 2 * value.nbytes + (1 << 20)          # two arrays, one chunk
        np.testing.assert_array_equal(v.value, value)
        np.testing.assert_array_equal(f.value, value.reshape(1024, 1024))
        assert f.value.flags.f_contiguous
        peak, _ = peak_of(lambda: fg.load_variables(path, [v], strict=False))
        assert peak < value.nbytes + (1 << 20)
        with fg.Graph():                                     # a cast: the variable's copy
            small = fg.variable(np.zeros(1 << 20, np.int32), name="v")
            np.savez(path, v=np.arange(1 << 20))
            peak, _ = peak_of(lambda: fg.load_variables(path, [small]))
            assert small.value[-1] == (1 << 20) - 1 and small.value.dtype == np.int32
            assert peak < 8 * (1 << 20) + 4 * (1 << 20) + (1 << 20)


# -- files are written with the user's umask -------------------------------------------------
def write_checkpoint(path):
    W, b = model()
    return fg.save_variables(path, [W, b])


def write_graph(path):
    with fg.Graph() as g:
        fg.variable(np.ones(3), name="w")
    return fg.save_graph(path, g)


@pytest.mark.parametrize("write", [write_checkpoint, write_graph], ids=["checkpoint", "graph"])
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_are_written_with_the_users_umask(tmp_path, write, umask, mode):
    old = os.umask(umask)
    try:
        path = write(tmp_path / "out.npz")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert [p.name for p in tmp_path.iterdir()] == [path.name]     # no temporary left


@pytest.mark.parametrize("write", [write_checkpoint, write_graph], ids=["checkpoint", "graph"])
def test_saving_over_a_file_keeps_its_mode(tmp_path, write):
    path = write(tmp_path / "out.npz")
    os.chmod(path, 0o600)
    old = os.umask(0o022)
    try:
        write(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
