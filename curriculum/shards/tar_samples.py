"""Read WebDataset-style tar shards sample by sample, with ordinals and byte offsets.

A *sample* is a run of consecutive tar members sharing a key (the member name up to the first dot
of its base name, as webdataset groups them). Its *ordinal* is its position in the shard, counted
over every sample, good or bad, so that ``row = first_row + ordinal`` is stable whatever the
loader later skips. Its *offset* is the byte position of its first member's header, which lets a
resumed reader seek straight to it instead of re-reading the shard from the start.

Two member readers sit behind one grouping step. The shard is memory-mapped and walked by
:func:`curriculum.shards.ustar.iter_file_members`, which reads plain archives (what webdataset writes) about
four times faster than ``tarfile``; at the first thing it leaves to ``tarfile`` (damage,
truncation, GNU long names, ...) the rest is read by ``tarfile``'s stream reader, so what comes
out — samples, their order, and the :class:`ShardReadReport` — is always what ``tarfile`` alone
gives (the tests compare both on many damaged archives).
"""

from __future__ import annotations

import mmap
import os
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from curriculum.shards.ustar import UnusualArchiveError, iter_file_members

_RELEASE_BYTES = 8 << 20
"""How much of a mapped shard is read before its pages are handed back."""
_CAN_RELEASE = hasattr(mmap.mmap, "madvise") and hasattr(mmap, "MADV_DONTNEED")
# Same rule as webdataset.tariterators.base_plus_ext: key = path up to the first dot of the base.
_KEY_EXT = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")


@dataclass
class RawSample:
    """One sample of a shard: its members' bytes by lower-case extension."""

    ordinal: int
    key: str
    offset_bytes: int
    members: dict[str, bytes] = field(default_factory=dict)


@dataclass
class ShardReadReport:
    """What went wrong while reading one shard (filled in as the iterator runs)."""

    url: str
    truncated: bool = False
    error: str = ""


def split_key(name: str) -> tuple[str, str] | None:
    """Split a member name into (key, extension); ``None`` for names without an extension."""
    match = _KEY_EXT.match(name)
    if match is None:
        return None
    return match.group(1), match.group(2).lower()


class _Grouping:
    """Groups consecutive members by key into samples; shared by both member readers so that
    switching readers mid-shard continues the same sample and the same ordinals."""

    __slots__ = ("current", "ordinal")

    def __init__(self, start_ordinal: int) -> None:
        self.current: RawSample | None = None
        self.ordinal = start_ordinal - 1

    def place(self, name: str, offset_bytes: int) -> tuple[RawSample | None, str | None]:
        """Place a regular-file member; returns the sample it completes (when it starts a new
        key) and its extension (``None``: not part of any sample, its data is not needed)."""
        parts = split_key(name)
        if parts is None:
            return None, None
        key, ext = parts
        current = self.current
        if current is not None and key == current.key:
            return None, ext
        self.ordinal += 1
        self.current = RawSample(self.ordinal, key, offset_bytes)
        return current, ext


def iter_raw_samples(
    path: str | Path,
    start_ordinal: int = 0,
    start_offset_bytes: int = 0,
    report: ShardReadReport | None = None,
) -> Iterator[RawSample]:
    """Yield the samples of a tar shard in order, starting at a known sample boundary.

    ``start_offset_bytes`` must be the offset of the sample numbered ``start_ordinal`` (both 0 to
    read from the start). A truncated or damaged tar ends the iteration after the last complete
    sample; the cause is written to ``report`` instead of being raised, so one bad shard never
    crashes a run. Samples and report are exactly those of ``tarfile``'s stream reader
    (``mode="r|"``) started at ``start_offset_bytes``.
    """
    report = report if report is not None else ShardReadReport(str(path))
    grouping = _Grouping(start_ordinal)
    with open(path, "rb") as handle:
        # tarfile takes over at the header of the last member the fast reader finished (or at the
        # start): that header is one tarfile reads without error, so any error it meets later is
        # met at a nonzero stream offset, as in a tarfile-only pass (tarfile treats damage at
        # offset 0 differently), and its state (no global pax headers) is the same.
        takeover = start_offset_bytes
        skip_first = False
        size = os.fstat(handle.fileno()).st_size
        if size > start_offset_bytes:  # mmap refuses empty files
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
                released = start_offset_bytes - start_offset_bytes % mmap.PAGESIZE
                try:
                    for header, name, data, length in iter_file_members(view, start_offset_bytes):
                        if header - released >= _RELEASE_BYTES and _CAN_RELEASE:
                            # Pages behind us leave this process (the page cache keeps them), so
                            # resident memory stays flat however large the shard.
                            upto = header - header % mmap.PAGESIZE
                            view.madvise(mmap.MADV_DONTNEED, released, upto - released)
                            released = upto
                        done, ext = grouping.place(name, header)
                        if done is not None:
                            yield done
                        if ext is not None:
                            grouping.current.members[ext] = view[data:data + length]
                        takeover, skip_first = header, True
                except UnusualArchiveError:
                    pass
                else:
                    if grouping.current is not None:
                        yield grouping.current
                    return
        yield from _iter_with_tarfile(handle, takeover, skip_first, grouping, report)


def _iter_with_tarfile(handle: BinaryIO, start: int, skip_first: bool, grouping: _Grouping,
                       report: ShardReadReport) -> Iterator[RawSample]:
    """The rest of the shard from the header at ``start``, read by ``tarfile`` (the member there
    is skipped when ``skip_first``: the fast reader already placed it)."""
    handle.seek(start)
    try:
        with tarfile.open(fileobj=handle, mode="r|") as tar:
            for info in tar:
                if skip_first:
                    skip_first = False
                    continue
                if not info.isfile():
                    continue
                done, ext = grouping.place(info.name, start + info.offset)
                if done is not None:
                    yield done
                if ext is not None:
                    extracted = tar.extractfile(info)
                    grouping.current.members[ext] = (extracted.read() if extracted is not None
                                                     else b"")
    except (tarfile.TarError, EOFError, OSError, ValueError) as error:
        # A truncated final member: the partial sample is dropped, the complete ones stand.
        # ValueError: tarfile raises it, not a TarError, on some malformed pax records (a
        # non-numeric GNU.sparse.size); bad input is reported, never a crashed worker.
        report.truncated = True
        report.error = f"{type(error).__name__}: {error}"
        grouping.current = None
    if grouping.current is not None:
        yield grouping.current
