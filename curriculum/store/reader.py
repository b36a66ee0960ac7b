"""A read-only, FAISS-free view of a behavior store, for DataLoader workers.

:class:`StoreReader` memory-maps the store's tables, so any number of worker processes share one
copy of them in the page cache, and reads of a batch cost a few fancy-indexing calls. It pickles
as its path alone and opens the files lazily in whichever process first reads, which makes it
cheap to send to spawned workers; after a fork the inherited mappings are simply reused.
It never imports FAISS (fork and OpenMP do not mix), so kNN search belongs to the writer's
:class:`~curriculum.store.BehaviorStore`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from curriculum.shards.manifest import MANIFEST_NAME, ShardManifest, key_hash
from curriculum.store.assessments import ASSESS_DIR, ASSESS_META, AssessmentTable
from curriculum.store.attribution import AttributionTable
from curriculum.store.errors import StoreError
from curriculum.store.meta import (
    AFFINITY_FILE,
    EMBEDDINGS_FILE,
    KEY_HASHES_FILE,
    KEY_ROWS_FILE,
    PROBE_BEHAVIORS_FILE,
    PROBE_EMBEDDINGS_FILE,
    SHARD_AFFINITY_FILE,
    StoreMeta,
)
from curriculum.store.tables import open_table


@dataclass(frozen=True)
class ShardSummaries:
    """Per-shard summary of a store, for ordering shards by behavior before streaming."""

    behaviors: tuple[str, ...]
    """Column order of ``mean_affinity``."""
    shard_paths: list[str]
    """Shard files, in manifest order."""
    first_rows: np.ndarray
    """int64 (num_shards,): the first row of each shard."""
    num_rows: np.ndarray
    """int64 (num_shards,): documents per shard."""
    mean_affinity: np.ndarray
    """float32 (num_shards, num_behaviors): mean affinity of each shard's documents (NaN for an
    empty shard)."""

    def order(self, behavior: str, descending: bool = True) -> np.ndarray:
        """Shard indices sorted by mean affinity to ``behavior`` (empty shards last)."""
        if behavior not in self.behaviors:
            raise StoreError(f"unknown behavior {behavior!r}; the store has {list(self.behaviors)}")
        values = self.mean_affinity[:, self.behaviors.index(behavior)].astype(np.float64)
        key = np.where(np.isnan(values), np.inf, -values if descending else values)
        return np.argsort(key, kind="stable")


class _Tables:
    """The open memory maps of one store (created once per process)."""

    def __init__(self, path: Path) -> None:
        meta = StoreMeta.load(path)
        meta.check_file_sizes(path)
        rows, behaviors = meta.num_rows, meta.num_behaviors
        self.meta = meta
        self.embeddings = open_table(path / EMBEDDINGS_FILE, np.float32, (rows, meta.dim))
        self.affinity = open_table(path / AFFINITY_FILE, np.float32, (rows, behaviors))
        self.shard_affinity = open_table(
            path / SHARD_AFFINITY_FILE, np.float32, (meta.num_shards, behaviors)
        )
        self.key_hashes = open_table(path / KEY_HASHES_FILE, np.uint64, (rows,))
        self.key_rows = open_table(path / KEY_ROWS_FILE, np.int64, (rows,))
        num_probes = sum(meta.affinity.get("probe_documents", {}).values())
        self.probe_behaviors = open_table(path / PROBE_BEHAVIORS_FILE, np.int32, (num_probes,))
        self.probe_embeddings = open_table(
            path / PROBE_EMBEDDINGS_FILE, np.float32, (num_probes, meta.dim)
        )
        self.attribution = AttributionTable(path, rows, behaviors)


class StoreReader:
    """Read-only access to a store's tables: affinity, attribution, embeddings, key lookup.

    Every method taking ``rows`` accepts a 1-D sequence of integer row ids and returns arrays
    with one line per row, in the same order; rows outside ``[0, num_rows)`` raise StoreError.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._tables: _Tables | None = None
        self._manifest: ShardManifest | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Only the path travels; memory maps are reopened in the receiving process.
        return {"path": str(self.path)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])

    def __repr__(self) -> str:
        return f"StoreReader({str(self.path)!r})"

    @property
    def tables(self) -> _Tables:
        """The memory-mapped tables, opened (and checked) on first use."""
        if self._tables is None:
            self._tables = _Tables(self.path)
        return self._tables

    def open(self) -> StoreReader:
        """Open now instead of on first read (surfaces a damaged store early)."""
        _ = self.tables
        return self

    # ----------------------------------------------------------------------------- metadata

    @property
    def meta(self) -> StoreMeta:
        """The store manifest (``store.json``)."""
        return self.tables.meta

    @property
    def behaviors(self) -> tuple[str, ...]:
        """Behavior names; their order is the column order of every (rows x K) array."""
        return tuple(self.meta.behaviors)

    @property
    def num_rows(self) -> int:
        """Number of documents (rows)."""
        return self.meta.num_rows

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return self.meta.dim

    @property
    def manifest(self) -> ShardManifest:
        """The shard manifest the rows come from (loads per-row offsets: 16 bytes a row)."""
        if self._manifest is None:
            self._manifest = ShardManifest.load(self.path / MANIFEST_NAME)
        return self._manifest

    def behavior_index(self, behavior: str) -> int:
        """Column of ``behavior``; an unknown name raises StoreError."""
        if behavior not in self.behaviors:
            raise StoreError(f"unknown behavior {behavior!r}; the store has {list(self.behaviors)}")
        return self.behaviors.index(behavior)

    # ----------------------------------------------------------------------------- rows

    def check_rows(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """``rows`` as a 1-D int64 array; StoreError for non-integers or rows out of range."""
        rows = np.asarray(rows)
        if rows.ndim == 0:
            rows = rows.reshape(1)
        if rows.size == 0:
            return rows.astype(np.int64).reshape(0)
        if rows.ndim != 1 or rows.dtype.kind not in "iu":
            raise StoreError(f"rows must be a 1-D array of integers, got {rows.dtype}{rows.shape}")
        low, high = rows.min(), rows.max()
        if low < 0 or high >= self.num_rows:
            bad = low if low < 0 else high
            raise StoreError(f"row {int(bad)} is outside the store (0..{self.num_rows - 1})")
        return rows.astype(np.int64, copy=False)

    def rows_for_keys(self, keys: Sequence[str]) -> np.ndarray:
        """Rows of sample keys (int64); -1 for keys the store does not hold.

        Binary search in a sorted, memory-mapped table of 64-bit key hashes: no dict of every
        key in any process.
        """
        tables = self.tables
        wanted = key_hash(list(keys))
        if not self.num_rows:
            return np.full(len(wanted), -1, dtype=np.int64)
        positions = np.minimum(np.searchsorted(tables.key_hashes, wanted), self.num_rows - 1)
        found = tables.key_hashes[positions] == wanted
        return np.where(found, tables.key_rows[positions], -1).astype(np.int64)

    def affinity(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """float32 (n, K): similarity of each document to each behavior's probe set (see
        ``store.json`` ``affinity``; by default the mean of the top-k cosine similarities)."""
        return np.asarray(self.tables.affinity[self.check_rows(rows)])

    @property
    def assessed_principles(self) -> tuple[str, ...]:
        """Principles with assessments in the store (``assess.<principle>``), in column order."""
        return self._assessment_table().principles

    def assessment(self, rows: Sequence[int] | np.ndarray,
                   principles: Sequence[str] | None = None) -> np.ndarray:
        """float32 (n, P) judge scores 0-100 per principle (default: all assessed, in order);
        NaN where a document was not assessed. Read fresh on each call (cheap: a memory map)."""
        return self._assessment_table().values(self.check_rows(rows), principles)

    def _assessment_table(self) -> AssessmentTable:
        # Reopened when assess.json changes (a curation run wrote new scores); a stat per call.
        try:
            stamp = os.stat(self.path / ASSESS_DIR / ASSESS_META).st_mtime_ns
        except FileNotFoundError:
            stamp = -1
        cached = getattr(self, "_assessments", None)
        if cached is None or cached[0] != stamp:
            cached = (stamp, AssessmentTable(self.path))
            self._assessments = cached
        return cached[1]

    def attribution(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """float32 (n, K): measured mean attribution where measured, the kNN estimate
        elsewhere (0.0 before the writer's first ``refresh_estimates``)."""
        return self.tables.attribution.attribution(self.check_rows(rows))[0]

    def attribution_and_measured(
        self, rows: Sequence[int] | np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(attribution float32 (n, K), is_measured bool (n, K)) from one consistent read."""
        return self.tables.attribution.attribution(self.check_rows(rows))

    def is_measured(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """bool (n, K): True where at least one online score was recorded for (row, behavior).

        Per behavior, because a trainer may score some behaviors' probe sets only at times.
        ``.any(axis=1)`` gives "measured for some behavior".
        """
        return self.tables.attribution.measured(self.check_rows(rows))

    def attribution_counts(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """uint32 (n, K): how many online scores were recorded per (row, behavior)."""
        return np.asarray(self.tables.attribution.count[self.check_rows(rows)])

    def embeddings(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """float32 (n, dim): the documents' unit-norm embeddings."""
        return np.asarray(self.tables.embeddings[self.check_rows(rows)])

    def probe_embeddings(self, behavior: str | None = None) -> np.ndarray:
        """float32 (p, dim): embeddings of the probe documents (of one behavior, or all)."""
        tables = self.tables
        if behavior is None:
            return np.asarray(tables.probe_embeddings)
        mask = np.asarray(tables.probe_behaviors) == self.behavior_index(behavior)
        return np.asarray(tables.probe_embeddings[mask])

    # ----------------------------------------------------------------------------- shards

    def shard_summaries(self) -> ShardSummaries:
        """Per-shard row ranges and mean affinity (computed at build time)."""
        record = self._manifest_record()
        shards = record["shards"]
        return ShardSummaries(
            behaviors=self.behaviors,
            shard_paths=[os.path.normpath(self.path / s["path"]) for s in shards],
            first_rows=np.asarray([s["first_row"] for s in shards], dtype=np.int64),
            num_rows=np.asarray([s["count"] for s in shards], dtype=np.int64),
            mean_affinity=np.array(self.tables.shard_affinity),
        )

    def _manifest_record(self) -> dict[str, Any]:
        path = self.path / MANIFEST_NAME
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise StoreError(f"{path}: unreadable shard manifest ({error})") from error

    def check_compatible(
        self,
        shards: Any = None,
        behaviors: Sequence[str] | None = None,
        dim: int | None = None,
    ) -> None:
        """Refuse (StoreError, one line) a store that does not match what the caller expects.

        ``shards``: a shard spec or :class:`ShardManifest` whose content hash must equal the
        store's; ``behaviors``: names that must all be in the store; ``dim``: the embedding
        dimension.
        """
        meta = self.meta
        if shards is not None:
            from curriculum.shards.manifest import manifest_for

            manifest = shards if isinstance(shards, ShardManifest) else manifest_for(shards)
            content_hash = manifest.content_hash()
            if content_hash != meta.content_hash or manifest.num_rows != meta.num_rows:
                raise StoreError(
                    f"{self.path}: built from other shards (content hash {meta.content_hash}, "
                    f"{meta.num_rows} rows; given shards: {content_hash}, {manifest.num_rows} rows)"
                )
        if behaviors is not None:
            missing = [b for b in behaviors if b not in meta.behaviors]
            if missing:
                raise StoreError(f"{self.path}: no behavior {missing[0]!r} in the store "
                                 f"(it has {meta.behaviors})")
        if dim is not None and int(dim) != meta.dim:
            raise StoreError(f"{self.path}: embeddings have dimension {meta.dim}, expected {dim}")

    def verify_shards(self) -> None:
        """Refuse a store whose shards changed since it was built (sizes, counts, names)."""
        manifest = self.manifest
        try:
            content_hash = manifest.content_hash()
        except OSError as error:
            raise StoreError(f"{self.path}: a shard of the store is unreadable ({error})") from error
        if content_hash != self.meta.content_hash:
            raise StoreError(
                f"{self.path / MANIFEST_NAME}: shards changed since the store was built (content "
                f"hash {content_hash}, store.json recorded {self.meta.content_hash})"
            )
