"""The shard manifest: which shards exist, which rows each holds, and where each sample starts.

Row ids are the contract every part of the project speaks in: ``row = first_row[shard] +
ordinal``. The manifest is two files in the corpus directory:

- ``manifest.json``: shard paths (relative to the manifest), first row and sample count per
  shard, and a content hash of the shard list;
- ``manifest_rows.npz``: per row, the byte offset of the sample inside its shard (to seek on
  resume) and a 64-bit hash of its key (a sorted copy gives key -> row lookup without a Python
  dict of every key).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from curriculum.shards.tar_samples import RawSample, ShardReadReport, iter_raw_samples

MANIFEST_NAME = "manifest.json"
ROWS_NAME = "manifest_rows.npz"


class ManifestError(ValueError):
    """A manifest or shard specification that cannot be used (the message names the file)."""


def key_hash(keys: Sequence[str]) -> np.ndarray:
    """Stable 64-bit hashes of sample keys (blake2b, so equal on every machine and run)."""
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "little") for k in keys),
        dtype=np.uint64,
        count=len(keys),
    )


def expand_shard_spec(spec: str | Sequence[str]) -> list[str]:
    """Turn a shard specification into a sorted list of existing tar paths.

    Accepts a directory (its ``*.tar``), a glob, a webdataset brace pattern
    (``shard-{000000..000003}.tar``), a comma-separated list, or a list of any of these.
    """
    from webdataset.shardlists import expand_urls

    specs = [spec] if isinstance(spec, str) else list(spec)
    paths: list[str] = []
    for item in specs:
        for part in expand_urls(item) if "{" in item else item.split(","):
            if os.path.isdir(part):
                paths.extend(sorted(glob.glob(os.path.join(part, "*.tar"))))
            elif any(c in part for c in "*?["):
                paths.extend(sorted(glob.glob(part)))
            else:
                paths.append(part)
    if not paths:
        raise ManifestError(f"{spec}: no shards match")
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise ManifestError(f"{missing[0]}: shard not found")
    return paths


@dataclass
class ShardManifest:
    """Shards, their row ranges, and per-row byte offsets and key hashes."""

    shard_paths: list[str]
    first_rows: np.ndarray  # int64, one per shard
    counts: np.ndarray  # int64, samples per shard
    offsets_bytes: np.ndarray  # int64, one per row
    key_hashes: np.ndarray  # uint64, one per row

    @property
    def num_rows(self) -> int:
        """Total number of samples over all shards."""
        return int(self.counts.sum())

    @property
    def num_shards(self) -> int:
        """Number of shards."""
        return len(self.shard_paths)

    def content_hash(self) -> str:
        """Hash of the shard list (base names, sizes, sample counts): changes when the data does."""
        digest = hashlib.sha256()
        for path, count in zip(self.shard_paths, self.counts.tolist(), strict=True):
            digest.update(f"{os.path.basename(path)}:{os.path.getsize(path)}:{count}\n".encode())
        return digest.hexdigest()[:16]

    def shard_of_rows(self, rows: np.ndarray) -> np.ndarray:
        """Index of the shard holding each row."""
        return np.searchsorted(self.first_rows, np.asarray(rows), side="right") - 1

    def rows_for_keys(self, keys: Sequence[str]) -> np.ndarray:
        """Rows of the given keys; -1 where a key is unknown (binary search, no dict)."""
        order = np.argsort(self.key_hashes, kind="stable")
        sorted_hashes = self.key_hashes[order]
        wanted = key_hash(keys)
        positions = np.searchsorted(sorted_hashes, wanted)
        positions = np.minimum(positions, len(sorted_hashes) - 1)
        found = sorted_hashes[positions] == wanted if len(sorted_hashes) else np.zeros(len(keys), bool)
        return np.where(found, order[positions] if len(order) else -1, -1).astype(np.int64)

    @classmethod
    def build(cls, shard_paths: Sequence[str], show_progress: bool = False) -> ShardManifest:
        """Scan shards once (tar headers and member bytes) and record every sample."""
        scan = ShardScan()
        for path in tqdm(shard_paths, desc="scan shards", unit="shard", disable=not show_progress):
            for _ in scan.samples(path):
                pass
        return scan.manifest(shard_paths)

    def save(self, directory: str | Path) -> Path:
        """Write ``manifest.json`` and ``manifest_rows.npz`` atomically (write, then rename)."""
        directory = Path(directory)
        rows_tmp = directory / (ROWS_NAME + ".tmp.npz")
        np.savez(rows_tmp, offsets_bytes=self.offsets_bytes, key_hashes=self.key_hashes)
        os.replace(rows_tmp, directory / ROWS_NAME)
        record = {
            "version": 1,
            "num_rows": self.num_rows,
            "content_hash": self.content_hash(),
            "shards": [
                {"path": os.path.relpath(p, directory), "first_row": int(f), "count": int(c)}
                for p, f, c in zip(self.shard_paths, self.first_rows, self.counts, strict=True)
            ],
        }
        tmp = directory / (MANIFEST_NAME + ".tmp")
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, directory / MANIFEST_NAME)
        return directory / MANIFEST_NAME

    @classmethod
    def load(cls, path: str | Path) -> ShardManifest:
        """Read a manifest from its directory or its ``manifest.json``; refuse damaged ones."""
        path = Path(path)
        directory = path if path.is_dir() else path.parent
        try:
            record = json.loads((directory / MANIFEST_NAME).read_text())
            with np.load(directory / ROWS_NAME) as rows:
                offsets, hashes = rows["offsets_bytes"], rows["key_hashes"]
            shards = record["shards"]
        except (OSError, ValueError, KeyError) as error:
            raise ManifestError(f"{directory / MANIFEST_NAME}: unreadable manifest ({error})") from error
        return cls.from_record([str(directory / s["path"]) for s in shards], shards, offsets,
                               hashes, str(directory / ROWS_NAME))

    @classmethod
    def from_record(cls, shard_paths: list[str], shards: list[dict], offsets: np.ndarray,
                    hashes: np.ndarray, rows_source: str) -> ShardManifest:
        """A manifest from a ``manifest.json`` record's ``shards`` (paths already resolved) and
        its row tables; refuses tables that do not match the shard counts (``rows_source``
        names them in the error)."""
        manifest = cls(
            shard_paths,
            np.asarray([s["first_row"] for s in shards], dtype=np.int64),
            np.asarray([s["count"] for s in shards], dtype=np.int64),
            offsets,
            hashes,
        )
        if len(offsets) != manifest.num_rows or len(hashes) != manifest.num_rows:
            raise ManifestError(f"{rows_source}: row tables do not match the shard counts")
        return manifest


class ShardScan:
    """Counts, byte offsets and key hashes of shards, recorded while their samples stream by.

    The one scan behind :meth:`ShardManifest.build` and the store build (which embeds the texts
    in the same pass), so both record rows the same way.
    """

    def __init__(self) -> None:
        self.counts: list[int] = []
        self.offsets: list[np.ndarray] = []
        self.hashes: list[np.ndarray] = []
        self.last_report: ShardReadReport | None = None
        """What went wrong in the shard scanned last (truncation), once its samples are read."""

    def samples(self, path: str) -> Iterator[RawSample]:
        """Every sample of one shard; its rows are recorded once the last one is read."""
        report = ShardReadReport(path)
        keys: list[str] = []
        shard_offsets: list[int] = []
        for sample in iter_raw_samples(path, report=report):
            keys.append(sample.key)
            shard_offsets.append(sample.offset_bytes)
            yield sample
        self.last_report = report
        self.counts.append(len(keys))
        self.offsets.append(np.asarray(shard_offsets, dtype=np.int64))
        self.hashes.append(key_hash(keys))

    def manifest(self, shard_paths: Sequence[str]) -> ShardManifest:
        """The manifest of the shards scanned, in the order they were scanned."""
        counts = np.asarray(self.counts, dtype=np.int64)
        return ShardManifest(
            [str(p) for p in shard_paths],
            np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64),
            counts,
            np.concatenate(self.offsets) if self.offsets else np.zeros(0, np.int64),
            np.concatenate(self.hashes) if self.hashes else np.zeros(0, np.uint64),
        )


def manifest_for(spec: str | Sequence[str], show_progress: bool = False) -> ShardManifest:
    """The manifest for a shard spec: loaded when the spec is a corpus directory or manifest file
    that has one, otherwise built by scanning the shards (in memory, not saved). URLs are read
    through :mod:`curriculum.shards.remote`."""
    from curriculum.shards.remote import is_remote_spec, remote_manifest

    if is_remote_spec(spec):
        return remote_manifest(spec, show_progress=show_progress)
    if isinstance(spec, (str, Path)):
        candidate = Path(spec)
        if candidate.name == MANIFEST_NAME or (candidate / MANIFEST_NAME).is_file():
            return ShardManifest.load(candidate)
    return ShardManifest.build(expand_shard_spec(spec), show_progress=show_progress)
