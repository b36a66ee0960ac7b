"""The accounting check on simulated runs: consistent ledgers pass, each kind of loss is named."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from ledger_support import Batch, SimulatedRun, simulate, write_run

from curriculum.ledger import (
    Fate,
    FateBatch,
    LedgerWriter,
    check_ledger,
    load_ledger,
    write_ledger_meta,
)


@pytest.fixture(scope="module")
def clean_run() -> SimulatedRun:
    return simulate(num_rows=400, world_size=2, num_workers=2, num_epochs=2, seed=3)


def test_consistent_ledger_passes_with_every_kind_of_fate(tmp_path: Path, clean_run: SimulatedRun) -> None:
    write_run(tmp_path, clean_run)
    records, _ = load_ledger(tmp_path)
    kinds = Counter(Fate(e).name for e in records["event"])
    assert {"EMIT", "DEFER", "RELEASE", "DROP", "SKIP", "EPOCH_END"} <= set(kinds)
    assert set(records["rank"].tolist()) == {0, 1} and set(records["worker"].tolist()) == {0, 1}
    # Releases of epoch 0's rows happen while epoch 1 is read, and some rows stay in the spool.
    released = records[records["event"] == Fate.RELEASE]
    ends = records[records["event"] == Fate.EPOCH_END]
    assert (released["step"][released["epoch"] == 0] > ends["step"][ends["epoch"] == 0].min()).any()

    result = check_ledger(tmp_path)
    assert result.ok, result.problems
    assert result.complete_epochs == [0, 1]
    for epoch in (0, 1):
        counts = result.epochs[epoch]
        expected = Counter(fate for (e, _), fate in clean_run.final.items() if e == epoch)
        assert (counts.emitted, counts.deferred_pending, counts.dropped, counts.skipped) == (
            expected[Fate.EMIT], expected[Fate.DEFER], expected[Fate.DROP], expected[Fate.SKIP])
        assert counts.accounted == 400 and counts.missing == 0 and counts.readers_done == 4
    assert sum(result.epochs[e].deferred_pending for e in (0, 1)) > 0
    assert result.summary_line().startswith("ok: ")
    assert "epochs 0-1 complete" in result.summary_line()


def test_an_epoch_in_progress_needs_no_row_yet_but_never_a_row_twice(tmp_path: Path) -> None:
    run = simulate(num_rows=200, world_size=2, num_workers=2, num_epochs=3, stop_in_epoch=2, seed=5)
    write_run(tmp_path, run)
    result = check_ledger(tmp_path)
    assert result.ok, result.problems
    assert result.complete_epochs == [0, 1]
    assert not result.epochs[2].complete and 0 < result.epochs[2].accounted < 200
    assert "epoch 2 in progress" in result.summary_line()

    rank, b, _, event = run.find(Fate.EMIT, epoch=2)
    run.batches[rank][b + 1].events.append(event)
    write_run(tmp_path / "twice", run)
    result = check_ledger(tmp_path / "twice")
    assert not result.ok
    assert result.problems[0].startswith(f"epoch 2 row {event[1]}: EMIT")


def test_missing_row_is_named(tmp_path: Path, clean_run: SimulatedRun) -> None:
    run = _copy(clean_run)
    rank, b, i, event = run.find(Fate.EMIT, epoch=1, only_event_of_row=True)
    del run.batches[rank][b].events[i]
    write_run(tmp_path, run)
    result = check_ledger(tmp_path)
    assert not result.ok and result.num_problems == 1
    assert result.problems == [f"epoch 1 row {event[1]}: no fate recorded (missing) in a complete epoch"]
    assert result.epochs[1].missing == 1
    assert result.summary_line().startswith("FAILED: 1 problem(s)")


def test_duplicated_row_is_named(tmp_path: Path, clean_run: SimulatedRun) -> None:
    run = _copy(clean_run)
    rank, b, _, event = run.find(Fate.EMIT, epoch=0)
    run.batches[1 - rank][-1].events.append(event)  # the same row emitted again, by the other rank
    write_run(tmp_path, run)
    result = check_ledger(tmp_path)
    assert not result.ok and result.num_problems == 1
    assert result.problems[0].startswith(f"epoch 0 row {event[1]}: EMIT at step ")
    assert "counted more than once" in result.problems[0]
    assert "rank 0" in result.problems[0] and "rank 1" in result.problems[0]


def test_release_without_defer_is_named(tmp_path: Path, clean_run: SimulatedRun) -> None:
    run = _copy(clean_run)
    rank, b, i, event = run.find(Fate.EMIT, epoch=1, only_event_of_row=True)
    run.batches[rank][b].events.insert(i, (Fate.RELEASE, event[1], 1, 0.0, ""))
    write_run(tmp_path, run)
    result = check_ledger(tmp_path)
    assert not result.ok and result.num_problems == 1
    assert result.problems[0].startswith(f"epoch 1 row {event[1]}: RELEASE at step ")
    assert "without a pending DEFER" in result.problems[0]


def test_other_breaches_are_named(tmp_path: Path) -> None:
    write_ledger_meta(tmp_path, world_size=1, num_workers=1, num_rows=6, manifest="test")
    with LedgerWriter(tmp_path, 0) as writer:
        writer.append(FateBatch.build([Fate.EMIT, Fate.DEFER, Fate.EMIT, Fate.DROP],
                                      [0, 1, 1, 2], 0, reasons=["", "", "", ""]), 3)
        writer.append(FateBatch.build([Fate.DEFER, Fate.RELEASE, Fate.DEFER, Fate.DEFER, Fate.EMIT],
                                      [3, 3, 4, 4, 9], 0), 1)  # the step goes back
        writer.append(FateBatch.build([Fate.DEFER, Fate.RELEASE, Fate.EPOCH_END], [5, 5, -1], 0), 4)
    result = check_ledger(tmp_path)
    text = "\n".join(result.problems)
    assert "step goes back from 3 to 1" in text
    assert "epoch 0 row 9: EMIT of a row outside [0, 6)" in text
    assert "epoch 0 row 2: DROP without a reason" in text
    assert "epoch 0 row 1: EMIT at step 3 while in the spool" in text
    assert "epoch 0 row 4: DEFER at step 1 while already in the spool" in text
    assert "epoch 0 row 3: released from the spool but never decided again" in text
    assert "epoch 0 row 5: released from the spool but never decided again" in text
    assert result.num_problems == 7 and result.epochs[0].complete


def test_huge_corpus_with_few_records_is_checked_without_dense_counts(tmp_path: Path) -> None:
    # A billion rows and a handful of records: the check sorts instead of counting densely.
    write_ledger_meta(tmp_path, world_size=1, num_workers=1, num_rows=10**9, manifest="huge")
    with LedgerWriter(tmp_path, 0) as writer:
        writer.append(FateBatch.build([Fate.EMIT, Fate.DEFER, Fate.EMIT, Fate.RELEASE],
                                      [5, 7, 9, 11], 0, weight=1.0), 1)
        writer.append(FateBatch.build([Fate.RELEASE, Fate.EMIT, Fate.EMIT, Fate.EMIT],
                                      [7, 7, 9, 11], 0, weight=1.0), 2)
    result = check_ledger(tmp_path)
    assert [problem.split(":")[0] for problem in result.problems] == ["epoch 0 row 9", "epoch 0 row 11"]
    assert "counted more than once" in result.problems[0]
    assert "RELEASE at step 1 without a pending DEFER" in result.problems[1]
    assert result.epochs[0].emitted == 4 and not result.epochs[0].complete


def test_two_million_records_check_in_seconds(tmp_path: Path) -> None:
    num_rows, world_size, num_workers = 1_000_000, 2, 2
    write_ledger_meta(tmp_path, world_size=world_size, num_workers=num_workers, num_rows=num_rows,
                      manifest="big")
    rng = np.random.default_rng(0)
    batch_rows = 4096
    for rank in range(world_size):
        with LedgerWriter(tmp_path, rank) as writer:
            step = 0
            for epoch in range(2):
                rows = rng.permutation(np.arange(rank, num_rows, world_size))
                deferred = rows[: len(rows) // 10]
                is_deferred = np.zeros(num_rows, dtype=bool)
                is_deferred[deferred] = True
                for start in range(0, len(rows), batch_rows):
                    chunk = rows[start:start + batch_rows]
                    event = np.where(chunk % 7 == 0, Fate.DROP, Fate.EMIT).astype(np.uint8)
                    event[is_deferred[chunk]] = Fate.DEFER
                    reasons = np.where(event == Fate.DROP, "filter: sevens", "").tolist()
                    writer.append(FateBatch.build(event, chunk, epoch, worker=chunk // world_size % 2,
                                                  weight=1.0, reasons=reasons), step)
                    step += 1
                # Half the spool comes back and is emitted; the rest stays pending.
                back = deferred[: len(deferred) // 2]
                event = np.repeat([[Fate.RELEASE, Fate.EMIT]], len(back), axis=0).ravel()
                writer.append(FateBatch.build(event, np.repeat(back, 2), epoch,
                                              worker=np.repeat(back // world_size % 2, 2)), step)
                writer.append(FateBatch.build([Fate.EPOCH_END] * num_workers, [-1] * num_workers,
                                              epoch, worker=np.arange(num_workers)), step)
    records, _ = load_ledger(tmp_path)
    assert len(records) > 2_000_000
    started = time.perf_counter()
    result = check_ledger(tmp_path)
    seconds = time.perf_counter() - started
    print(f"\ncheck_ledger: {len(records):,} records in {seconds:.2f} s")
    assert result.ok, result.problems
    assert result.complete_epochs == [0, 1] and result.epochs[1].deferred_pending == num_rows // 20


def _copy(run: SimulatedRun) -> SimulatedRun:
    return SimulatedRun(run.num_rows, run.world_size, run.num_workers,
                        {rank: [Batch(b.step, b.worker, list(b.events)) for b in batches]
                         for rank, batches in run.batches.items()}, dict(run.final))
