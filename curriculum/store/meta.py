"""The store manifest, ``store.json``: what a store directory holds and how it was made.

It records the embedder (name and parameters), the embedding dimension, the index (factory
string, probes per query), the behaviors in column order, the row count, the content hash of the
shard list, the affinity definition, and the size and CRC-32 of every file that never changes
after the build. Opening a store checks the files against it; anything that disagrees is refused
with a one-line :class:`StoreError` naming the file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from curriculum.store.errors import StoreError
from curriculum.store.tables import write_bytes_atomic

META_FILE = "store.json"
FORMAT_VERSION = 1

# Files of a store directory (besides the attribution tables, see curriculum.store.attribution).
EMBEDDINGS_FILE = "embeddings.npy"
AFFINITY_FILE = "affinity.npy"
SHARD_AFFINITY_FILE = "shard_affinity.npy"
PROBE_EMBEDDINGS_FILE = "probe_embeddings.npy"
PROBE_BEHAVIORS_FILE = "probe_behaviors.npy"
KEY_HASHES_FILE = "key_hashes_sorted.npy"
KEY_ROWS_FILE = "key_rows_sorted.npy"
EMBEDDER_STATE_FILE = "embedder_state.npz"
INDEX_FILE = "index.faiss"
ESTIMATOR_FILE = "estimator_template.faiss"
COARSE_LISTS_FILE = "coarse_lists.npy"
WRITER_LOCK_FILE = "writer.lock"


@dataclass
class StoreMeta:
    """Contents of ``store.json``."""

    behaviors: list[str]
    """Behavior names in column order of every (rows x behaviors) table."""
    num_rows: int
    """Documents in the store (rows 0 .. num_rows-1, as in the shard manifest)."""
    num_shards: int
    """Shards the rows come from."""
    content_hash: str
    """``ShardManifest.content_hash()`` of the shards at build time."""
    dim: int
    """Embedding dimension."""
    embedder: dict[str, Any]
    """``{"name": ..., "params": {...}}``: rebuilds the embedder (see ``load_embedder``)."""
    index: dict[str, Any]
    """``{"factory", "nprobe"}`` of the index of all rows, and ``{"estimator_factory",
    "estimator_nprobe"}`` of the kNN estimator's index of measured rows."""
    affinity: dict[str, Any]
    """``{"definition": "mean_top_k_cosine", "top_k": int, "probe_documents": {behavior: n}}``."""
    files: dict[str, dict[str, int]] = field(default_factory=dict)
    """Static files: ``{name: {"bytes": size, "crc32": checksum}}``."""
    version: int = FORMAT_VERSION
    """Layout version of the store directory."""

    @property
    def num_behaviors(self) -> int:
        """Number of behaviors (columns)."""
        return len(self.behaviors)

    def save(self, directory: Path) -> None:
        """Write ``store.json`` atomically."""
        text = json.dumps(asdict(self), indent=1, sort_keys=True) + "\n"
        write_bytes_atomic(Path(directory) / META_FILE, text.encode())

    @classmethod
    def load(cls, directory: Path) -> StoreMeta:
        """Read ``store.json``; a missing, damaged or incomplete one raises StoreError."""
        path = Path(directory) / META_FILE
        if not Path(directory).is_dir():
            raise StoreError(f"{directory}: no such store directory")
        if not path.is_file():
            raise StoreError(f"{path}: missing; {directory} is not a behavior store "
                             "(build one with `curriculum index`)")
        try:
            record = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise StoreError(f"{path}: damaged store manifest ({error})") from error
        if not isinstance(record, dict):
            raise StoreError(f"{path}: damaged store manifest (not a JSON object)")
        if record.get("version") != FORMAT_VERSION:
            raise StoreError(f"{path}: store format version {record.get('version')!r}, this "
                             f"library reads version {FORMAT_VERSION}")
        try:
            meta = cls(**record)
        except TypeError as error:
            raise StoreError(f"{path}: damaged store manifest ({error})") from error
        if len(set(meta.behaviors)) != len(meta.behaviors) or not meta.behaviors:
            raise StoreError(f"{path}: behaviors must be unique and non-empty, got {meta.behaviors}")
        return meta

    def check_file_sizes(self, directory: Path) -> None:
        """Refuse a static file that is missing or whose size differs from the recorded one."""
        for name, record in self.files.items():
            path = Path(directory) / name
            if not path.is_file():
                raise StoreError(f"{path}: missing store file")
            size = path.stat().st_size
            if size != record["bytes"]:
                raise StoreError(f"{path}: damaged ({size} bytes, store.json recorded "
                                 f"{record['bytes']})")
