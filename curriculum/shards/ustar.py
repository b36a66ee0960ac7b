"""A fast walk over the members of a plain tar archive, by hand, for the common case only.

``tarfile`` spends most of a shard pass in per-header Python machinery (pax parsing, TarInfo
objects, a streaming wrapper). WebDataset shards are simple: ustar headers, each preceded by a
small pax header (``mtime``), regular files only. :func:`iter_file_members` reads exactly those,
and raises :class:`UnusualArchiveError` at the first thing it cannot prove ``tarfile`` would read
the same way (GNU long names, sparse files, global pax headers, a bad checksum, a truncated
member, an odd number field, ...). The caller then hands the rest of the archive to ``tarfile``
(see :mod:`curriculum.shards.tar_samples`), which keeps ``tarfile``'s exact behaviour, errors included.

Every rule below mirrors ``tarfile`` (CPython 3.11: ``TarInfo.frombuf``, ``_proc_pax``,
``_proc_builtin``, ``_apply_pax_info``); where ``tarfile`` would accept more, we give up instead,
which is always safe. ``tests/shards/test_ustar.py`` compares both readers on many archives,
against the ``tarfile`` of the Python that runs the tests.
"""

from __future__ import annotations

import re
import tarfile
from collections.abc import Iterator
from zlib import adler32

BLOCK = 512
_ZERO_BLOCK = bytes(BLOCK)
# A number field tarfile's nti() reads as octal: spaces, octal digits, spaces, then a NUL or the
# field's end (bytes after the NUL are ignored). Stricter than nti(), never looser.
_OCTAL = re.compile(rb" *[0-7]* *(?:\x00|\Z)")
# Number fields besides size and checksum: only validated (tarfile raises on bad ones).
_OTHER_NUMBERS = ((100, 108), (108, 116), (116, 124), (136, 148), (329, 337), (337, 345))
_BASE256 = (0o200, 0o377)
# What tarfile, webdataset and GNU tar write: every number field zero-padded octal ending in a NUL
# (mode, uid, gid, size, mtime, checksum + space), device numbers the same or all NULs. One match
# checks them all; anything else takes the field-by-field rules above.
_USUAL_NUMBERS = re.compile(rb"[0-7]{7}\x00[0-7]{7}\x00[0-7]{7}\x00([0-7]{11})\x00[0-7]{11}\x00"
                            rb"([0-7]{6})\x00 ")
_USUAL_DEVICES = re.compile(rb"(?:[0-7]{7}\x00|\x00{8}){2}")
_FILE_TYPES = frozenset(b"0\x007")  # REGTYPE, AREGTYPE, CONTTYPE: data follows, isfile()
_NO_DATA_TYPES = frozenset(b"123456")  # links, devices, directories, fifos: no data blocks
_PAX = ord("x")
_DIR, _AREG = ord("5"), 0
# Same record rule as tarfile._proc_pax: "<length> <keyword>=<value>\n".
_PAX_RECORD = re.compile(rb"(\d+) ([^=]+)=")


class UnusualArchiveError(Exception):
    """The archive holds something this reader leaves to ``tarfile``; ``position`` is where."""

    def __init__(self, position: int, why: str) -> None:
        super().__init__(f"at byte {position}: {why}")
        self.position = position


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _octal(header: bytes, start: int, end: int, position: int) -> int:
    if _OCTAL.match(header, start, end) is None:
        raise UnusualArchiveError(position, f"number field {start}:{end} is not plain octal")
    return int(header[start:end].split(b"\0", 1)[0].strip() or b"0", 8)


def _byte_sum(header: bytes) -> int:
    # Adler-32 keeps 1 + the byte sum (mod 65521) in its low 16 bits; a 256-byte half sums to at
    # most 65280, so each half's sum comes out exact, several times faster than sum().
    return (adler32(header[:256]) & 0xFFFF) + (adler32(header[256:]) & 0xFFFF) - 2


def _kind_and_size(header: bytes, position: int) -> tuple[int, int]:
    """(typeflag, size) of a 512-byte header, checked as tarfile.TarInfo.frombuf checks it."""
    usual = _USUAL_NUMBERS.match(header, 100)
    if usual is not None and _USUAL_DEVICES.match(header, 329) is not None:
        size, checksum = int(usual.group(1), 8), int(usual.group(2), 8)
    else:
        checksum = _octal(header, 148, 156, position)
        for start, end in _OTHER_NUMBERS:
            if header[start] not in _BASE256 and _OCTAL.match(header, start, end) is None:
                raise UnusualArchiveError(position, f"number field {start}:{end} is not plain octal")
        size = _octal(header, 124, 136, position)
    # tarfile also accepts a signed-char checksum; such archives are left to it.
    if checksum != _byte_sum(header) - sum(header[148:156]) + 256:
        raise UnusualArchiveError(position, "bad (or signed) header checksum")
    return header[156], size


