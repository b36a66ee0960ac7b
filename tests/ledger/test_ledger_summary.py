"""Counting fates by stage (from metrics.csv or a callable) and behavior (labels.csv or a callable)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from ledger_support import SimulatedRun, simulate, write_run

from curriculum.ledger import Fate, LedgerError, summarize_ledger
from curriculum.ledger.summary import UNKNOWN_STAGE, UNLABELLED

_NAMES = {Fate.EMIT: "emitted", Fate.DEFER: "deferred", Fate.RELEASE: "released",
          Fate.DROP: "dropped", Fate.SKIP: "skipped"}


@pytest.fixture(scope="module")
def run_on_disk(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SimulatedRun]:
    run_dir = tmp_path_factory.mktemp("run")
    run = simulate(num_rows=300, world_size=2, num_workers=2, num_epochs=2, seed=11)
    write_run(run_dir, run)
    return run_dir, run


def _expected(run: SimulatedRun, stage_of, behavior_of) -> tuple[Counter, dict, Counter]:
    counts: Counter = Counter()
    weights: dict = {}
    reasons: Counter = Counter()
    for batches in run.batches.values():
        for batch in batches:
            for event, row, _epoch, weight, reason in batch.events:
                if event == Fate.EPOCH_END:
                    continue
                cell = (stage_of(batch.step), behavior_of(row))
                counts[(*cell, _NAMES[event])] += 1
                if event == Fate.EMIT:
                    weights[cell] = weights.get(cell, 0.0) + np.float32(weight)
                if reason:
                    reasons[(Fate(event).name, reason)] += 1
    return counts, weights, reasons


def _observed(summary) -> tuple[Counter, dict, Counter]:
    counts: Counter = Counter()
    weights = {}
    for row in summary.rows:
        for name in _NAMES.values():
            if getattr(row, name):
                counts[(row.stage, row.behavior, name)] = getattr(row, name)
        if row.emitted:
            weights[(row.stage, row.behavior)] = row.emitted_weight
    reasons = Counter({(name, reason): count for name, reason, count in summary.reasons})
    return counts, weights, reasons


def test_counts_by_stage_from_metrics_and_behavior_from_labels(
        run_on_disk: tuple[Path, SimulatedRun]) -> None:
    run_dir, run = run_on_disk
    # Lightning logs numbers only, so stages may read 0.0, 1.0; rows without a stage are skipped.
    (run_dir / "metrics.csv").write_text(
        "epoch,step,probe_loss/values,stage\n0,5,1.5,0.0\n0,9,1.4,\n0,40,1.2,1.0\n0,40,,\n")
    labels = run_dir / "labels.csv"
    labels.write_text("key,row,behavior\n" + "".join(
        f"doc{row},{row},{'values' if row % 3 == 0 else 'awareness'}\n"
        for row in range(run.num_rows) if row % 3 != 2))

    def stage_of(step: int) -> str:
        return UNKNOWN_STAGE if step < 5 else "0" if step < 40 else "1"

    def behavior_of(row: int) -> str:
        return UNLABELLED if row % 3 == 2 else "values" if row % 3 == 0 else "awareness"

    summary = summarize_ledger(run_dir, behavior_of_row=labels)
    counts, weights, reasons = _observed(summary)
    expected_counts, expected_weights, expected_reasons = _expected(run, stage_of, behavior_of)
    assert counts == expected_counts
    assert weights == pytest.approx(expected_weights)
    assert reasons == expected_reasons
    assert [row.stage for row in summary.rows][0] == UNKNOWN_STAGE  # stages in training order
    assert summary.epoch_ends == {0: 4, 1: 4}
    text = summary.format()
    assert "filter: deception>=0.8" in text and "awareness" in text and "mean weight" in text


def test_counts_with_callables_and_without_metrics(tmp_path: Path) -> None:
    run = simulate(num_rows=120, world_size=1, num_workers=2, num_epochs=1, seed=2)
    write_run(tmp_path, run)

    def stage_of(step: int) -> str:
        return "early" if step < 20 else "late"

    def behavior_of(row: int) -> str:
        return "even" if row % 2 == 0 else "odd"

    summary = summarize_ledger(tmp_path, stage_of_step=stage_of, behavior_of_row=behavior_of)
    assert _observed(summary)[0] == _expected(run, stage_of, behavior_of)[0]
    plain = summarize_ledger(tmp_path)
    assert {(row.stage, row.behavior) for row in plain.rows} == {("all", "all")}
    assert plain.rows[0].emitted == sum(row.emitted for row in summary.rows)


def test_bad_labels_file_is_one_clear_error(tmp_path: Path) -> None:
    run = simulate(num_rows=40, world_size=1, num_workers=1, num_epochs=1)
    write_run(tmp_path, run)
    (tmp_path / "labels.csv").write_text("key,label\na,b\n")
    with pytest.raises(LedgerError, match="expected a CSV with 'row' and 'behavior' columns"):
        summarize_ledger(tmp_path, behavior_of_row=tmp_path / "labels.csv")
