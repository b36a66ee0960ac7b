"""Documents out of raw samples: decode text, attach the stable row, skip bad input with a reason.

Nothing is lost silently: every sample of a shard becomes either a :class:`Document` or a
:class:`Skipped` record with a reason, and rows that a truncated shard no longer holds are
reported as skipped too.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from curriculum.shards.manifest import ShardManifest
from curriculum.shards.remote import local_shard
from curriculum.shards.tar_samples import RawSample, ShardReadReport, iter_raw_samples


@dataclass(frozen=True)
class Document:
    """One decoded document and its stable row id."""

    row: int
    key: str
    text: str


@dataclass(frozen=True)
class Skipped:
    """A row that could not be used, and why."""

    row: int
    key: str
    reason: str


@dataclass
class SkipCounter:
    """Counts of skipped rows by reason (per reader)."""

    counts: Counter = field(default_factory=Counter)

    def add(self, skipped: Skipped, shard: str) -> None:
        """Count one skip and warn once per (shard, reason), naming the shard."""
        if self.counts[(shard, skipped.reason)] == 0:
            warnings.warn(f"{shard}: skipping documents ({skipped.reason}), first at key "
                          f"{skipped.key!r}", RuntimeWarning, stacklevel=2)
        self.counts[(shard, skipped.reason)] += 1

    @property
    def total(self) -> int:
        """Rows skipped so far."""
        return sum(self.counts.values())


#: Members that hold a sample's text as it is, in the order they are tried (before ``.json``).
TEXT_MEMBERS = ("txt", "text")


def decode_text(members: dict[str, bytes], text_field: str = "text") -> str | None | Exception:
    """The document text of a sample: ``.txt``, else ``.text``, else ``text_field`` of ``.json``.

    The one rule every reader of a sample uses (the loader, the store build, the spool, the
    command line), so a document is trained on and indexed as the same text. Returns ``None``
    when the sample has no text member, or the decoding error.
    """
    try:
        for member in TEXT_MEMBERS:
            if member in members:
                return members[member].decode("utf-8")
        if "json" in members:
            record = json.loads(members["json"].decode("utf-8"))
            if isinstance(record, dict) and isinstance(record.get(text_field), str):
                return record[text_field]
        return None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return error


def usable_text(members: dict[str, bytes] | None, text_field: str = "text") -> str | None:
    """The sample's text when it is usable for training (decodes, not blank), else ``None``."""
    text = decode_text(members or {}, text_field)
    if not isinstance(text, str) or not text or text.isspace():
        return None
    return text


def read_sample(manifest: ShardManifest, row: int) -> RawSample | None:
    """The sample at ``row``, read by seeking to its byte offset (``None`` if it is gone); a
    remote shard is read from the local cache (:func:`curriculum.shards.remote.local_shard`)."""
    shard = int(manifest.shard_of_rows(np.array([row]))[0])
    ordinal = row - int(manifest.first_rows[shard])
    offset = int(manifest.offsets_bytes[row])
    for sample in iter_raw_samples(local_shard(manifest.shard_paths[shard]), ordinal, offset):
        return sample
    return None


def iter_documents(
    shard_path: str,
    first_row: int,
    expected_count: int,
    start_ordinal: int = 0,
    start_offset_bytes: int = 0,
    text_field: str = "text",
) -> Iterator[Document | Skipped]:
    """Every row of one shard from ``start_ordinal`` on, as a Document or a Skipped record."""
    report = ShardReadReport(shard_path)
    next_ordinal = start_ordinal
    for sample in iter_raw_samples(shard_path, start_ordinal, start_offset_bytes, report):
        if sample.ordinal >= expected_count:
            # The shard grew after the manifest was written: rows beyond it have no stable id.
            break
        row = first_row + sample.ordinal
        next_ordinal = sample.ordinal + 1
        text = decode_text(sample.members, text_field)
        if text is None:
            yield Skipped(row, sample.key, "missing text member")
        elif isinstance(text, Exception):
            yield Skipped(row, sample.key, "not UTF-8" if isinstance(text, UnicodeDecodeError)
                          else "invalid JSON")
        elif not text or text.isspace():  # not text.strip(), without copying the text
            yield Skipped(row, sample.key, "empty text")
        else:
            yield Document(row, sample.key, text)
    reason = "truncated tar" if report.truncated else "missing from shard"
    for ordinal in range(next_ordinal, expected_count):
        yield Skipped(first_row + ordinal, f"<ordinal {ordinal}>", reason)
