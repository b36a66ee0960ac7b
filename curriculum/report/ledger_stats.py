"""The ledger over steps, streamed: what the stream emitted, deferred, released, dropped and
skipped per step bin, the defer spool's size, and loss weights per stage.

Records are read a chunk at a time with plain reads (no memory map, so resident memory stays at
one chunk however long the ledger), and every count is a ``bincount`` over the chunk: a
ten-million-event ledger takes a few seconds and a few tens of MiB.

Stages follow :func:`curriculum.ledger.summarize_ledger`: the stage of an event is the last
stage ``metrics.csv`` records at or before its step (``(unknown)`` before the first), so the
counts per (stage, behavior) here equal ``curriculum ledger RUN --summary``'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from curriculum.ledger import RECORD_DTYPE, Fate
from curriculum.ledger.reader import RankFile, rank_files
from curriculum.ledger.summary import UNKNOWN_STAGE, read_stage_history

#: Records read per chunk (33 MiB).
CHUNK_RECORDS = 1 << 20
_CODES = 8


@dataclass
class LedgerStats:
    """Counts of one run's ledger (see the module docstring)."""

    num_records: int
    bin_edges: np.ndarray
    """int64 (bins + 1,): bin ``i`` holds the events of steps ``[edges[i], edges[i+1])``."""
    behaviors: list[str]
    """Columns of :attr:`emitted` and of the per-stage counts."""
    emitted: np.ndarray
    """int64 (bins, behaviors): documents emitted per bin."""
    deferred: np.ndarray
    """int64 (bins,): DEFER events per bin."""
    released: np.ndarray
    """int64 (bins,): RELEASE events per bin."""
    skipped: np.ndarray
    """int64 (bins,): SKIP events per bin."""
    dropped: dict[str, np.ndarray]
    """``{reason: int64 (bins,)}``: DROP events per bin by reason."""
    skip_reasons: dict[str, int]
    """SKIP events by reason."""
    stages: list[str]
    """Stage labels (as in ``metrics.csv``: '0', '1', ...; ``(unknown)``, or 'all' without a
    stage column)."""
    cells: np.ndarray
    """int64 (stages, behaviors, 8): events per (stage, behavior, event code)."""
    emitted_weight: np.ndarray
    """float64 (stages, behaviors): sum of the emitted documents' loss weights."""
    weights: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    """``{stage: (distinct loss weights, emitted documents with that weight)}``."""

    @property
    def spool_size(self) -> np.ndarray:
        """int64 (bins,): documents waiting in the defer spool at the end of each bin."""
        return np.cumsum(self.deferred - self.released)

    def emitted_by_behavior(self) -> dict[str, int]:
        """Documents emitted over the whole run, per behavior."""
        totals = self.cells[:, :, Fate.EMIT].sum(axis=0)
        return {b: int(n) for b, n in zip(self.behaviors, totals.tolist(), strict=True)}


class _StageOf:
    """Stage code of a step, vectorised (the same rule as ``summarize_ledger``)."""

    def __init__(self, metrics_csv: Path) -> None:
        history = read_stage_history(metrics_csv) if metrics_csv.is_file() else None
        if history is None or not len(history[0]):
            self.steps, self.names = None, ["all"] if history is None else [UNKNOWN_STAGE]
            self.codes = np.zeros(1, np.int64)
            return
        self.names = [UNKNOWN_STAGE, *dict.fromkeys(history[1])]
        self.codes = np.array([0] + [self.names.index(s) for s in history[1]], np.int64)
        self.steps = history[0]

    def __call__(self, steps: np.ndarray) -> np.ndarray:
        if self.steps is None:
            return np.zeros(len(steps), np.int64)
        return self.codes[np.searchsorted(self.steps, steps, side="right")]


def _last_step(files: list[RankFile]) -> int:
    """The step of each file's last record (files are in step order; ``--check`` says if not)."""
    last = 0
    for file in files:
        if file.num_records:
            with file.path.open("rb") as handle:
                handle.seek((file.num_records - 1) * RECORD_DTYPE.itemsize)
                record = np.fromfile(handle, dtype=RECORD_DTYPE, count=1)
            last = max(last, int(record["step"][0]))
    return last


def step_bins(last_step: int, num_bins: int) -> np.ndarray:
    """Integer bin edges covering steps ``0 .. last_step``, at most ``num_bins`` bins."""
    edges = np.unique(np.linspace(0, last_step + 1, min(num_bins, last_step + 1) + 1).round()
                      .astype(np.int64))
    return edges if len(edges) > 1 else np.array([0, 1], np.int64)


