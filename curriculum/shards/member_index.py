"""A compact index beside each shard: where each row's text member lies, so readers skip tar
headers.

Parsing tar headers (checksums, pax records, key grouping) was the largest part of a reader's
per-document time. The index, ``<shard>.members.npy`` beside the shard, holds one int64 triple
per row — byte offset of the text member's data, its length, and which member it is — and is
written once, when the manifest is (:func:`write_member_indexes`). A reader then slices each
text straight out of the memory-mapped shard (:func:`iter_shard_documents`).

What comes out is always what :func:`curriculum.shards.documents.iter_documents` gives, the
tar-header reader:

- the index is used only when the shard's size and modification time are those it was built
  from, and it was built only from a shard the fast tar reader reads whole, whose samples and
  offsets match the manifest's;
- a row is marked for the tar reader (``-1``) unless its text is a ``.txt`` or ``.text`` member
  whose header names it plainly, and any row whose text does not decode or is blank is read by
  the tar reader too, so every skip keeps its reason and key.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from curriculum.shards.documents import Document, Skipped, iter_documents
from curriculum.shards.manifest import ShardManifest
from curriculum.shards.tar_samples import split_key
from curriculum.shards.ustar import BLOCK, UnusualArchiveError, iter_file_members

INDEX_SUFFIX = ".members.npy"
_VERSION = 1
_TAR_READER = -1
"""Member code of a row the tar reader must read."""
_CODES = {"txt": 0, "text": 1}
"""Member codes of text members, in :data:`curriculum.shards.documents.TEXT_MEMBERS` order."""
_ROWS_PER_BLOCK = 1024
_RELEASE_BYTES = 8 << 20
"""How much of a mapped shard is read before its pages are handed back (flat memory)."""


def index_path(shard_path: str | Path) -> Path:
    """Where a shard's member index lives."""
    return Path(str(shard_path) + INDEX_SUFFIX)


def _stamp(shard_path: str | Path) -> tuple[int, int]:
    stat = os.stat(shard_path)
    return stat.st_size, stat.st_mtime_ns


def header_name(view: mmap.mmap | bytes, header: int) -> str | None:
    """The member name a plain ustar header at ``header`` holds (prefix joined), as ``tarfile``
    reads it when no pax record overrides it; ``None`` when it is not plain ASCII."""
    raw = view[header:header + BLOCK]
    name = raw[:100].split(b"\0", 1)[0]
    prefix = raw[345:500].split(b"\0", 1)[0] if raw[257:263] == b"ustar\x00" else b""
    if prefix:
        name = prefix + b"/" + name
    return name.decode("ascii") if name.isascii() else None


def _choose(members: dict[str, tuple[int, int, bool]]) -> tuple[int, int, int]:
    """(data offset, length, code) of the member the text is read from, as ``decode_text``
    picks it (``.txt``, else ``.text``); the tar reader for anything else."""
    for ext, code in _CODES.items():
        if ext in members:
            data, length, plain = members[ext]
            return (data, length, code) if plain else (0, 0, _TAR_READER)
    return 0, 0, _TAR_READER


def scan_members(shard_path: str | Path) -> tuple[np.ndarray, np.ndarray] | None:
    """Per sample of a shard: its header offset, and (data offset, length, code) of its text
    member. ``None`` when the fast tar reader does not read the whole shard."""
    offsets: list[int] = []
    rows: list[tuple[int, int, int]] = []
    key: str | None = None
    members: dict[str, tuple[int, int, bool]] = {}
    with open(shard_path, "rb") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            return None
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
            try:
                for header, name, data, length in iter_file_members(view, 0):
                    parts = split_key(name)
                    if parts is None:
                        continue
                    if parts[0] != key:
                        if key is not None:
                            rows.append(_choose(members))
                        key, members = parts[0], {}
                        offsets.append(header)
                    # The key is later read from the member's own header: it must say the same.
                    members[parts[1]] = (data, length, header_name(view, data - BLOCK) == name)
            except UnusualArchiveError:
                return None
    if key is not None:
        rows.append(_choose(members))
    return np.asarray(offsets, np.int64), np.asarray(rows, np.int64).reshape(-1, 3)


