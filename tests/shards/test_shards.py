"""Shards in and out: JSONL, Parquet and saved HF datasets; plain tar; bad input skipped."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curriculum.shards.documents import Document, Skipped, iter_documents
from curriculum.shards.manifest import ManifestError, ShardManifest, manifest_for
from curriculum.shards.writer import convert_to_shards
from loaders.stream import PackedTextStream, StreamConfig

RECORDS = [{"text": f"document number {i} " + "x" * i, "id": f"k{i}", "source": "t"}
           for i in range(25)]


def _read_texts(directory: Path) -> list[str]:
    manifest = ShardManifest.load(directory)
    texts = []
    for path, first, count in zip(manifest.shard_paths, manifest.first_rows, manifest.counts,
                                  strict=True):
        for item in iter_documents(path, int(first), int(count)):
            assert isinstance(item, Document)
            texts.append(item.text)
    return texts


def test_jsonl_round_trip_with_count_limit(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n")
    paths, manifest = convert_to_shards(source, tmp_path / "out", key_field="id",
                                        max_docs_per_shard=10)
    assert len(paths) == 3 and manifest.counts.tolist() == [10, 10, 5]
    assert _read_texts(tmp_path / "out") == [r["text"] for r in RECORDS]
    assert manifest.rows_for_keys(["k0", "k24", "nope"]).tolist() == [0, 24, -1]


def test_parquet_round_trip_with_custom_text_field(tmp_path: Path) -> None:
    table = pa.table({"body": [r["text"] for r in RECORDS], "n": list(range(25))})
    pq.write_table(table, tmp_path / "in.parquet")
    convert_to_shards(tmp_path / "in.parquet", tmp_path / "out", text_field="body",
                      max_bytes_per_shard=4000)
    assert _read_texts(tmp_path / "out") == [r["text"] for r in RECORDS]


def test_saved_hf_dataset_round_trip(tmp_path: Path) -> None:
    from datasets import Dataset

    Dataset.from_list(RECORDS).save_to_disk(str(tmp_path / "hf"))
    convert_to_shards(tmp_path / "hf", tmp_path / "out")
    assert _read_texts(tmp_path / "out") == [r["text"] for r in RECORDS]


def test_missing_text_field_and_bad_json_are_refused_with_the_file(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"body": "x"}\n')
    with pytest.raises(ManifestError, match="in.jsonl: record 0 has no field 'text'"):
        convert_to_shards(source, tmp_path / "out")
    source.write_text('{"text": "x"}\n{oops\n')
    with pytest.raises(ManifestError, match=r"in.jsonl:2: invalid JSON"):
        convert_to_shards(source, tmp_path / "out2")


def test_plain_tar_from_other_tools_reads(tmp_path: Path) -> None:
    members = tmp_path / "members"
    members.mkdir()
    for i in range(5):
        (members / f"sample{i}.txt").write_text(f"plain tar document {i}")
    subprocess.run(["tar", "-cf", str(tmp_path / "plain.tar"), "-C", str(members), "."],
                   check=True)
    manifest = manifest_for(str(tmp_path / "plain.tar"))
    assert manifest.num_rows == 5
    texts = [d.text for d in iter_documents(manifest.shard_paths[0], 0, 5)]
    assert sorted(texts) == [f"plain tar document {i}" for i in range(5)]


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_bad_documents_are_skipped_counted_and_named(tmp_path: Path) -> None:
    shard = tmp_path / "bad.tar"
    with tarfile.open(shard, "w") as tar:
        _add(tar, "a.txt", b"good document one")
        _add(tar, "b.txt", b"\xff\xfe not utf-8")
        _add(tar, "c.txt", b"   ")
        _add(tar, "d.json", b'{"other": 1}')
        _add(tar, "e.txt", b"good document two")
        _add(tar, "f.txt", b"good document three " * 200)
    good_size = shard.stat().st_size
    manifest = manifest_for(str(shard))
    assert manifest.num_rows == 6
    # Truncate the last member mid-way: its sample is lost and must be reported, not crash.
    data = shard.read_bytes()
    shard.write_bytes(data[: good_size - 10240 - 2048])
    stream = PackedTextStream(manifest, StreamConfig(batch_size=1, seq_len=8, num_epochs=1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from loaders.world import World

        docs = list(stream.iter_documents(World()))
    assert [d.key for d in docs] == ["a", "e"]
    reasons = {reason: n for (_, reason), n in stream.skips.counts.items()}
    assert reasons == {"not UTF-8": 1, "empty text": 1, "missing text member": 1,
                       "truncated tar": 1}
    assert all("bad.tar" in str(w.message) for w in caught)
    assert len(caught) == 4


def test_iter_documents_accounts_for_every_row(tmp_path: Path) -> None:
    shard = tmp_path / "s.tar"
    with tarfile.open(shard, "w") as tar:
        for i in range(4):
            _add(tar, f"k{i}.txt", b"" if i == 2 else b"text")
    items = list(iter_documents(str(shard), 100, 4))
    assert [i.row for i in items] == [100, 101, 102, 103]
    assert isinstance(items[2], Skipped)


def test_unknown_spec_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no shards match"):
        manifest_for(str(tmp_path / "*.tar"))
