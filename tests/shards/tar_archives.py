"""Tar archives for the reader tests, and ``tarfile``-only oracles to compare our readers with.

Archives come from the writers our users' shards come from (webdataset's ``TarWriter``, the
``tar`` command in several formats, Python's ``tarfile``) and from hand-made blocks for the cases
no writer produces (odd pax records, damaged number fields with a valid checksum).
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import webdataset as wds

from curriculum.shards.tar_samples import RawSample, ShardReadReport, split_key
from curriculum.shards.ustar import UnusualArchiveError, iter_file_members

BLOCK = 512
Member = tuple[int, str, int, int, bytes]
"""(header offset, name, data offset, size, data) of a regular file."""


# -- oracles --------------------------------------------------------------------------------------
def tarfile_members(data: bytes, start: int = 0) -> tuple[list[Member], str | None]:
    """Regular files as ``tarfile.open(mode="r|")`` reads them from ``start``, and the error that
    ended the read (``None``: the archive ended cleanly). Offsets are absolute."""
    stream = io.BytesIO(data)
    stream.seek(start)
    members: list[Member] = []
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for info in tar:
                if info.isfile():
                    content = tar.extractfile(info).read()
                    members.append((start + info.offset, info.name, start + info.offset_data,
                                    info.size, content))
    except Exception as error:  # not only TarError: tarfile raises ValueError on a few archives
        return members, f"{type(error).__name__}: {error}"
    return members, None


def fast_members(data: bytes, start: int = 0) -> tuple[list[Member], bool]:
    """Regular files as :func:`curriculum.shards.ustar.iter_file_members` reads them, and whether it gave
    up (raised ``UnusualArchiveError``)."""
    members: list[Member] = []
    try:
        for header, name, offset, size in iter_file_members(data, start):
            members.append((header, name, offset, size, data[offset:offset + size]))
    except UnusualArchiveError:
        return members, True
    return members, False


def assert_members_agree(data: bytes, start: int = 0) -> bool:
    """The fast reader yields a prefix of what ``tarfile`` yields, and all of it (with ``tarfile``
    ending cleanly) unless it gives up. Returns whether it gave up."""
    expected, error = tarfile_members(data, start)
    got, gave_up = fast_members(data, start)
    assert got == expected[:len(got)], "fast reader differs from tarfile"
    if not gave_up:
        assert error is None, f"fast reader ended cleanly where tarfile failed: {error}"
        assert got == expected, "fast reader ended before tarfile did"
    return gave_up


def tarfile_samples(path: str | Path, start_ordinal: int = 0, start_offset_bytes: int = 0,
                    report: ShardReadReport | None = None) -> Iterator[RawSample]:
    """``iter_raw_samples`` as it was before the fast reader: ``tarfile`` alone (the oracle)."""
    report = report if report is not None else ShardReadReport(str(path))
    with open(path, "rb") as handle:
        handle.seek(start_offset_bytes)
        current: RawSample | None = None
        ordinal = start_ordinal - 1
        try:
            with tarfile.open(fileobj=handle, mode="r|") as tar:
                for info in tar:
                    if not info.isfile():
                        continue
                    parts = split_key(info.name)
                    if parts is None:
                        continue
                    key, ext = parts
                    if current is None or key != current.key:
                        if current is not None:
                            yield current
                        ordinal += 1
                        current = RawSample(ordinal, key, start_offset_bytes + info.offset)
                    extracted = tar.extractfile(info)
                    current.members[ext] = extracted.read() if extracted is not None else b""
        except (tarfile.TarError, EOFError, OSError, ValueError) as error:
            report.truncated = True
            report.error = f"{type(error).__name__}: {error}"
            current = None
        if current is not None:
            yield current


# -- writers --------------------------------------------------------------------------------------
def webdataset_shard(samples: list[dict]) -> bytes:
    """A shard as webdataset's ``TarWriter`` writes it (pax header before every member)."""
    out = io.BytesIO()
    with wds.TarWriter(out) as writer:
        for sample in samples:
            writer.write(sample)
    return out.getvalue()


