"""The accounting check across a layout change (elastic resume): records belong to the layout
of their step, and an epoch is complete when every reader of one layout ended it."""

from __future__ import annotations

import pytest

from curriculum.ledger import (
    FateRecorder,
    LedgerError,
    LedgerWriter,
    check_ledger,
    read_ledger_meta,
    write_ledger_meta,
)


def _append(run, rank: int, worker: int, step: int, events) -> None:
    recorder = FateRecorder(worker)
    for name, *args in events:
        getattr(recorder, name)(*args)
    with LedgerWriter(run, rank) as writer:
        writer.append(recorder.take(), step)


def _two_ranks_then_one(run, end_epoch_after: bool = True, rank1_at_step_5: int = 1) -> None:
    write_ledger_meta(run, world_size=2, num_workers=1, num_rows=4, manifest="m")
    _append(run, 0, 0, 1, [("emit", 0, 0, 1.0)])
    _append(run, 1, 0, rank1_at_step_5, [("emit", 1, 0, 1.0), ("epoch_end", 0)])
    write_ledger_meta(run, world_size=1, num_workers=1, num_rows=4, manifest="m", since_step=5)
    _append(run, 0, 0, 6, [("emit", 2, 0, 1.0), ("defer", 3, 0)]
            + ([("epoch_end", 0)] if end_epoch_after else []))


def test_an_epoch_finished_on_the_new_layout_is_complete(tmp_path) -> None:
    _two_ranks_then_one(tmp_path)
    assert read_ledger_meta(tmp_path).segments() == [(0, 2, 1), (5, 1, 1)]
    report = check_ledger(tmp_path)
    assert report.ok, report.problems
    assert report.complete_epochs == [0]
    assert "2 rank(s) x 1 worker(s) from step 0, then 1 rank(s)" in report.notes[-1]


def test_an_epoch_the_new_layout_did_not_end_is_in_progress(tmp_path) -> None:
    _two_ranks_then_one(tmp_path, end_epoch_after=False)
    report = check_ledger(tmp_path)
    assert report.ok and report.complete_epochs == []


def test_rank_one_writing_after_it_is_gone_is_outside_the_layout(tmp_path) -> None:
    _two_ranks_then_one(tmp_path, rank1_at_step_5=7)
    report = check_ledger(tmp_path)
    assert not report.ok
    assert any("outside the layout of 1 rank(s) x 1 worker(s) from step 5" in p
               for p in report.problems)


def test_without_a_resume_step_a_layout_change_is_refused(tmp_path) -> None:
    write_ledger_meta(tmp_path, world_size=2, num_workers=1, num_rows=4, manifest="m")
    with pytest.raises(LedgerError, match="layout changed"):
        write_ledger_meta(tmp_path, world_size=1, num_workers=1, num_rows=4, manifest="m")
    with pytest.raises(LedgerError, match="num_rows"):  # the corpus may never change
        write_ledger_meta(tmp_path, world_size=1, num_workers=1, num_rows=5, manifest="m",
                          since_step=3)


def test_resuming_again_before_the_change_replaces_it(tmp_path) -> None:
    write_ledger_meta(tmp_path, world_size=2, num_workers=1, num_rows=4, manifest="m")
    write_ledger_meta(tmp_path, world_size=1, num_workers=1, num_rows=4, manifest="m", since_step=9)
    write_ledger_meta(tmp_path, world_size=1, num_workers=2, num_rows=4, manifest="m", since_step=4)
    assert read_ledger_meta(tmp_path).segments() == [(0, 2, 1), (4, 1, 2)]
    write_ledger_meta(tmp_path, world_size=2, num_workers=1, num_rows=4, manifest="m", since_step=4)
    assert read_ledger_meta(tmp_path).segments() == [(0, 2, 1)]
