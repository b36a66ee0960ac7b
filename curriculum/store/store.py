"""The behavior store: one directory with the shard manifest, per-document embeddings in FAISS,
the affinity table and the attribution table.

:class:`BehaviorStore` is the writer's handle (the trainer, one process per node): it reads
everything a :class:`~curriculum.store.reader.StoreReader` reads, and adds FAISS search, online
attribution updates and kNN estimation. DataLoader workers get ``store.reader()`` (or
``BehaviorStore.open(path, readonly=True)``), which never touches FAISS.

Single writer: the first write takes an exclusive, non-blocking ``flock`` on ``writer.lock`` in
the store directory; a second process that tries to write is refused with a StoreError. Opening a
store is free of side effects, so any number of handles can read.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np
from tqdm import tqdm

from curriculum.shards.manifest import ShardManifest
from curriculum.store.affinity import probe_affinity
from curriculum.store.attribution import AttributionTable
from curriculum.store.embedders import Embedder, load_embedder
from curriculum.store.errors import StoreError
from curriculum.store.estimate import KnnEstimator
from curriculum.store.index import faiss_module, load_index, nlist_of
from curriculum.store.meta import (
    COARSE_LISTS_FILE,
    EMBEDDER_STATE_FILE,
    ESTIMATOR_FILE,
    INDEX_FILE,
    WRITER_LOCK_FILE,
    StoreMeta,
)
from curriculum.store.profile import ESTIMATE_SPACES, affinity_profiles
from curriculum.store.reader import ShardSummaries, StoreReader
from curriculum.store.tables import file_crc32

#: Neighbours averaged by ``refresh_estimates`` unless told otherwise.
DEFAULT_ESTIMATE_NEIGHBORS = 10


@contextlib.contextmanager
def _faiss_threads(threads: int | None) -> Iterator[None]:
    """Cap FAISS's OpenMP threads inside the block (no-op for None)."""
    if not threads:
        yield
        return
    faiss = faiss_module()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(int(threads))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