def write_member_index(manifest: ShardManifest, shard: int) -> bool:
    """Write one shard's index; ``False`` (and no index) when the shard is not one the index can
    describe exactly (damaged, unusual, or different from the manifest)."""
    path = manifest.shard_paths[shard]
    target = index_path(path)
    target.unlink(missing_ok=True)
    stamp = _stamp(path)
    scanned = scan_members(path)
    first, count = int(manifest.first_rows[shard]), int(manifest.counts[shard])
    if scanned is None or len(scanned[0]) != count or not np.array_equal(
            scanned[0], manifest.offsets_bytes[first:first + count]):
        return False
    table = np.concatenate([np.array([[_VERSION, stamp[0], stamp[1]]], np.int64), scanned[1]])
    tmp = target.with_name(target.name + ".tmp.npy")
    np.save(tmp, table)
    os.replace(tmp, target)
    return True


def write_member_indexes(manifest: ShardManifest) -> int:
    """Write the index of every shard of a manifest; returns how many shards got one."""
    return sum(write_member_index(manifest, shard) for shard in range(manifest.num_shards))


def load_member_index(shard_path: str | Path, count: int) -> np.ndarray | None:
    """The (count, 3) rows of a shard's index, memory-mapped; ``None`` when there is none or it
    does not describe the shard as it is now."""
    try:
        table = np.load(index_path(shard_path), mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    if (table.ndim != 2 or table.shape != (count + 1, 3) or int(table[0, 0]) != _VERSION
            or tuple(int(v) for v in table[0, 1:]) != _stamp(shard_path)):
        return None
    return table[1:]


def iter_shard_documents(shard_path: str, first_row: int, expected_count: int,
                         start_ordinal: int, start_offset_bytes: int,
                         manifest_offsets: np.ndarray, text_field: str = "text",
                         ) -> Iterator[Document | Skipped]:
    """Every row of one shard from ``start_ordinal`` on, exactly as
    :func:`~curriculum.shards.documents.iter_documents` gives them, through the member index
    when the shard has a valid one. ``manifest_offsets`` are the shard's rows' sample offsets."""
    table = load_member_index(shard_path, expected_count)
    if table is None:
        yield from iter_documents(shard_path, first_row, expected_count, start_ordinal,
                                  start_offset_bytes, text_field)
        return
    with open(shard_path, "rb") as handle, mmap.mmap(handle.fileno(), 0,
                                                     access=mmap.ACCESS_READ) as view:
        yield from _indexed(view, shard_path, table, first_row, start_ordinal,
                            manifest_offsets, text_field)


def _table_rows(table: np.ndarray, start: int) -> Iterator[tuple[int, list[int]]]:
    """(ordinal, row) from ``start`` on, turned into Python ints a block at a time (a resumed
    reader converts only what it reads; Python ints are what the per-row slicing wants)."""
    for block in range(start, len(table), _ROWS_PER_BLOCK):
        yield from enumerate(table[block:block + _ROWS_PER_BLOCK].tolist(), start=block)


def _indexed(view: mmap.mmap, shard_path: str, table: np.ndarray, first_row: int,
             start_ordinal: int, manifest_offsets: np.ndarray, text_field: str,
             ) -> Iterator[Document | Skipped]:
    released = 0
    can_release = hasattr(view, "madvise") and hasattr(mmap, "MADV_DONTNEED")
    for ordinal, (data, length, code) in _table_rows(table, start_ordinal):
        if code != _TAR_READER:
            if data - released >= _RELEASE_BYTES and can_release:
                # Pages behind us leave this process (the page cache keeps them).
                upto = data - data % mmap.PAGESIZE
                view.madvise(mmap.MADV_DONTNEED, released, upto - released)
                released = upto
            try:
                text = view[data:data + length].decode("utf-8")
            except UnicodeDecodeError:
                text = ""
            if text and not text.isspace():
                name = header_name(view, data - BLOCK)
                yield Document(first_row + ordinal, name[:name.index(".", name.rfind("/") + 1)],
                               text)
                continue
        # Anything else is the tar reader's: the same item, skip reason and key as without index.
        yield from iter_documents(shard_path, first_row, ordinal + 1, ordinal,
                                  int(manifest_offsets[ordinal]), text_field)
