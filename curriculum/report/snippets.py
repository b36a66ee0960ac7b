"""The text of a few documents by row: the store's manifest gives each row's shard and the byte
offset of its first tar member, so one seek and one member read per document, whatever the
corpus size."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from curriculum.store import StoreReader

SNIPPET_CHARS = 280


@dataclass(frozen=True)
class Document:
    """Where a row lives and how it begins."""

    row: int
    key: str
    shard: str
    """Shard file name."""
    text: str
    """The first :data:`SNIPPET_CHARS` characters (or why the text could not be read)."""


def _text_of(members: dict[str, bytes]) -> str:
    for extension in ("txt", "text"):
        if extension in members:
            return members[extension].decode("utf-8", errors="replace")
    if "json" in members:
        try:
            record = json.loads(members["json"])
        except ValueError:
            return "(damaged .json member)"
        return str(record.get("text", "")) if isinstance(record, dict) else ""
    return f"(no text member; members: {', '.join(sorted(members)) or 'none'})"


def read_sample(shard: str | Path, offset_bytes: int) -> tuple[str, dict[str, bytes]]:
    """(key, members by extension) of the sample whose first tar header is at ``offset_bytes``."""
    key = ""
    members: dict[str, bytes] = {}
    with open(shard, "rb") as handle:
        handle.seek(offset_bytes)
        with tarfile.open(fileobj=handle, mode="r|") as archive:
            for member in archive:
                base = member.name.rsplit("/", 1)[-1]
                prefix = member.name[:len(member.name) - len(base)]
                stem, _, extension = base.partition(".")
                if key and prefix + stem != key:
                    break
                key = prefix + stem
                if member.isfile():
                    data = archive.extractfile(member)
                    members[extension.lower()] = data.read() if data is not None else b""
    return key, members


def read_documents(store: StoreReader, rows: Sequence[int],
                   max_chars: int = SNIPPET_CHARS) -> dict[int, Document]:
    """``{row: Document}`` for ``rows``; a shard that cannot be read gives a Document saying so."""
    if not len(rows):
        return {}
    manifest = store.manifest
    wanted = np.unique(np.asarray(rows, np.int64))
    shards = manifest.shard_of_rows(wanted)
    documents = {}
    for row, shard in zip(wanted.tolist(), shards.tolist(), strict=True):
        path = manifest.shard_paths[shard]
        try:
            key, members = read_sample(path, int(manifest.offsets_bytes[row]))
            text = " ".join(_text_of(members).split())
        except (OSError, tarfile.TarError) as error:
            key, text = "", f"(unreadable: {str(error).splitlines()[0] if str(error) else error})"
        if len(text) > max_chars:
            text = text[:max_chars - 1] + "…"
        documents[row] = Document(row, key, Path(path).name, text)
    return documents