class BehaviorStore:
    """Read and write access to a store directory (see the module docstring).

    Arrays follow the store's conventions: rows are int64 row ids from the shard manifest,
    (n, K) arrays have one column per behavior in :attr:`behaviors` order.
    """

    def __init__(self, path: str | Path, reader: StoreReader | None = None) -> None:
        self.path = Path(path)
        self._reader = reader or StoreReader(self.path).open()
        self._index: Any = None
        self._embedder: Embedder | None = None
        self._estimator: KnnEstimator | None = None
        self._estimate_space = "embedding"
        self._profiles: np.ndarray | None = None
        self._pending_measured: list[np.ndarray] = []
        self._indexed_rows: list[np.ndarray] = []
        self._tuned_at_rows = 0
        self._writer: AttributionTable | None = None
        self._lock_handle: int | None = None
        self._write_lock = threading.Lock()
        self.repair_stuck_rows = False

    @overload
    @classmethod
    def open(
        cls,
        path: str | Path,
        readonly: Literal[False] = False,
        shards: Any = None,
        behaviors: Sequence[str] | None = None,
        verify_shards: bool = False,
        repair: bool = False,
    ) -> BehaviorStore: ...

    @overload
    @classmethod
    def open(
        cls,
        path: str | Path,
        readonly: Literal[True],
        shards: Any = None,
        behaviors: Sequence[str] | None = None,
        verify_shards: bool = False,
        repair: bool = False,
    ) -> StoreReader: ...

    @classmethod
    def open(
        cls,
        path: str | Path,
        readonly: bool = False,
        shards: Any = None,
        behaviors: Sequence[str] | None = None,
        verify_shards: bool = False,
        repair: bool = False,
    ) -> BehaviorStore | StoreReader:
        """Open a store; refuse a damaged or mismatched one with a one-line StoreError.

        ``readonly=True`` returns a :class:`StoreReader` (no FAISS, picklable: for workers).
        ``shards`` (a spec or manifest) and ``behaviors`` are what the caller expects the store
        to hold; ``verify_shards`` re-hashes the store's own shard files. ``repair`` accepts rows
        that a crashed writer left mid-update (they may hold a partly added batch).
        """
        reader = StoreReader(path).open()
        reader.check_compatible(shards=shards, behaviors=behaviors)
        if verify_shards:
            reader.verify_shards()
        if readonly:
            return reader
        store = cls(path, reader)
        store.repair_stuck_rows = repair
        return store

    def reader(self) -> StoreReader:
        """A fresh read-only handle for DataLoader workers (pickles as its path)."""
        return StoreReader(self.path)

    def close(self) -> None:
        """Flush the attribution tables and give up the writer lock."""
        if self._writer is not None:
            self._writer.flush()
        if self._lock_handle is not None:
            fcntl.flock(self._lock_handle, fcntl.LOCK_UN)
            os.close(self._lock_handle)
            self._lock_handle = None
        self._writer = None
        self._index = None
        self._estimator = None

    def __enter__(self) -> BehaviorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self) -> Any:
        raise TypeError("a BehaviorStore holds FAISS and the writer lock and is not picklable; "
                        "send store.reader() to DataLoader workers")

    def __del__(self) -> None:
        if getattr(self, "_lock_handle", None) is not None:
            os.close(self._lock_handle)

    def __repr__(self) -> str:
        return f"BehaviorStore({str(self.path)!r}, rows={self.num_rows}, behaviors={self.behaviors})"

    # ----------------------------------------------------------------------------- reads

    @property
    def meta(self) -> StoreMeta:
        """The store manifest (``store.json``)."""
        return self._reader.meta

    @property
    def behaviors(self) -> tuple[str, ...]:
        """Behavior names in column order."""
        return self._reader.behaviors

    @property
    def num_rows(self) -> int:
        """Number of documents."""
        return self._reader.num_rows

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return self._reader.dim

    @property
    def manifest(self) -> ShardManifest:
        """The shard manifest of the rows."""
        return self._reader.manifest

    def check_rows(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """``rows`` as a 1-D int64 array; StoreError for non-integers or rows out of range."""
        return self._reader.check_rows(rows)

    def rows_for_keys(self, keys: Sequence[str]) -> np.ndarray:
        """Rows of sample keys; -1 where unknown."""
        return self._reader.rows_for_keys(keys)

    def affinity(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """float32 (n, K) affinity to each behavior's probe set."""
        return self._reader.affinity(rows)

    @property
    def assessed_principles(self) -> tuple[str, ...]:
        """Principles with assessments (``assess.<principle>``), in column order."""
        return self._reader.assessed_principles

    def assessment(self, rows: Sequence[int] | np.ndarray,
                   principles: Sequence[str] | None = None) -> np.ndarray:
        """float32 (n, P) judge scores 0-100; NaN where not assessed."""
        return self._reader.assessment(rows, principles)

    def attribution(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """float32 (n, K): measured mean where measured, kNN estimate otherwise."""
        return self._reader.attribution(rows)

    def attribution_and_measured(
        self, rows: Sequence[int] | np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(attribution (n, K), is_measured (n, K)) from one consistent read."""
        return self._reader.attribution_and_measured(rows)

    def is_measured(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """bool (n, K): whether each (row, behavior) has at least one online score."""
        return self._reader.is_measured(rows)

    def attribution_counts(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """uint32 (n, K): online scores recorded per (row, behavior)."""
        return self._reader.attribution_counts(rows)

    def embeddings(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """float32 (n, dim) unit-norm embeddings."""
        return self._reader.embeddings(rows)

    def probe_embeddings(self, behavior: str | None = None) -> np.ndarray:
        """float32 (p, dim) embeddings of the probe documents."""
        return self._reader.probe_embeddings(behavior)

    def shard_summaries(self) -> ShardSummaries:
        """Per-shard row ranges and mean affinity."""
        return self._reader.shard_summaries()

    def check_compatible(
        self, shards: Any = None, behaviors: Sequence[str] | None = None, dim: int | None = None
    ) -> None:
        """Refuse a store that does not match the expected shards, behaviors or dimension."""
        self._reader.check_compatible(shards=shards, behaviors=behaviors, dim=dim)

    def verify(self) -> None:
        """Check every static file's CRC-32 against ``store.json`` (reads them all)."""
        self.meta.check_file_sizes(self.path)
        for name, record in self.meta.files.items():
            if file_crc32(self.path / name) != record["crc32"]:
                raise StoreError(f"{self.path / name}: damaged (CRC-32 differs from store.json)")

    # ----------------------------------------------------------------------------- FAISS

    @property
    def index(self) -> Any:
        """The FAISS index of every row's embedding (loaded on first use; ids are rows)."""
        if self._index is None:
            self._index = load_index(
                self.path / INDEX_FILE, self.dim, self.num_rows, int(self.meta.index["nprobe"])
            )
        return self._index

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities float32 (n, k), rows int64 (n, k)) of the ``k`` nearest documents to
        each vector (cosine; -1 rows where the store has fewer than ``k``)."""
        vectors = np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)
        if vectors.shape[1] != self.dim:
            raise StoreError(f"search vectors have dimension {vectors.shape[1]}, "
                             f"the store has {self.dim}")
        similarities, rows = self.index.search(vectors, int(k))
        return similarities, rows.astype(np.int64, copy=False)

    def neighbors(self, rows: Sequence[int] | np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest other documents of stored rows: (similarities, rows), each (n, k)."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        similarities, found = self.search(self.embeddings(rows), k + 1)
        keep = found != rows[:, None]
        # Drop the row itself (or the last hit when the row was not among the results).
        order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(similarities, order, 1), np.take_along_axis(found, order, 1)

    @property
    def embedder(self) -> Embedder:
        """The embedder the store was built with (rebuilt from ``store.json`` on first use)."""
        if self._embedder is None:
            state_path = self.path / EMBEDDER_STATE_FILE
            state: dict[str, np.ndarray] = {}
            if state_path.is_file():
                try:
                    with np.load(state_path, allow_pickle=False) as archive:
                        state = {name: archive[name] for name in archive.files}
                except (OSError, ValueError) as error:
                    raise StoreError(f"{state_path}: damaged embedder state ({error})") from error
            self._embedder = load_embedder(self.meta.embedder, state)
            if self._embedder.dim != self.dim:
                raise StoreError(f"{self.path}: embedder gives dimension {self._embedder.dim}, "
                                 f"the store has {self.dim}")
        return self._embedder

    def embed(self, texts: Sequence[str | bytes]) -> np.ndarray:
        """Embed new texts the way the store's documents were embedded."""
        return self.embedder.embed(texts)

    def text_affinity(self, texts: Sequence[str | bytes]) -> np.ndarray:
        """float32 (n, K) affinity of new texts (e.g. synthetic data), as for stored rows."""
        tables = self._reader.tables
        return probe_affinity(
            self.embed(texts), np.asarray(tables.probe_embeddings),
            np.asarray(tables.probe_behaviors), len(self.behaviors),
            int(self.meta.affinity["top_k"]),
        )

    # ----------------------------------------------------------------------------- writes

    def _writable(self) -> AttributionTable:
        """The attribution tables opened for writing, taking the writer lock on first use."""
        if self._writer is not None:
            return self._writer
        lock_path = self.path / WRITER_LOCK_FILE
        handle = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            raise StoreError(
                f"{lock_path}: another handle or process is writing this store (one writer only)"
            ) from None
        try:
            table = AttributionTable(self.path, self.num_rows, len(self.behaviors), writable=True)
            stuck = table.stuck_rows()
            if len(stuck):
                if not self.repair_stuck_rows:
                    raise StoreError(
                        f"{self.path / 'attribution_seq.npy'}: {len(stuck)} rows were mid-update "
                        f"when the last writer stopped (first: row {int(stuck[0])}); open with "
                        "repair=True to keep them as they are"
                    )
                table.repair(stuck)
        except BaseException:
            fcntl.flock(handle, fcntl.LOCK_UN)
            os.close(handle)
            raise
        self._lock_handle = handle
        self._writer = table
        return table

    def record_attribution(self, rows: Sequence[int] | np.ndarray, scores: np.ndarray) -> None:
        """Add online scores (n, K) of ``rows`` to the running sums and counts.

        A NaN score means "this behavior was not scored for this row" (its cell stays as it
        was), so a trainer can score behaviors on different schedules. Writer process only.
        Each touched row is updated under its seqlock, so concurrent readers see either the row
        before or after this call, never a mix (see :mod:`curriculum.store.attribution`).
        Repeated rows in one call are all counted.
        """
        rows = self._reader.check_rows(rows)
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != (len(rows), len(self.behaviors)):
            raise StoreError(f"scores have shape {scores.shape}, expected "
                             f"({len(rows)}, {len(self.behaviors)}) (rows x behaviors)")
        if np.isinf(scores).any():
            raise StoreError("scores contain infinity; refusing to add them to the sums")
        if not len(rows):
            return
        with self._write_lock:
            self._writable().add(rows, scores)
            self._pending_measured.append(np.unique(rows[~np.isnan(scores).all(axis=1)]))

    def refresh_estimates(
        self,
        rows: Sequence[int] | np.ndarray | None = None,
        k: int = DEFAULT_ESTIMATE_NEIGHBORS,
        batch_rows: int = 65_536,
        show_progress: bool = False,
        faiss_threads: int | None = None,
        space: str = "embedding",
    ) -> int:
        """Recompute kNN estimates (see :mod:`curriculum.store.estimate`) and return how many
        rows got one.

        ``rows``: the rows to estimate (default: every row not measured for all behaviors).
        Rows measured since the last refresh join the neighbour index first. Runs in the writer
        process, in batches of ``batch_rows``; readers see each row's new estimates atomically.
        ``faiss_threads`` caps FAISS's OpenMP threads meanwhile (a trainer may want to leave
        cores to torch; on an oversubscribed machine one thread is often faster than several).
        ``space``: where neighbours are looked for, ``embedding`` or ``affinity`` (see
        :mod:`curriculum.store.profile`).
        """
        if space not in ESTIMATE_SPACES:
            raise StoreError(f"estimate space must be one of {', '.join(ESTIMATE_SPACES)}, "
                             f"got {space!r}")
        if space != self._estimate_space:
            self._estimate_space, self._estimator = space, None
        with self._write_lock, _faiss_threads(faiss_threads):
            table = self._writable()
            estimator = self._ensure_estimator(table)
            fallback = self._measured_mean(table)
            targets = (
                self._unmeasured_rows(table)
                if rows is None
                else np.unique(self._reader.check_rows(rows))
            )
            lookup = self._measured_lookup(table)
            embeddings = self._space_vectors()
            by_embedding = space == "embedding"
            coarse = self._coarse_lists() if by_embedding else None
            if by_embedding:
                self._maybe_tune(estimator, targets, k)
            with tqdm(total=len(targets), desc="estimate", unit="row",
                      disable=not show_progress) as bar:
                for start in range(0, len(targets), batch_rows):
                    batch = targets[start : start + batch_rows]
                    estimates = estimator.estimate(
                        embeddings[batch], k, lookup, fallback,
                        coarse_lists=None if coarse is None else np.asarray(coarse[batch]),
                    )
                    table.write_estimates(batch, estimates)
                    bar.update(len(batch))
            return len(targets)

    def _ensure_estimator(self, table: AttributionTable) -> KnnEstimator:
        """The neighbour index of measured rows, brought up to date."""
        if self._estimator is None:
            self._estimator = self._new_estimator()
            # First use in this session: index every row measured so far.
            self._pending_measured = [self._measured_any_rows(table)]
            self._indexed_rows = []
            self._tuned_at_rows = 0
        if self._pending_measured:
            pending = np.unique(np.concatenate(self._pending_measured))
            self._pending_measured = []
            if self._indexed_rows:
                pending = np.setdiff1d(pending, np.concatenate(self._indexed_rows))
            self._estimator.add(pending, self._space_vectors()[pending])
            self._indexed_rows = [np.concatenate([*self._indexed_rows, pending])]
        return self._estimator

    def _maybe_tune(self, estimator: KnnEstimator, targets: np.ndarray, k: int) -> None:
        """Tune the IVF estimator's nprobe on this store's data (recall@k >= 0.9 against exact
        search on 256 of the rows to estimate), once the measured set is large enough for IVF
        to matter and again each time it doubles."""
        nlist = nlist_of(estimator.factory)
        indexed = estimator.num_indexed
        if not nlist or indexed < 20 * nlist or not len(targets) or indexed < 2 * self._tuned_at_rows:
            return
        faiss = faiss_module()
        embeddings = self._reader.tables.embeddings
        sample = np.sort(np.random.default_rng(0).choice(targets, min(256, len(targets)), False))
        queries = np.ascontiguousarray(embeddings[sample], dtype=np.float32)
        measured = np.concatenate(self._indexed_rows)
        _, positions = faiss.knn(queries, np.ascontiguousarray(embeddings[measured]), k,
                                 metric=faiss.METRIC_INNER_PRODUCT)
        estimator.tune_nprobe(queries, measured[positions], k)
        self._tuned_at_rows = indexed

    def _coarse_lists(self) -> np.ndarray | None:
        """Each row's nearest IVF lists of the estimator (kept when the estimator is IVF)."""
        if COARSE_LISTS_FILE not in self.meta.files:
            return None
        path = self.path / COARSE_LISTS_FILE
        try:
            table = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as error:
            raise StoreError(f"{path}: damaged table ({error})") from error
        if table.dtype != np.int32 or table.ndim != 2 or table.shape[0] != self.num_rows:
            raise StoreError(f"{path}: table is {table.dtype}{table.shape}, the store expects "
                             f"int32 ({self.num_rows}, probes)")
        return table

    def _space_vectors(self) -> Any:
        """The vectors neighbours are searched among (rows indexable like the embeddings)."""
        if self._estimate_space == "embedding":
            return self._reader.tables.embeddings
        if self._profiles is None:
            self._profiles = affinity_profiles(self.affinity(np.arange(self.num_rows)))
        return self._profiles

    def _new_estimator(self) -> KnnEstimator:
        if self._estimate_space != "embedding":
            return KnnEstimator(len(self.behaviors), "Flat")
        factory = self.meta.index.get("estimator_factory", "Flat")
        nprobe = int(self.meta.index.get("estimator_nprobe", 0))
        if factory == "Flat":
            return KnnEstimator(self.dim, "Flat")
        template = load_index(self.path / ESTIMATOR_FILE, self.dim, 0, nprobe)
        return KnnEstimator.from_template(template, factory, nprobe)

    def _measured_any_rows(self, table: AttributionTable, block: int = 1 << 20) -> np.ndarray:
        found = [
            np.flatnonzero(np.asarray(table.count[start : start + block]).any(axis=1)) + start
            for start in range(0, self.num_rows, block)
        ]
        return np.concatenate(found) if found else np.zeros(0, np.int64)

    def _unmeasured_rows(self, table: AttributionTable, block: int = 1 << 20) -> np.ndarray:
        found = [
            np.flatnonzero(~(np.asarray(table.count[start : start + block]) > 0).all(axis=1))
            + start
            for start in range(0, self.num_rows, block)
        ]
        return np.concatenate(found) if found else np.zeros(0, np.int64)

    def _measured_mean(self, table: AttributionTable, block: int = 1 << 20) -> np.ndarray:
        """Per behavior, the mean over measured rows of their measured means (0.0 if none)."""
        totals = np.zeros(len(self.behaviors))
        counts = np.zeros(len(self.behaviors))
        for start in range(0, self.num_rows, block):
            count = np.asarray(table.count[start : start + block])
            measured = count > 0
            means = np.divide(table.sum[start : start + block], count,
                              out=np.zeros(count.shape), where=measured)
            totals += means.sum(axis=0)
            counts += measured.sum(axis=0)
        return np.divide(totals, counts, out=np.zeros_like(totals), where=counts > 0)

    @staticmethod
    def _measured_lookup(table: AttributionTable) -> Any:
        def lookup(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            count = table.count[rows]
            measured = count > 0
            means = np.divide(table.sum[rows], count, out=np.zeros(count.shape), where=measured)
            return means, measured

        return lookup

    def flush(self) -> None:
        """Write the attribution tables' dirty pages to disk (readers see updates before)."""
        if self._writer is not None:
            self._writer.flush()

    def snapshot_attribution(self, directory: str | Path) -> None:
        """Save a consistent copy of the attribution tables (for a checkpoint)."""
        table = self._writer or self._reader.tables.attribution
        table.snapshot(Path(directory))

    def restore_attribution(self, directory: str | Path) -> None:
        """Replace the attribution tables with a :meth:`snapshot_attribution` copy."""
        with self._write_lock:
            self._writable().restore(Path(directory))
            self._estimator = None  # the measured set changed: rebuild on the next refresh
