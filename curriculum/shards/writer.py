"""Write tar shards with webdataset's writer, and convert JSONL, Parquet and saved
Hugging Face datasets into them.

Every shard directory gets a manifest (see :mod:`curriculum.shards.manifest`) so rows are fixed at write
time and the loader can seek.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import webdataset as wds
from tqdm import tqdm

from curriculum.shards.manifest import ManifestError, ShardManifest
from curriculum.shards.member_index import write_member_indexes

SHARD_PATTERN = "shard-%06d.tar"


def write_shards(
    samples: Iterable[dict[str, Any]],
    out_dir: str | Path,
    max_docs_per_shard: int = 10_000,
    max_bytes_per_shard: float = 256e6,
    show_progress: bool = False,
) -> tuple[list[Path], ShardManifest]:
    """Write ``samples`` (dicts with ``__key__`` and members such as ``txt``) into tar shards.

    A new shard starts when either limit is reached. Returns the shard paths and the manifest,
    which is also saved in ``out_dir``.
    """
    if max_docs_per_shard < 1:
        raise ValueError(f"max_docs_per_shard must be >= 1, got {max_docs_per_shard}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # The writer prints a line per shard when verbose; progress comes from tqdm instead.
    with contextlib.redirect_stdout(io.StringIO()), wds.ShardWriter(
        str(out / SHARD_PATTERN), maxcount=max_docs_per_shard, maxsize=max_bytes_per_shard, verbose=0
    ) as writer:
        for sample in tqdm(samples, desc="write shards", unit="doc", disable=not show_progress):
            writer.write(sample)
        shard_count = writer.shard
    paths = [out / (SHARD_PATTERN % i) for i in range(shard_count)]
    manifest = ShardManifest.build([str(p) for p in paths])
    manifest.save(out)
    # Beside each shard, where its texts lie: readers then skip the tar headers.
    write_member_indexes(manifest)
    return paths, manifest


def _iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("rb") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ManifestError(f"{path}:{line_number}: invalid JSON ({error.msg})") from error
            if not isinstance(record, dict):
                raise ManifestError(f"{path}:{line_number}: expected a JSON object per line")
            yield record


def _iter_parquet(path: Path) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    table = pq.ParquetFile(path)
    for batch in table.iter_batches():
        yield from batch.to_pylist()


def _iter_hf_dataset(path: Path) -> Iterator[dict[str, Any]]:
    from datasets import DatasetDict, load_from_disk

    dataset = load_from_disk(str(path))
    if isinstance(dataset, DatasetDict):
        for split in dataset:
            yield from dataset[split]
    else:
        yield from dataset


def detect_format(path: Path) -> str:
    """``jsonl``, ``parquet`` or ``hf`` (a directory written by ``datasets.save_to_disk``)."""
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            return "hf"
        raise ManifestError(f"{path}: directory is not a saved Hugging Face dataset")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise ManifestError(f"{path}: unknown input format (use .jsonl, .parquet or a saved dataset)")


def convert_to_shards(
    input_path: str | Path,
    out_dir: str | Path,
    text_field: str = "text",
    key_field: str | None = None,
    max_docs_per_shard: int = 10_000,
    max_bytes_per_shard: float = 256e6,
    input_format: str | None = None,
    show_progress: bool = False,
) -> tuple[list[Path], ShardManifest]:
    """Convert JSONL, Parquet or a saved HF dataset into tar shards of ``<key>.txt`` (+ ``.json``).

    The text goes to ``.txt``; the record's other fields go to ``.json`` as metadata. Keys come
    from ``key_field`` when given, else from the record's position. A record without the text
    field is refused with the file and position, since silently writing empty documents would
    hide a wrong ``text_field``.
    """
    source = Path(input_path)
    if not source.exists():
        raise ManifestError(f"{source}: input not found")
    fmt = input_format or detect_format(source)
    readers = {"jsonl": _iter_jsonl, "parquet": _iter_parquet, "hf": _iter_hf_dataset}
    if fmt not in readers:
        raise ManifestError(f"{source}: unknown input format {fmt!r}")

    def samples() -> Iterator[dict[str, Any]]:
        for index, record in enumerate(readers[fmt](source)):
            if text_field not in record:
                fields = ", ".join(sorted(record)) or "none"
                raise ManifestError(
                    f"{source}: record {index} has no field {text_field!r} (fields: {fields})"
                )
            key = str(record[key_field]) if key_field else f"{index:010d}"
            # webdataset keys may not contain dots: the first dot starts the extension.
            key = key.replace(".", "_").replace(os.sep, "_")
            meta = {k: v for k, v in record.items() if k not in (text_field, key_field)}
            sample = {"__key__": key, "txt": str(record[text_field] or "")}
            if meta:
                sample["json"] = json.dumps(meta, default=str).encode()
            yield sample

    return write_shards(samples(), out_dir, max_docs_per_shard, max_bytes_per_shard, show_progress)
