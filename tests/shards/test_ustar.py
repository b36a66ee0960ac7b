"""The fast tar member reader yields exactly what ``tarfile`` yields, or gives up before differing.

Every test compares :func:`curriculum.shards.ustar.iter_file_members` with ``tarfile.open(mode="r|")`` on
the same bytes (``assert_members_agree``): the fast reader's members must be a prefix of
``tarfile``'s, and all of them, with ``tarfile`` ending cleanly, unless it raised
``UnusualArchiveError``. Archives that webdataset, the ``tar`` command and ``tarfile`` write in
their usual formats must be read without giving up (otherwise the speed-up is lost).
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from tar_archives import (
    BLOCK,
    END,
    LONG_DIR,
    LONG_FILE,
    assert_members_agree,
    block_boundaries,
    fix_checksum,
    has_gnu_tar,
    header_block,
    header_offsets,
    padded,
    pax_record,
    python_tar,
    raw_pax_member,
    special,
    tar_command_archive,
    tarfile_members,
    webdataset_shard,
)

SAMPLES = [
    {"__key__": "doc0", "txt": "first document", "json": {"text": "first"}},
    {"__key__": "doc1", "txt": ""},
    {"__key__": "doc2", "txt": "x" * BLOCK, "cls": 3},
    {"__key__": "sub/dir/doc3", "txt": "y" * (BLOCK + 1)},
    {"__key__": "döc4-ünïcode", "txt": "unicode key"},
    {"__key__": "k" * 130, "txt": "a key longer than a ustar name field"},
    {"__key__": "doc6", "txt": "last " * 300},
]


def _all_starts(data: bytes) -> list[int]:
    return [0, *header_offsets(data)]


def test_webdataset_shards_are_read_fast_and_like_tarfile() -> None:
    data = webdataset_shard(SAMPLES)
    assert not assert_members_agree(data)
    members, _ = tarfile_members(data)
    assert len(members) == 9 and members[-1][1] == "doc6.txt"
    for start in header_offsets(data):  # a resumed reader starts at any header
        assert_members_agree(data, start)
    for header, *_ in members:  # ... and at member boundaries it never needs tarfile
        assert not assert_members_agree(data, header)


@pytest.mark.skipif(not has_gnu_tar(), reason="needs GNU tar")
@pytest.mark.parametrize(("format", "long_names"), [
    ("pax", True), ("ustar", True), ("gnu", False), ("oldgnu", False), ("v7", False),
    ("gnu", True), ("oldgnu", True),
])
def test_tar_command_archives(tmp_path: Path, format: str, long_names: bool) -> None:
    data = tar_command_archive(tmp_path, format, long_names)
    gave_up = assert_members_agree(data)
    names = [name for _, name, *_ in tarfile_members(data)[0]]
    assert "./docs/empty.txt" in names and "./docs/link.txt" not in names
    if long_names:
        assert f"./docs/{LONG_DIR}/{LONG_FILE}.txt" in names
    # GNU long names (type L headers) are left to tarfile; everything else is read fast.
    assert gave_up == (format in ("gnu", "oldgnu") and long_names)
    for start in _all_starts(data):
        assert_members_agree(data, start)


@pytest.mark.parametrize("format", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_python_tarfile_archives_with_every_member_type(format: int) -> None:
    long_name = f"{LONG_DIR}/{LONG_FILE}.txt"
    members = [
        ("plain.txt", b"plain"),
        ("empty.txt", b""),
        special("a_dir", tarfile.DIRTYPE),
        special("a_dir/link.txt", tarfile.SYMTYPE, "../plain.txt"),
        special("hard.txt", tarfile.LNKTYPE, "plain.txt"),
        special("fifo.txt", tarfile.FIFOTYPE),
        special("char.txt", tarfile.CHRTYPE),
        special("old_style_dir/", tarfile.AREGTYPE),  # V7: a regular type with a slash is a dir
        ("ünïcode.txt", "ünïcode data".encode()),
        ("a_dir/next.json", b'{"text": "t"}' * 50),
        (long_name, b"long name"),
        ("cont.txt", b"contiguous", tarfile.CONTTYPE),
        ("areg.txt", b"old regular type", tarfile.AREGTYPE),
    ]
    data = python_tar(members, format)
    gave_up = assert_members_agree(data)
    names = [name for _, name, *_ in tarfile_members(data)[0]]
    assert long_name in names and "ünïcode.txt" in names and "old_style_dir" not in names
    assert "cont.txt" in names and "areg.txt" in names
    assert gave_up == (format == tarfile.GNU_FORMAT)  # the long name needs a GNU L header
    for start in _all_starts(data):
        assert_members_agree(data, start)


def _cut_points(data: bytes) -> list[int]:
    near_blocks = {b + d for b in block_boundaries(data) for d in (-1, 0, 1, 100)}
    return sorted({*range(0, len(data), 61), *near_blocks} & set(range(len(data) + 1)))


@pytest.mark.parametrize("writer", ["webdataset", "tar-pax", "tar-gnu"])
def test_truncated_at_every_kind_of_cut_point(tmp_path: Path, writer: str) -> None:
    if writer != "webdataset" and not has_gnu_tar():
        pytest.skip("needs GNU tar")
    if writer == "webdataset":
        data = webdataset_shard(SAMPLES[:5])
    else:
        data = tar_command_archive(tmp_path, writer.split("-")[1])
    end_of_members = max(h for h in header_offsets(data)) + 4 * BLOCK
    for cut in _cut_points(data[:end_of_members + 2 * BLOCK]):
        assert_members_agree(data[:cut])
        assert_members_agree(data[:cut], header_offsets(data)[2])


def test_damaged_header_bytes_with_and_without_a_valid_checksum() -> None:
    data = webdataset_shard(SAMPLES[:3])
    offsets = header_offsets(data)
    pax_header, ustar_header = offsets[2], offsets[3]  # the second member's two headers
    # Every byte of the member's ustar header; the pax header's name, numbers, type and prefix.
    positions = [*range(ustar_header, ustar_header + BLOCK),
                 *(pax_header + p for p in (*range(0, 3), *range(100, 160), *range(345, 350)))]
    for position in positions:
        header = position - position % BLOCK
        for value in {0x00, 0x20, 0x38, 0x80, data[position] ^ 0x01}:
            damaged = bytearray(data)
            damaged[position] = value
            assert_members_agree(bytes(damaged))
            damaged[header:header + BLOCK] = fix_checksum(damaged[header:header + BLOCK])
            assert_members_agree(bytes(damaged))
            assert_members_agree(bytes(damaged), header)  # damage at offset 0 of a stream
    records = pax_header + BLOCK
    for position in range(records, records + 40):  # the pax records themselves
        for value in b"0 9=\n\x00x":
            damaged = bytearray(data)
            damaged[position] = value
            assert_members_agree(bytes(damaged))


def _pax_archive(records: bytes, type: bytes = tarfile.XHDTYPE, data: bytes = b"second data") -> bytes:
    return (bytes(header_block("first.txt", 5)) + padded(b"first")
            + raw_pax_member(records, "second.txt", data, type)
            + bytes(header_block("third.txt", 5)) + padded(b"third") + END)


@pytest.mark.parametrize(("records", "fast"), [
    (pax_record(b"path", b"renamed.txt"), True),
    (pax_record(b"path", b"renamed_dir/"), True),  # trailing slashes go, as in tarfile
    (pax_record(b"path", b""), True),
    (pax_record(b"path", b"one.txt") + pax_record(b"path", b"two.txt"), True),  # the last wins
    (pax_record(b"mtime", b"1.5") + pax_record(b"comment", b"x=y"), True),
    (pax_record(b"size", b"11"), True),
    (pax_record(b"size", b" 11 "), True),
    (pax_record(b"size", b"1_1"), True),
    (pax_record(b"size", b"eleven"), False),  # read as 0: the data then reads as a bad header
    (pax_record(b"size", b"-3"), False),
    (pax_record(b"path", b"\xff\xfe.txt"), False),
    (pax_record(b"hdrcharset", b"BINARY") + pax_record(b"path", b"\xff.txt"), False),
    (pax_record(b"GNU.sparse.size", b"4"), False),
    (pax_record(b"path", b"x.txt", length_change=-1), False),
    (pax_record(b"path", b"x.txt", length_change=1), False),
    (pax_record(b"path", b"x.txt", length_change=400), False),
    (b"0 path=x.txt\n", False),
    (b"no records at all", True),
])
def test_pax_records(records: bytes, fast: bool) -> None:
    data = _pax_archive(records)
    assert assert_members_agree(data) == (not fast)


def test_a_bad_pax_size_reads_as_zero() -> None:
    data = _pax_archive(pax_record(b"size", b"eleven"), data=b"")
    assert not assert_members_agree(data)
    assert [m[1:4] for m in tarfile_members(data)[0]][1] == ("second.txt", 5 * BLOCK, 0)
    assert assert_members_agree(_pax_archive(pax_record(b"size", b"-3"), data=b""))


@pytest.mark.parametrize("type", [tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE])
def test_global_and_solaris_pax_headers_are_left_to_tarfile(type: bytes) -> None:
    assert assert_members_agree(_pax_archive(pax_record(b"path", b"renamed.txt"), type))


def test_pax_size_replaces_the_header_size() -> None:
    records = pax_record(b"size", b"600")
    second = header_block("second.txt", 3)  # the header's own size is ignored
    data = (bytes(header_block("././@PaxHeader", len(records), tarfile.XHDTYPE)) + padded(records)
            + bytes(second) + padded(b"s" * 600) + bytes(header_block("third.txt", 1))
            + padded(b"t") + END)
    assert not assert_members_agree(data)
    assert [m[3] for m in tarfile_members(data)[0]] == [600, 1]


_BASE256 = b"\x80\x00\x00\x00\x00\x00\x00\x05"


@pytest.mark.parametrize("field", [(100, 108), (108, 116), (124, 136), (136, 148), (329, 337)])
@pytest.mark.parametrize("text", [b"0000012\x00", b"  12  \x00", b"12 34\x00\x00\x00", b"+12\x00",
                                  b" + 1\x00", b"0o12\x00", _BASE256, b"1_2\x00", b"   \x00",
                                  b"\x00garbage", b"12\t\x00", b"\xff" * 8, b"0000012X",
                                  b"000 0012", b"00000012"])
def test_number_fields_with_a_valid_checksum(field: tuple[int, int], text: bytes) -> None:
    start, end = field
    header = header_block("second.txt", 12)
    header[start:end] = text.ljust(end - start, b"\x00")[:end - start]
    data = (bytes(header_block("first.txt", 5)) + padded(b"first") + bytes(fix_checksum(header))
            + padded(b"second data!") + END)
    gave_up = assert_members_agree(data)
    assert_members_agree(data, 2 * BLOCK)
    # Plain octal (with spaces, or empty) is read fast, and so is base-256 outside the size (a
    # size of 0 makes the data block read as a header, which is damage).
    usual = text in (b"0000012\x00", b"  12  \x00", b"00000012") or (
        text in (b"   \x00", b"\x00garbage") and start != 124)
    base256 = text[0] in (0o200, 0o377)
    assert gave_up == (not usual and not (base256 and start != 124))


@pytest.mark.parametrize("records", [pax_record(b"mtime", b"1"), pax_record(b"path", b"x.txt")])
def test_an_old_style_directory_after_a_pax_header_is_a_directory(records: bytes) -> None:
    # tarfile decides "directory" from the ustar name's slash, before the pax path replaces it.
    old_dir = header_block("old_dir/", 0, tarfile.AREGTYPE)
    data = (bytes(header_block("././@PaxHeader", len(records), tarfile.XHDTYPE)) + padded(records)
            + bytes(old_dir) + bytes(header_block("last.txt", 4)) + padded(b"last") + END)
    assert not assert_members_agree(data)
    assert [m[1] for m in tarfile_members(data)[0]] == ["last.txt"]


def test_unknown_types_and_sparse_files_are_left_to_tarfile() -> None:
    for type in (b"V", b"S", b"L", b"K", b"Z"):
        data = (bytes(header_block("first.txt", 5)) + padded(b"first")
                + bytes(header_block("odd.txt", 5, type)) + padded(b"odd..")
                + bytes(header_block("last.txt", 4)) + padded(b"last") + END)
        assert assert_members_agree(data)


def test_ends_without_an_end_marker_and_at_zero_blocks() -> None:
    body = bytes(header_block("a.txt", 3)) + padded(b"abc")
    assert assert_members_agree(body)  # no end marker: tarfile ends quietly, we defer to it
    assert not assert_members_agree(body + END + bytes(header_block("after.txt", 0)))
    assert not assert_members_agree(END)
    assert assert_members_agree(b"")
    assert assert_members_agree(body, len(body) + BLOCK)  # a start beyond the end


# -- random archives ------------------------------------------------------------------------------
_NAME_PARTS = st.sampled_from(["doc", "a", "dir", "x" * 60, "ünï", "k.k", "", "sub/", "__key__",
                               "name with spaces", "y" * 99])
_EXTENSIONS = st.sampled_from([".txt", ".json", ".TXT", ".tar.gz", "", "/", ".cls"])


@st.composite
def _archives(draw: st.DrawFn) -> bytes:
    members = []
    for _ in range(draw(st.integers(1, 6))):
        name = "/".join(draw(st.lists(_NAME_PARTS, min_size=1, max_size=3))) + draw(_EXTENSIONS)
        kind = draw(st.sampled_from(["file", "file", "file", "dir", "symlink", "fifo"]))
        if kind == "file":
            members.append((name, draw(st.binary(max_size=1100))))
        else:
            type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
                    "fifo": tarfile.FIFOTYPE}[kind]
            members.append(special(name, type, "target"))
    format = draw(st.sampled_from([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]))
    try:
        return python_tar(members, format)
    except ValueError:  # a name the format cannot hold
        assume(False)
        raise


@settings(max_examples=300, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=_archives(), mutation=st.sampled_from(["none", "cut", "byte", "byte+checksum"]),
       where=st.floats(0, 1, exclude_max=True), value=st.integers(0, 255),
       start_choice=st.integers(0, 20))
def test_random_archives_and_damage(data: bytes, mutation: str, where: float, value: int,
                                    start_choice: int) -> None:
    starts = _all_starts(data)
    start = starts[start_choice % len(starts)]
    position = int(where * len(data))
    if mutation == "cut":
        data = data[:position]
    elif mutation.startswith("byte"):
        damaged = bytearray(data)
        damaged[position] = value
        if mutation == "byte+checksum":
            header = position - position % BLOCK
            damaged[header:header + BLOCK] = fix_checksum(bytearray(damaged[header:header + BLOCK]))
        data = bytes(damaged)
    assert_members_agree(data, start)


@settings(max_examples=300, deadline=None, database=None)
@given(records=st.lists(st.tuples(
    st.sampled_from([b"path", b"size", b"mtime", b"linkpath", b"uname", b"comment", b"hdrcharset",
                     b"GNU.sparse.size", b"p", b"path2"]),
    st.sampled_from([b"renamed.txt", b"dir/", b"", b"11", b"0", b"12345678", b" 7", b"x",
                     b"-1", b"\xff", b"a=b", b"line\nbreak", "ünï.txt".encode()]),
    st.sampled_from([0, 0, 0, 0, -1, 1, -30, 300])), max_size=4),
    type=st.sampled_from([tarfile.XHDTYPE, tarfile.XHDTYPE, tarfile.XGLTYPE]))
def test_random_pax_records(records: list[tuple[bytes, bytes, int]], type: bytes) -> None:
    block = b"".join(pax_record(k, v, change) for k, v, change in records)
    assert_members_agree(_pax_archive(block, type))
