"""Input rows for curation: every row of the input shards, in row order, in chunks.

Each sample becomes an :class:`~curriculum.curation.decide.InputDocument` with its stable row
(the manifest's first row of the shard plus the ordinal); a sample without usable text keeps its
row with ``text=None`` and the reason, so it is accounted for as unscored, never lost. Rows that
a truncated shard no longer holds are reported the same way.
"""

from __future__ import annotations

from collections.abc import Iterator

from curriculum.curation.decide import InputDocument
from curriculum.shards.documents import decode_text
from curriculum.shards.manifest import ShardManifest
from curriculum.shards.tar_samples import ShardReadReport, iter_raw_samples


def _document(row: int, key: str, members: dict[str, bytes], text_field: str) -> InputDocument:
    text = decode_text(members, text_field)
    if text is None:
        return InputDocument(row, key, None, members, "missing text member")
    if isinstance(text, Exception):
        reason = "not UTF-8" if isinstance(text, UnicodeDecodeError) else "invalid JSON"
        return InputDocument(row, key, None, members, reason)
    if not text or text.isspace():
        return InputDocument(row, key, None, members, "empty text")
    return InputDocument(row, key, text, members)


def iter_input_documents(manifest: ShardManifest, limit: int | None = None,
                         text_field: str = "text") -> Iterator[InputDocument]:
    """Every row ``[0, limit)`` of the manifest's shards, in row order."""
    total = manifest.num_rows if limit is None else min(limit, manifest.num_rows)
    for path, first, count in zip(manifest.shard_paths, manifest.first_rows.tolist(),
                                  manifest.counts.tolist(), strict=True):
        if first >= total:
            return
        report = ShardReadReport(path)
        expected = min(count, total - first)
        seen = 0
        for sample in iter_raw_samples(path, report=report):
            if sample.ordinal >= expected:
                break
            seen = sample.ordinal + 1
            yield _document(first + sample.ordinal, sample.key, sample.members, text_field)
        reason = "truncated tar" if report.truncated else "missing from shard"
        for ordinal in range(seen, expected):
            yield InputDocument(first + ordinal, f"<ordinal {ordinal}>", None, {}, reason)


def chunked(documents: Iterator[InputDocument], size: int) -> Iterator[list[InputDocument]]:
    """Lists of ``size`` documents (the last may be shorter)."""
    chunk: list[InputDocument] = []
    for document in documents:
        chunk.append(document)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
