"""Counting the ledger's events by curriculum stage and document behavior, and by reason."""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from curriculum.ledger.errors import LedgerError
from curriculum.ledger.reader import load_ledger
from curriculum.ledger.records import Fate

UNKNOWN_STAGE = "(unknown)"
"""Stage of events consumed before the first step ``metrics.csv`` records a stage for."""
UNLABELLED = "unlabelled"
"""Behavior of rows a labels file does not list."""
_COUNTED = (Fate.EMIT, Fate.DEFER, Fate.RELEASE, Fate.DROP, Fate.SKIP)


@dataclass
class SummaryRow:
    """Event counts of one (stage, behavior) pair."""

    stage: str
    behavior: str
    emitted: int = 0
    deferred: int = 0
    released: int = 0
    dropped: int = 0
    skipped: int = 0
    emitted_weight: float = 0.0
    """Sum of the loss weights of the emitted documents."""


@dataclass
class LedgerSummary:
    """The result of :func:`summarize_ledger`."""

    rows: list[SummaryRow]
    """By stage (in order of first appearance in training), then behavior."""
    reasons: list[tuple[str, str, int]]
    """``(event name, reason, count)`` of DROP and SKIP events, most frequent first."""
    num_records: int
    epoch_ends: dict[int, int] = field(default_factory=dict)
    """EPOCH_END records per epoch (one per reader that finished it)."""

    def format(self) -> str:
        """The summary as a printable table."""
        header = ("stage", "behavior", "emitted", "deferred", "released", "dropped", "skipped",
                  "mean weight")
        table = [header] + [
            (row.stage, row.behavior, f"{row.emitted:,}", f"{row.deferred:,}", f"{row.released:,}",
             f"{row.dropped:,}", f"{row.skipped:,}",
             f"{row.emitted_weight / row.emitted:.3f}" if row.emitted else "-")
            for row in self.rows]
        widths = [max(len(line[column]) for line in table) for column in range(len(header))]
        lines = [f"{self.num_records:,} ledger records; events by stage and behavior:"]
        for line in table:
            cells = [cell.ljust(width) if column < 2 else cell.rjust(width)
                     for column, (cell, width) in enumerate(zip(line, widths, strict=True))]
            lines.append("  " + "  ".join(cells))
        lines.append("drop and skip reasons:" if self.reasons else "drop and skip reasons: none")
        lines.extend(f"  {name.lower():<4}  {count:>10,}  {reason}"
                     for name, reason, count in self.reasons)
        if self.epoch_ends:
            lines.append("readers done per epoch: " + ", ".join(
                f"epoch {epoch}: {count}" for epoch, count in sorted(self.epoch_ends.items())))
        return "\n".join(lines)


def _stage_label(value: str) -> str:
    try:
        number = float(value)
    except ValueError:
        return value
    return str(int(number)) if number.is_integer() else value


def read_stage_history(metrics_csv: str | Path) -> tuple[np.ndarray, list[str]] | None:
    """``(steps, stages)`` from the rows of a ``metrics.csv`` that have a ``stage`` value, sorted by
    step; None when the file has no ``stage`` column. Numeric stages read as '0', '1', ..."""
    with Path(metrics_csv).open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"step", "stage"} <= set(reader.fieldnames):
            return None
        pairs = []
        for record in reader:
            if record["stage"] not in ("", None) and record["step"] not in ("", None):
                pairs.append((int(float(record["step"])), _stage_label(record["stage"])))
    pairs.sort(key=lambda pair: pair[0])
    return np.array([step for step, _ in pairs], dtype=np.int64), [stage for _, stage in pairs]


def read_behavior_labels(labels_csv: str | Path) -> dict[int, str]:
    """``{row: behavior}`` from a ``labels.csv`` with ``row`` and ``behavior`` columns."""
    with Path(labels_csv).open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"row", "behavior"} <= set(reader.fieldnames):
            raise LedgerError(f"{labels_csv}: expected a CSV with 'row' and 'behavior' columns")
        try:
            return {int(record["row"]): record["behavior"] for record in reader}
        except (TypeError, ValueError):
            raise LedgerError(f"{labels_csv}: a 'row' value is not an integer") from None


def _codes(values: np.ndarray, label_of: Callable[[np.ndarray], list[str]]) -> tuple[np.ndarray,
                                                                                   list[str]]:
    """Label codes per value and the labels, computing each distinct value's label once."""
    distinct, inverse = np.unique(values, return_inverse=True)
    labels = label_of(distinct)
    names: dict[str, int] = {}
    per_distinct = np.fromiter((names.setdefault(label, len(names)) for label in labels),
                               dtype=np.int64, count=len(labels))
    return per_distinct[inverse.reshape(-1)], list(names)