def python_tar(members: list[tarfile.TarInfo | tuple[str, bytes] | tuple[str, bytes, bytes]],
               format: int = tarfile.PAX_FORMAT) -> bytes:
    """An archive written by ``tarfile``: ``(name, data)`` pairs are regular files, ``(name, data,
    type)`` members of that type with data."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=format) as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
            else:
                name, data, *type = member
                info = tarfile.TarInfo(name)
                info.type = type[0] if type else tarfile.REGTYPE
                info.size = len(data)
                info.mtime = 1_700_000_000
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def special(name: str, type: bytes, linkname: str = "") -> tarfile.TarInfo:
    """A member without data: directory, link, fifo or device."""
    info = tarfile.TarInfo(name)
    info.type = type
    info.linkname = linkname
    return info


LONG_DIR = "a_directory_name_of_sixty_characters_for_long_paths_0123456"
LONG_FILE = "long_sample_" + "n" * 60


def has_gnu_tar() -> bool:
    """Whether the ``tar`` command is GNU tar (the archive formats below need it)."""
    try:
        version = subprocess.run(["tar", "--version"], capture_output=True, text=True, check=False)
    except OSError:
        return False
    return "GNU tar" in version.stdout


def tar_command_archive(tmp_path: Path, format: str, long_names: bool = True) -> bytes:
    """An archive written by the ``tar`` command in ``format`` (gnu, oldgnu, pax, ustar, v7) over
    a tree with directories, empty files, a symlink and (optionally) paths over 100 bytes."""
    tree = tmp_path / f"tree-{format}-{long_names}"
    (tree / "docs").mkdir(parents=True)
    (tree / "docs" / "sample0.txt").write_text("first document")
    (tree / "docs" / "sample0.json").write_text('{"text": "first"}')
    (tree / "docs" / "empty.txt").write_bytes(b"")
    (tree / "docs" / "block.txt").write_bytes(b"b" * BLOCK)
    (tree / "docs" / "sample1.txt").write_text("second document " * 70)
    (tree / "docs" / "noextension").write_text("not a sample member")
    (tree / "docs" / "link.txt").symlink_to("sample0.txt")
    if long_names:
        deep = tree / "docs" / LONG_DIR
        deep.mkdir()
        (deep / f"{LONG_FILE}.txt").write_text("a document with a path over 100 bytes")
        (deep / f"{LONG_FILE}.cls").write_text("3")
    archive = tmp_path / f"{format}-{long_names}.tar"
    subprocess.run(["tar", f"--format={format}", "--sort=name", "-cf", str(archive),
                    "-C", str(tree), "."], check=True, capture_output=True)
    return archive.read_bytes()


# -- hand-made blocks -----------------------------------------------------------------------------
def header_block(name: str, size: int, type: bytes = tarfile.REGTYPE) -> bytearray:
    """One ustar header block with a valid checksum."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.type = type
    info.mtime = 1_700_000_000
    return bytearray(info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape"))


def fix_checksum(header: bytearray) -> bytearray:
    """Rewrite the checksum field so the header passes ``tarfile``'s check."""
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return header


def padded(data: bytes) -> bytes:
    """``data`` followed by zeros up to a whole number of blocks."""
    return data + bytes(-len(data) % BLOCK)


def pax_record(keyword: bytes, value: bytes, length_change: int = 0) -> bytes:
    """``"<length> <keyword>=<value>\\n"`` with a correct length (plus ``length_change``)."""
    body = b" " + keyword + b"=" + value + b"\n"
    digits = len(str(len(body)))
    while len(str(len(body) + digits)) != digits:
        digits += 1
    return str(len(body) + digits + length_change).encode() + body


def raw_pax_member(records: bytes, name: str, data: bytes, type: bytes = tarfile.XHDTYPE) -> bytes:
    """A pax extended header holding ``records``, then a regular file ``name`` with ``data``."""
    return (bytes(header_block("././@PaxHeader", len(records), type)) + padded(records)
            + bytes(header_block(name, len(data))) + padded(data))


END = bytes(2 * BLOCK)
"""The end-of-archive marker."""


def header_offsets(data: bytes) -> list[int]:
    """Offsets of every header ``tarfile`` reads in ``data`` (pax headers included), from 0."""
    offsets = []
    stream = io.BytesIO(data)
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for info in tar:
                offsets.append(info.offset)
                offsets.append(info.offset_data - BLOCK)
    except tarfile.TarError:
        pass
    return sorted(set(offsets))


def block_boundaries(data: bytes) -> list[int]:
    """Every multiple of the block size inside ``data``."""
    return list(range(0, len(data), BLOCK))