def _name_and_kind(header: bytes, kind: int) -> tuple[str, int]:
    """The member name tarfile.TarInfo.frombuf makes of a header (prefix included), and the
    typeflag corrected for old-style directories."""
    encoding = tarfile.ENCODING
    name = header[0:100].split(b"\0", 1)[0].decode(encoding, "surrogateescape")
    if kind == _AREG and name.endswith("/"):
        kind = _DIR  # old V7 directories; tarfile does the same
    # (tarfile also strips a directory's trailing slashes; directories are never yielded here.)
    prefix = header[345:500].split(b"\0", 1)[0]
    if prefix:
        name = prefix.decode(encoding, "surrogateescape") + "/" + name
    return name, kind


def _parse_pax(block: bytes, position: int) -> tuple[str | None, int | None]:
    """The ``path`` and ``size`` a pax extended header sets for the next member."""
    if b"hdrcharset" in block or b"GNU.sparse" in block:
        raise UnusualArchiveError(position, "pax header with a charset or sparse records")
    path: str | None = None
    size: int | None = None
    pos = 0
    while (match := _PAX_RECORD.match(block, pos)) is not None:
        length = int(match.group(1))
        last = match.start(1) + length - 1
        # tarfile tolerates malformed records in ways not worth copying: give up on them.
        if length <= match.end() - match.start() or last >= len(block) or block[last] != 0x0A:
            raise UnusualArchiveError(position, "malformed pax record")
        keyword, value = match.group(2), block[match.end(2) + 1:last]
        try:
            if keyword == b"path":
                path = value.decode("utf-8").rstrip("/")
            elif keyword == b"size":
                try:
                    size = int(value.decode("utf-8"))
                except ValueError:
                    size = 0  # what tarfile._apply_pax_info does with a bad number
        except UnicodeDecodeError as error:
            raise UnusualArchiveError(position, "pax value is not UTF-8") from error
        pos += length
    if size is not None and size < 0:
        raise UnusualArchiveError(position, "negative pax size")
    return path, size


def iter_file_members(view: bytes, start: int = 0) -> Iterator[tuple[int, str, int, int]]:
    """Yield ``(header_offset, name, data_offset, size)`` of each regular file from ``start``.

    ``view`` is the whole archive (bytes or an mmap); ``start`` a header boundary. Offsets are
    positions in ``view``; ``header_offset`` is that of the member's first header (its pax
    header when it has one), as ``TarInfo.offset``. Names, sizes and the members listed are those
    ``tarfile.open(mode="r|")`` gives. Iteration ends at the end-of-archive zero block; a member
    is yielded only once its data is known to be complete. Anything else raises
    :class:`UnusualArchiveError` before the member concerned is yielded.
    """
    end = len(view)
    pos = start
    while True:
        if pos + BLOCK > end:
            raise UnusualArchiveError(pos, "archive ends without an end-of-archive block")
        header = view[pos:pos + BLOCK]
        if header == _ZERO_BLOCK:
            return
        member_offset = pos
        kind, size = _kind_and_size(header, pos)
        pos += BLOCK
        if kind == _PAX:  # (the pax header's own name means nothing)
            records_end = pos + _padded(size)
            if records_end + BLOCK > end:
                raise UnusualArchiveError(pos, "truncated pax header")
            path, pax_size = _parse_pax(view[pos:records_end], pos)
            pos = records_end
            header = view[pos:pos + BLOCK]
            if header == _ZERO_BLOCK:
                raise UnusualArchiveError(pos, "pax header without a member")
            kind, size = _kind_and_size(header, pos)
            name, kind = _name_and_kind(header, kind)
            pos += BLOCK
            if kind not in _FILE_TYPES and kind not in _NO_DATA_TYPES:
                raise UnusualArchiveError(pos, "pax header followed by a special header")
            if path is not None:
                name = path
            if pax_size is not None:
                size = pax_size
        else:
            name, kind = _name_and_kind(header, kind)
        if kind in _FILE_TYPES:
            data_end = pos + _padded(size)
            if data_end > end:
                raise UnusualArchiveError(pos, "truncated member data")
            yield member_offset, name, pos, size
            pos = data_end
        elif kind not in _NO_DATA_TYPES:
            raise UnusualArchiveError(member_offset, f"member type {bytes([kind])!r}")