def _drop_unused(codes: np.ndarray, names: list[str]) -> tuple[np.ndarray, list[str]]:
    """Renumber ``codes`` to the names actually used."""
    used = np.flatnonzero(np.bincount(codes, minlength=len(names)))
    renumber = np.zeros(len(names), np.int64)
    renumber[used] = np.arange(len(used))
    return renumber[codes], [names[i] for i in used.tolist()]


def summarize_ledger(run_dir: str | Path, stage_of_step: Callable[[int], str] | None = None,
                     behavior_of_row: Callable[[int], str] | str | Path | None = None
                     ) -> LedgerSummary:
    """Count events by stage and behavior, and DROP/SKIP events by reason.

    The stage of an event is ``stage_of_step(step)`` if given, else the last stage recorded at or
    before its step in ``RUN/metrics.csv`` (``UNKNOWN_STAGE`` before the first), else 'all'. The
    behavior of a row is ``behavior_of_row(row)`` if callable, the label in a ``labels.csv``
    (``key,row,behavior``) if a path, else 'all'.
    """
    records, reasons = load_ledger(run_dir)
    event = np.ascontiguousarray(records["event"])
    counted = (event >= Fate.EMIT) & (event <= Fate.SKIP)
    step = np.ascontiguousarray(records["step"])[counted]
    row = np.ascontiguousarray(records["row"])[counted]

    if stage_of_step is not None:
        stage_code, stage_names = _codes(step, lambda steps: [str(stage_of_step(int(s)))
                                                              for s in steps])
    else:
        metrics = Path(run_dir) / "metrics.csv"
        history = read_stage_history(metrics) if metrics.is_file() else None
        if history is None:
            stage_code, stage_names = np.zeros(len(step), np.int64), ["all"]
        else:  # vectorised: the index of the last history entry at or before each step
            names = [UNKNOWN_STAGE, *dict.fromkeys(history[1])]
            code_of_entry = np.array([0] + [names.index(stage) for stage in history[1]], np.int64)
            stage_code = code_of_entry[np.searchsorted(history[0], step, side="right")]
            stage_code, stage_names = _drop_unused(stage_code, names)

    if callable(behavior_of_row):
        behavior_code, behavior_names = _codes(row, lambda rows: [str(behavior_of_row(int(r)))
                                                                  for r in rows])
    elif behavior_of_row is None or str(behavior_of_row) == "all":
        behavior_code, behavior_names = np.zeros(len(row), np.int64), ["all"]
    else:
        labels = read_behavior_labels(behavior_of_row)
        names = [UNLABELLED, *sorted(set(labels.values()))]
        code_of = {name: code for code, name in enumerate(names)}
        lookup = np.zeros(max(labels, default=-1) + 2, np.int64)  # the last entry: unlabelled
        for labelled_row, behavior in labels.items():
            if labelled_row >= 0:
                lookup[labelled_row] = code_of[behavior]
        codes = lookup[np.where((row >= 0) & (row < len(lookup)), row, len(lookup) - 1)]
        behavior_code, behavior_names = _drop_unused(codes, names)

    num_stages, num_behaviors = max(1, len(stage_names)), max(1, len(behavior_names))
    pair = stage_code * num_behaviors + behavior_code
    cells = np.bincount(pair * 8 + event[counted], minlength=num_stages * num_behaviors * 8)
    cells = cells.reshape(num_stages, num_behaviors, 8)
    emitted_weight = np.bincount(pair, weights=np.where(
        event[counted] == Fate.EMIT, records["weight"][counted], 0.0),
        minlength=num_stages * num_behaviors).reshape(num_stages, num_behaviors)
    # Stages in training order: by the first step at which each was seen.
    first_step = np.full(len(stage_names), np.iinfo(np.int64).max)
    np.minimum.at(first_step, stage_code, step)
    rows = [SummaryRow(stage_names[s], behavior_names[b], *(int(cells[s, b, fate]) for fate in _COUNTED),
                       emitted_weight=float(emitted_weight[s, b]))
            for s in np.argsort(first_step, kind="stable").tolist()
            for b in sorted(range(len(behavior_names)), key=behavior_names.__getitem__)
            if cells[s, b].any()]

    reason = np.ascontiguousarray(records["reason"])
    with_reason = np.flatnonzero(((event == Fate.DROP) | (event == Fate.SKIP)) & (reason > 0))
    keys, counts = np.unique(event[with_reason].astype(np.int64) * len(reasons) + reason[with_reason],
                             return_counts=True)
    reason_counts = sorted(((Fate(int(k // len(reasons))).name, reasons[int(k % len(reasons))], int(n))
                            for k, n in zip(keys, counts, strict=True)), key=lambda item: -item[2])
    ends = np.ascontiguousarray(records["epoch"])[event == Fate.EPOCH_END]
    end_epochs, end_counts = np.unique(ends, return_counts=True)
    return LedgerSummary(rows, reason_counts, len(records),
                         {int(e): int(n) for e, n in zip(end_epochs, end_counts, strict=True)})
