"""The attribution table: running sum and count of online scores per (row, behavior), plus the
kNN estimates for unmeasured cells, shared between one writer and many readers without copies.

Four memory-mapped files, all rows x behaviors except the sequence numbers:

- ``attribution_sum.npy`` (float64) and ``attribution_count.npy`` (uint32): what the trainer
  measured; the mean is ``sum / count`` where ``count > 0``;
- ``attribution_estimate.npy`` (float32): the estimate used where nothing was measured (0.0, i.e.
  "no known effect", until the writer's first :meth:`~curriculum.store.BehaviorStore.refresh_estimates`);
- ``attribution_seq.npy`` (uint64, one per row): a per-row **seqlock**.

Why a seqlock: a reader must never combine the sum of one update with the count of another, or
half of a row's behaviors before an update with the other half after it (a *torn row*). The
writer makes a row's sequence number odd, writes the row, and makes it even again; a reader reads
the sequence numbers, then the row, then the sequence numbers again, and keeps only rows whose
number was even and unchanged, re-reading the others. Readers never block the writer (a stalled
DataLoader worker can never stall training) and never take a lock.

Memory ordering: this relies on stores becoming visible in program order and loads not being
reordered with other loads, which x86-64 (total store order) guarantees and the numpy calls here
keep (each step is a separate call). Weakly ordered CPUs (aarch64) give no such guarantee without
fences, which Python cannot issue; there a reader could, rarely, see a torn row.

A writer that dies between the two increments leaves an odd sequence number: readers give up on
such a row after a bounded number of retries with a :class:`StoreError`, and the next writer
refuses to open the table unless asked to repair it (the row may hold a partly added batch).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from curriculum.store.errors import StoreError
from curriculum.store.tables import create_table, open_table, save_atomic

SUM_FILE = "attribution_sum.npy"
COUNT_FILE = "attribution_count.npy"
ESTIMATE_FILE = "attribution_estimate.npy"
SEQ_FILE = "attribution_seq.npy"
FILES = (SUM_FILE, COUNT_FILE, ESTIMATE_FILE, SEQ_FILE)
#: What a snapshot holds (the sequence numbers belong to the live tables only).
SNAPSHOT_FILES = (SUM_FILE, COUNT_FILE, ESTIMATE_FILE)

#: Consistent-read attempts before a row stuck mid-update is reported (about a second in all).
_READ_ATTEMPTS = 2000


def create_attribution_files(directory: Path, num_rows: int, num_behaviors: int) -> None:
    """Zero-filled attribution tables for a new store."""
    shape = (num_rows, num_behaviors)
    for name, dtype, table_shape in (
        (SUM_FILE, np.float64, shape),
        (COUNT_FILE, np.uint32, shape),
        (ESTIMATE_FILE, np.float32, shape),
        (SEQ_FILE, np.uint64, (num_rows,)),
    ):
        table = create_table(Path(directory) / name, dtype, table_shape)
        table.flush()
        del table


class AttributionTable:
    """Memory-mapped attribution tables of one store; read-only unless ``writable``.

    Only one process may open it writable at a time (the store enforces it with a file lock);
    readers in any number of processes see the writer's updates as they land.
    """

    def __init__(
        self, directory: Path, num_rows: int, num_behaviors: int, writable: bool = False
    ) -> None:
        self.directory = Path(directory)
        self.num_rows = num_rows
        self.num_behaviors = num_behaviors
        self.writable = writable
        shape = (num_rows, num_behaviors)
        self.sum = open_table(self.directory / SUM_FILE, np.float64, shape, writable)
        self.count = open_table(self.directory / COUNT_FILE, np.uint32, shape, writable)
        self.estimate = open_table(self.directory / ESTIMATE_FILE, np.float32, shape, writable)
        self.seq = open_table(self.directory / SEQ_FILE, np.uint64, (num_rows,), writable)

    # ----------------------------------------------------------------------------- readers

    def read(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A consistent snapshot of ``rows``: (sum float64, count uint32, estimate float32)."""
        rows = np.asarray(rows, dtype=np.int64)
        total = count = estimate = None
        pending = np.arange(len(rows))
        subset = rows
        for attempt in range(_READ_ATTEMPTS):
            # Sequence numbers first, then the data, then the sequence numbers again.
            before = self.seq[subset]
            total_read = self.sum[subset]
            count_read = self.count[subset]
            estimate_read = self.estimate[subset]
            after = self.seq[subset]
            stable = (before == after) & (before % 2 == 0)
            if total is None:
                total, count, estimate = total_read, count_read, estimate_read
                if stable.all():
                    return total, count, estimate
            else:
                total[pending[stable]] = total_read[stable]
                count[pending[stable]] = count_read[stable]
                estimate[pending[stable]] = estimate_read[stable]
            pending = pending[~stable]
            if not len(pending):
                return total, count, estimate
            subset = rows[pending]
            if attempt > 10:
                time.sleep(0.0005)
        raise StoreError(
            f"{self.directory / SEQ_FILE}: {len(pending)} rows stay mid-update (first: row "
            f"{int(rows[pending[0]])}); the writer stopped while writing them"
        )

    def attribution(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(values float32 (n, K), measured bool (n, K)): the measured mean where measured,
        the estimate elsewhere."""
        total, count, estimate = self.read(rows)
        measured = count > 0
        mean = np.divide(total, count, out=np.zeros_like(total), where=measured)
        return np.where(measured, mean, estimate).astype(np.float32), measured

    def measured(self, rows: np.ndarray) -> np.ndarray:
        """bool (n, K): which cells hold at least one measurement (a single load per cell is
        atomic, so no retry loop is needed)."""
        return self.count[np.asarray(rows, dtype=np.int64)] > 0

    # ----------------------------------------------------------------------------- writer

    def _check_writable(self) -> None:
        if not self.writable:
            raise StoreError(f"{self.directory}: attribution table is open read-only")

    def stuck_rows(self) -> np.ndarray:
        """Rows whose sequence number is odd (a writer died while writing them)."""
        stuck: list[np.ndarray] = []
        for start in range(0, self.num_rows, 1 << 22):
            block = self.seq[start : start + (1 << 22)]
            stuck.append(np.flatnonzero(block % 2 == 1) + start)
        return np.concatenate(stuck) if stuck else np.zeros(0, np.int64)

    def repair(self, rows: np.ndarray) -> None:
        """Make stuck rows readable again, keeping whatever they hold."""
        self._check_writable()
        self.seq[np.asarray(rows, dtype=np.int64)] += np.uint64(1)

    def add(self, rows: np.ndarray, scores: np.ndarray) -> None:
        """Add ``scores`` (n, K) to the running sums of ``rows``, counting each score once.

        A NaN score means "not scored for this behavior" and changes nothing in its cell.
        Repeated rows are summed first, so each row is written once under its seqlock.
        """
        self._check_writable()
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            return
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        starts = np.flatnonzero(np.concatenate([[True], sorted_rows[1:] != sorted_rows[:-1]]))
        unique = sorted_rows[starts]
        ordered = np.asarray(scores, dtype=np.float64)[order]
        scored = ~np.isnan(ordered)
        totals = np.add.reduceat(np.where(scored, ordered, 0.0), starts, axis=0)
        counts = np.add.reduceat(scored.astype(np.uint32), starts, axis=0)
        one = np.uint64(1)
        self.seq[unique] += one
        self.sum[unique] += totals
        self.count[unique] += counts
        self.seq[unique] += one

    def write_estimates(self, rows: np.ndarray, estimates: np.ndarray) -> None:
        """Replace the estimates of ``rows`` (unique rows, (n, K))."""
        self._check_writable()
        one = np.uint64(1)
        self.seq[rows] += one
        self.estimate[rows] = estimates
        self.seq[rows] += one

    def flush(self) -> None:
        """Write dirty pages to disk (``msync``); updates are visible to readers before this."""
        if self.writable:
            for table in (self.sum, self.count, self.estimate, self.seq):
                if isinstance(table, np.memmap):
                    table.flush()

    # ----------------------------------------------------------------------------- snapshots

    def snapshot(self, directory: Path, block_rows: int = 1 << 20) -> None:
        """Copy a consistent state of sum, count and estimate into ``directory`` (atomic per file).

        Consistent per row: each block is read through the seqlock. Meant for checkpoints, so
        that a resumed run starts from the attribution state of its checkpoint.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        parts: dict[str, list[np.ndarray]] = {name: [] for name in SNAPSHOT_FILES}
        for start in range(0, self.num_rows, block_rows):
            rows = np.arange(start, min(start + block_rows, self.num_rows))
            for name, block in zip(SNAPSHOT_FILES, self.read(rows), strict=True):
                parts[name].append(block)
        for name, dtype, shape in self._layout():
            joined = np.concatenate(parts[name]) if parts[name] else np.zeros(shape, dtype)
            save_atomic(directory / name, joined.astype(dtype, copy=False))

    def restore(self, directory: Path) -> None:
        """Load a :meth:`snapshot` into the live tables (under the seqlock, block by block)."""
        self._check_writable()
        directory = Path(directory)
        tables = {
            name: open_table(directory / name, dtype, shape) for name, dtype, shape in self._layout()
        }
        one = np.uint64(1)
        for start in range(0, self.num_rows, 1 << 20):
            block = slice(start, min(start + (1 << 20), self.num_rows))
            self.seq[block] += one
            self.sum[block] = tables[SUM_FILE][block]
            self.count[block] = tables[COUNT_FILE][block]
            self.estimate[block] = tables[ESTIMATE_FILE][block]
            self.seq[block] += one

    def _layout(self) -> Sequence[tuple[str, type, tuple[int, ...]]]:
        shape = (self.num_rows, self.num_behaviors)
        return (
            (SUM_FILE, np.float64, shape),
            (COUNT_FILE, np.uint32, shape),
            (ESTIMATE_FILE, np.float32, shape),
        )