class _Accumulator:
    """Running counts over chunks."""

    def __init__(self, edges: np.ndarray, num_behaviors: int, num_stages: int) -> None:
        bins = len(edges) - 1
        self.edges, self.bins, self.k, self.s = edges, bins, num_behaviors, num_stages
        self.emitted = np.zeros(bins * num_behaviors, np.int64)
        self.per_event = np.zeros(bins * _CODES, np.int64)
        self.cells = np.zeros(num_stages * num_behaviors * _CODES, np.int64)
        self.emitted_weight = np.zeros(num_stages * num_behaviors, np.float64)
        self.dropped: dict[str, np.ndarray] = {}
        self.skip_reasons: dict[str, int] = {}
        self.weights: dict[int, dict[float, int]] = {}

    def add(self, chunk: np.ndarray, behavior: np.ndarray, stage: np.ndarray,
            reason_text: list[str]) -> None:
        event, step = chunk["event"], chunk["step"]
        counted = (event >= Fate.EMIT) & (event <= Fate.SKIP)
        event, step, behavior, stage = event[counted], step[counted], behavior[counted], stage[counted]
        weight, reason = chunk["weight"][counted], chunk["reason"][counted]
        b = np.clip(np.searchsorted(self.edges, step, side="right") - 1, 0, self.bins - 1)
        emit = event == Fate.EMIT
        self.emitted += np.bincount(b[emit] * self.k + behavior[emit], minlength=self.emitted.size)
        self.per_event += np.bincount(b * _CODES + event, minlength=self.per_event.size)
        pair = stage * self.k + behavior
        self.cells += np.bincount(pair * _CODES + event, minlength=self.cells.size)
        self.emitted_weight += np.bincount(pair[emit], weights=weight[emit],
                                           minlength=self.emitted_weight.size)
        for fate, where in ((Fate.DROP, event == Fate.DROP), (Fate.SKIP, event == Fate.SKIP)):
            if not where.any():
                continue
            codes = reason[where].astype(np.int64)
            keys, counts = np.unique(codes * self.bins + b[where], return_counts=True)
            for key, count in zip(keys.tolist(), counts.tolist(), strict=True):
                text = reason_text[key // self.bins] if key // self.bins < len(reason_text) else ""
                text = text or "(no reason)"
                if fate == Fate.DROP:
                    self.dropped.setdefault(text, np.zeros(self.bins, np.int64))[key % self.bins] += count
                else:
                    self.skip_reasons[text] = self.skip_reasons.get(text, 0) + count
        # Loss weights are few distinct values in practice; count each (stage, weight) pair.
        bits = weight[emit].view(np.uint32).astype(np.uint64)
        keys, counts = np.unique((stage[emit].astype(np.uint64) << np.uint64(32)) | bits,
                                 return_counts=True)
        values = (keys & np.uint64(0xFFFFFFFF)).astype(np.uint32).view(np.float32)
        for key, value, count in zip((keys >> np.uint64(32)).tolist(), values.tolist(),
                                     counts.tolist(), strict=True):
            table = self.weights.setdefault(int(key), {})
            table[value] = table.get(value, 0) + count


def ledger_stats(run_dir: str | Path, row_behavior: np.ndarray | None, behaviors: list[str],
                 num_bins: int = 120, show_progress: bool = False) -> LedgerStats:
    """Stream a run's ledger into :class:`LedgerStats`.

    ``row_behavior`` gives each row's behavior as an index into ``behaviors`` (length num_rows +
    1; the last entry is used for rows outside the table); None counts every row as
    ``behaviors[0]``.
    """
    run_dir = Path(run_dir)
    files = rank_files(run_dir)
    stage_of = _StageOf(run_dir / "metrics.csv")
    edges = step_bins(_last_step(files), num_bins)
    totals = _Accumulator(edges, len(behaviors), len(stage_of.names))
    total_records = sum(file.num_records for file in files)
    outside = len(row_behavior) - 1 if row_behavior is not None else 0
    with tqdm(total=total_records, desc="read ledger", unit="rec", unit_scale=True,
              disable=not show_progress, leave=False) as bar:
        for file in files:
            reason_text = [""] * (max(file.reasons, default=0) + 1)
            for code, text in file.reasons.items():
                reason_text[code] = text
            with file.path.open("rb") as handle:
                for start in range(0, file.num_records, CHUNK_RECORDS):
                    # Whole records only: a torn tail after num_records is left unread.
                    count = min(CHUNK_RECORDS, file.num_records - start)
                    chunk = np.fromfile(handle, dtype=RECORD_DTYPE, count=count)
                    row = chunk["row"]
                    if row_behavior is None:
                        behavior = np.zeros(len(chunk), np.int64)
                    else:
                        inside = (row >= 0) & (row < outside)
                        behavior = row_behavior[np.where(inside, row, outside)].astype(np.int64)
                    totals.add(chunk, behavior, stage_of(chunk["step"]), reason_text)
                    bar.update(len(chunk))
    per_event = totals.per_event.reshape(-1, _CODES)
    return LedgerStats(
        num_records=total_records, bin_edges=edges, behaviors=list(behaviors),
        emitted=totals.emitted.reshape(-1, len(behaviors)), deferred=per_event[:, Fate.DEFER],
        released=per_event[:, Fate.RELEASE], skipped=per_event[:, Fate.SKIP],
        dropped=dict(sorted(totals.dropped.items(), key=lambda item: -int(item[1].sum()))),
        skip_reasons=totals.skip_reasons, stages=stage_of.names,
        cells=totals.cells.reshape(len(stage_of.names), len(behaviors), _CODES),
        emitted_weight=totals.emitted_weight.reshape(len(stage_of.names), len(behaviors)),
        weights={stage_of.names[s]: (np.array(sorted(t), np.float64),
                                     np.array([t[v] for v in sorted(t)], np.int64))
                 for s, t in sorted(totals.weights.items())})
