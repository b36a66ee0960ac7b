"""The behavior store, read in blocks: measured and estimated attribution per behavior, how much
of the corpus was measured, the documents that pushed each behavior most (and against it), and
each row's behavior of highest affinity.

Sign convention (In-Run Data Shapley, first order): a document's score for behavior ``b`` is the
sum over the steps it was trained on of ``-lr * grad L_b . grad l(doc)``, so a positive score
means training on it lowered the probe loss of ``b`` (it taught ``b``), a negative one raised it.
The store keeps the sum and the count of these per-step scores; documents are ranked by the sum
(their whole effect over the run), and the mean per measurement is shown beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from curriculum.store import StoreReader

#: Rows read per block (tables of 1 M rows x K behaviors are read in four blocks).
BLOCK_ROWS = 1 << 18
HISTOGRAM_BINS = 60


@dataclass
class RankedDocument:
    """One measured document of a top list."""

    row: int
    behavior: str
    score_sum: float
    """Summed attribution over its measurements (the ranking key)."""
    score_mean: float
    count: int
    """Measurements (scored steps) behind the sum."""
    key: str = ""
    shard: str = ""
    text: str = ""


@dataclass
class StoreStats:
    """What the report shows of one store."""

    path: Path
    behaviors: list[str]
    num_rows: int
    measured_rows: int
    """Rows measured for at least one behavior."""
    measured_cells: dict[str, int]
    """Rows measured, per behavior."""
    estimated_cells: dict[str, int]
    """Unmeasured rows with a nonzero kNN estimate, per behavior."""
    histogram_edges: dict[str, np.ndarray] = field(default_factory=dict)
    measured_histogram: dict[str, np.ndarray] = field(default_factory=dict)
    """Counts of measured mean scores per bin (values outside the edges go to the end bins)."""
    estimated_histogram: dict[str, np.ndarray] = field(default_factory=dict)
    top: dict[str, list[RankedDocument]] = field(default_factory=dict)
    """Per behavior: the documents with the largest positive summed score."""
    bottom: dict[str, list[RankedDocument]] = field(default_factory=dict)
    """Per behavior: the documents with the most negative summed score."""
    highest_affinity: np.ndarray | None = None
    """int16 (num_rows,): column of the behavior of highest affinity per row."""

    @property
    def measured_fraction(self) -> float:
        """Fraction of the corpus measured for some behavior."""
        return self.measured_rows / self.num_rows if self.num_rows else 0.0


def _ranked(rows: np.ndarray, sums: np.ndarray, counts: np.ndarray, behavior: str, top_n: int,
            largest: bool) -> list[RankedDocument]:
    keep = sums > 0 if largest else sums < 0
    rows, sums, counts = rows[keep], sums[keep], counts[keep]
    if not len(rows):
        return []
    order = np.argsort(-sums if largest else sums, kind="stable")[:top_n]
    return [RankedDocument(int(rows[i]), behavior, float(sums[i]), float(sums[i] / counts[i]),
                           int(counts[i])) for i in order.tolist()]


def _histograms(measured: np.ndarray, estimated: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                      np.ndarray]:
    both = np.concatenate([measured, estimated])
    if not len(both):
        edges = np.linspace(-1.0, 1.0, HISTOGRAM_BINS + 1)
    else:
        # A few extreme documents would squeeze everything else into one bin: the range is the
        # 0.5-99.5 percentiles, and what lies outside is counted in the end bins.
        low, high = np.percentile(both, [0.5, 99.5])
        if not high > low:
            low, high = float(both.min()) - 1e-12, float(both.max()) + 1e-12
        edges = np.linspace(low, high, HISTOGRAM_BINS + 1)

    def count(values: np.ndarray) -> np.ndarray:
        return np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)[0]

    return edges, count(measured), count(estimated)


def store_stats(store_path: str | Path, top_n: int = 8, want_affinity: bool = True) -> StoreStats:
    """Read a store's tables block by block into :class:`StoreStats` (no FAISS, no writer lock)."""
    reader = StoreReader(store_path).open()
    behaviors, num_rows = list(reader.behaviors), reader.num_rows
    k = len(behaviors)
    table = reader.tables.attribution
    measured_rows = 0
    kept: list[list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in range(k)]
    estimates: list[list[np.ndarray]] = [[] for _ in range(k)]
    highest = np.zeros(num_rows, np.int16) if want_affinity else None
    for start in range(0, num_rows, BLOCK_ROWS):
        rows = np.arange(start, min(start + BLOCK_ROWS, num_rows), dtype=np.int64)
        total, count, estimate = table.read(rows)
        measured = count > 0
        measured_rows += int(measured.any(axis=1).sum())
        for column in range(k):
            where = measured[:, column]
            sums, counts = total[where, column], count[where, column]
            kept[column].append((rows[where].astype(np.int64), sums, counts.astype(np.int64),
                                 (sums / counts).astype(np.float32)))
            unmeasured = estimate[~where, column]
            estimates[column].append(unmeasured[unmeasured != 0])
        if highest is not None:
            highest[start:start + len(rows)] = np.argmax(reader.tables.affinity[start:start + len(rows)],
                                                         axis=1)
    stats = StoreStats(Path(store_path).resolve(), behaviors, num_rows, measured_rows, {}, {},
                       highest_affinity=highest)
    for column, behavior in enumerate(behaviors):
        rows, sums, counts, means = (np.concatenate([part[i] for part in kept[column]])
                                     for i in range(4))
        estimated = np.concatenate(estimates[column])
        stats.measured_cells[behavior] = len(rows)
        stats.estimated_cells[behavior] = len(estimated)
        edges, measured_counts, estimated_counts = _histograms(means, estimated)
        stats.histogram_edges[behavior] = edges
        stats.measured_histogram[behavior] = measured_counts
        stats.estimated_histogram[behavior] = estimated_counts
        stats.top[behavior] = _ranked(rows, sums, counts, behavior, top_n, largest=True)
        stats.bottom[behavior] = _ranked(rows, sums, counts, behavior, top_n, largest=False)
    return stats
