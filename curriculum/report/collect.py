"""Everything the report needs from the runs, read once: metrics, the ledger check and counts,
the stores' statistics, and which behavior each row is counted under."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from curriculum.ledger import LedgerCheck, LedgerError, check_ledger
from curriculum.ledger.summary import UNLABELLED, read_behavior_labels
from curriculum.report.errors import ReportError
from curriculum.report.ledger_stats import LedgerStats, ledger_stats
from curriculum.report.metrics import Metrics
from curriculum.report.run import RunInfo
from curriculum.report.store_stats import StoreStats, store_stats
from curriculum.store import StoreError


@dataclass
class BehaviorOfRow:
    """How rows are assigned a behavior in the stream-mix figures."""

    names: list[str]
    lookup: np.ndarray | None
    """Index into ``names`` per row, plus one last entry for rows outside the table."""
    source: str
    """'labels.csv (PATH)', 'highest affinity in the store', or why neither was available."""


@dataclass
class RunData:
    """One run, read."""

    info: RunInfo
    metrics: Metrics
    check: LedgerCheck | None = None
    ledger: LedgerStats | None = None
    behavior_source: str = ""
    store: StoreStats | None = None
    notes: dict[str, str] = field(default_factory=dict)
    """What is missing, by section ('ledger', 'attribution', 'policy', 'labels', 'metrics')."""


def labels_lookup(labels_csv: str | Path) -> BehaviorOfRow:
    """Row -> behavior from a ``labels.csv`` (``key,row,behavior``), as the ledger summary reads
    it (rows it does not list are 'unlabelled')."""
    try:
        labels = read_behavior_labels(labels_csv)
    except FileNotFoundError:
        raise ReportError(f"{labels_csv}: labels file not found") from None
    except LedgerError as error:
        raise ReportError(str(error)) from None
    names = [UNLABELLED, *sorted(set(labels.values()))]
    code_of = {name: code for code, name in enumerate(names)}
    lookup = np.zeros(max(labels, default=-1) + 2, np.int16)
    for row, behavior in labels.items():
        if row >= 0:
            lookup[row] = code_of[behavior]
    return BehaviorOfRow(names, lookup, f"labels.csv ({labels_csv})")


def affinity_lookup(stats: StoreStats) -> BehaviorOfRow:
    """Row -> behavior of highest affinity in the store."""
    lookup = np.append(stats.highest_affinity, np.int16(len(stats.behaviors)))
    return BehaviorOfRow([*stats.behaviors, "(outside the store)"], lookup,
                         f"the behavior of highest affinity in the store {stats.path}")


def read_store(path: Path, cache: dict[Path, StoreStats | str], top_n: int) -> StoreStats | str:
    """Store statistics, computed once per store (runs of one demo share a store)."""
    if path not in cache:
        try:
            cache[path] = store_stats(path, top_n=top_n)
        except StoreError as error:
            cache[path] = f"the behavior store could not be read: {error}"
    return cache[path]


def collect_run(info: RunInfo, labels: BehaviorOfRow | None, stores: dict[Path, StoreStats | str],
                top_n: int = 8, show_progress: bool = False) -> RunData:
    """Read one run; every part that is absent leaves a note instead of an error."""
    data = RunData(info, Metrics.read(info.metrics_path))
    if not data.metrics.series:
        data.notes["metrics"] = "no metrics.csv: no probe losses or stages to show"
    if info.policy_text is None:
        data.notes["policy"] = ("no policy.yaml: the run trained without a curriculum policy (the "
                                "stream was not reordered, delayed or reweighted)")
    if info.store_path is not None:
        stats = read_store(info.store_path, stores, top_n)
        if isinstance(stats, str):
            data.notes["attribution"] = stats
        else:
            data.store = stats
            if not stats.measured_rows:
                data.notes["attribution"] = (
                    "no attribution: the store holds no measured score" +
                    ("" if info.attribution_on else " (the run's config has data.attribution off)"))
    else:
        data.notes["attribution"] = f"no attribution: {info.store_note}"
    if labels is None:
        data.notes["labels"] = "no labels given (--labels labels.csv)"
    if not info.has_ledger:
        data.notes["ledger"] = ("no ledger: the run wrote no ledger/ (it streamed without a "
                                "curriculum policy), so there is no stream mix to show")
        return data
    try:
        data.check = check_ledger(info.path)
    except LedgerError as error:
        data.notes["ledger"] = f"the ledger could not be checked: {error}"
        return data
    behavior = labels
    if behavior is None and data.store is not None:
        behavior = affinity_lookup(data.store)
    if behavior is None:
        behavior = BehaviorOfRow(["all"], None, "none (no labels and no store): all rows together")
    data.ledger = ledger_stats(info.path, behavior.lookup, behavior.names,
                               show_progress=show_progress)
    data.behavior_source = behavior.source
    return data
