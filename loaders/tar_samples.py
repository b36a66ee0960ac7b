"""Read WebDataset-style tar shards sample by sample, with ordinals and byte offsets.

A *sample* is a run of consecutive tar members sharing a key (the member name up to the first dot
of its base name, as webdataset groups them). Its *ordinal* is its position in the shard, counted
over every sample, good or bad, so that ``row = first_row + ordinal`` is stable whatever the
loader later skips. Its *offset* is the byte position of its first member's header, which lets a
resumed reader seek straight to it instead of re-reading the shard from the start.
"""

from __future__ import annotations

import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

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
    crashes a run.
    """
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
        except (tarfile.TarError, EOFError, OSError) as error:
            # A truncated final member: the partial sample is dropped, the complete ones stand.
            report.truncated = True
            report.error = f"{type(error).__name__}: {error}"
            current = None
        if current is not None:
            yield current
