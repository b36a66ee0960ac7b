"""The member index beside each shard: the reader through it gives exactly what the tar-header
reader gives (documents, keys, skips and their reasons), and a stale or missing index is ignored."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from curriculum.shards.documents import iter_documents
from curriculum.shards.manifest import ShardManifest
from curriculum.shards.member_index import (
    index_path,
    iter_shard_documents,
    load_member_index,
    write_member_index,
)
from curriculum.shards.writer import write_shards


def _samples() -> list[dict]:
    """Good documents among every kind of bad or unusual one."""
    samples = []
    for i in range(40):
        kind = i % 8
        sample: dict = {"__key__": f"doc-{i:04d}"}
        if kind == 1:
            sample["txt"] = ""
        elif kind == 2:
            sample["txt"] = "  \n\t "
        elif kind == 3:
            sample["txt"] = b"\xff\xfe not utf-8"
        elif kind == 4:
            sample["json"] = json.dumps({"text": f"json text {i}"}).encode()
        elif kind == 5:
            sample["cls"] = b"3"  # no text member at all
        elif kind == 6:
            sample["__key__"] = f"nested/dir/doc-{i:04d}"
            sample["text"] = f"text member {i} caf\u00e9"
        else:
            sample["txt"] = f"document {i} " * (1 + i % 5)
            sample["json"] = b"{}"
        samples.append(sample)
    return samples


def _items(manifest: ShardManifest, shard: int, start: int, indexed: bool) -> list:
    path = manifest.shard_paths[shard]
    first, count = int(manifest.first_rows[shard]), int(manifest.counts[shard])
    offset = int(manifest.offsets_bytes[first + start])
    if indexed:
        return list(iter_shard_documents(path, first, count, start, offset,
                                         manifest.offsets_bytes[first:first + count]))
    return list(iter_documents(path, first, count, start, offset))


def test_indexed_reader_gives_what_the_tar_reader_gives(tmp_path: Path) -> None:
    _, manifest = write_shards(_samples(), tmp_path, max_docs_per_shard=16)
    assert manifest.num_shards == 3
    for shard in range(manifest.num_shards):
        table = load_member_index(manifest.shard_paths[shard], int(manifest.counts[shard]))
        assert table is not None  # the writer put one beside every shard
        assert (table[:, 2] >= 0).sum() > len(table) // 2  # most rows are served by the index
        for start in range(int(manifest.counts[shard])):
            assert _items(manifest, shard, start, True) == _items(manifest, shard, start, False)
    items = _items(manifest, 0, 0, True)
    assert {getattr(i, "reason", None) for i in items} >= {
        None, "empty text", "not UTF-8", "missing text member"}


def test_stale_or_missing_index_is_ignored(tmp_path: Path) -> None:
    _, manifest = write_shards(_samples(), tmp_path, max_docs_per_shard=40)
    path = manifest.shard_paths[0]
    count = int(manifest.counts[0])
    expected = _items(manifest, 0, 0, False)
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # the shard changed since
    assert load_member_index(path, count) is None
    assert _items(manifest, 0, 0, True) == expected
    index_path(path).unlink()
    assert load_member_index(path, count) is None
    assert _items(manifest, 0, 0, True) == expected


def test_no_index_for_a_damaged_shard(tmp_path: Path) -> None:
    _, manifest = write_shards(_samples(), tmp_path, max_docs_per_shard=40)
    path = manifest.shard_paths[0]
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) // 2)
    assert write_member_index(manifest, 0) is False
    assert not index_path(path).exists()
    # The reader falls back to the tar reader, which reports the truncation row by row.
    items = _items(manifest, 0, 0, True)
    assert items == _items(manifest, 0, 0, False)
    assert items[-1].reason == "truncated tar"


def test_index_is_small_and_int64(tmp_path: Path) -> None:
    _, manifest = write_shards(_samples(), tmp_path, max_docs_per_shard=40)
    table = np.load(index_path(manifest.shard_paths[0]))
    assert table.dtype == np.int64 and table.shape == (41, 3)


def test_rows_read_in_blocks_give_the_same_items(tmp_path: Path, monkeypatch) -> None:
    import curriculum.shards.member_index as member_index

    _, manifest = write_shards(_samples(), tmp_path, max_docs_per_shard=40)
    monkeypatch.setattr(member_index, "_ROWS_PER_BLOCK", 3)  # block edges inside the shard
    for start in (0, 2, 3, 7, 39):
        assert _items(manifest, 0, start, True) == _items(manifest, 0, start, False)
