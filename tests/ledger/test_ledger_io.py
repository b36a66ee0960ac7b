"""Writing and reading the ledger: round trip, reasons, reopen, truncate, torn tails, transport."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning_utilities.core.apply_func import apply_to_collection
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from curriculum.ledger import (
    RECORD_DTYPE,
    Fate,
    FateBatch,
    FateRecorder,
    LedgerError,
    LedgerRecord,
    LedgerWriter,
    check_ledger,
    load_ledger,
    read_ledger,
    read_ledger_meta,
    reasons_path,
    records_path,
    write_ledger_meta,
)


def test_record_layout_is_33_little_endian_bytes() -> None:
    assert RECORD_DTYPE.itemsize == 33
    assert all(RECORD_DTYPE[name].str[0] in "<|" for name in RECORD_DTYPE.names)
    assert RECORD_DTYPE.names == ("event", "rank", "worker", "epoch", "row", "step", "weight",
                                  "reason")


def test_write_read_round_trip(tmp_path: Path) -> None:
    worker0, worker1 = FateRecorder(0), FateRecorder(1)
    worker0.emit(5, 0, 1.5)
    worker0.drop(6, 0, "filter: deception>=0.8")
    worker0.defer(7, 0)
    worker1.skip(8, 0, "not UTF-8")
    worker1.release(7, 0)
    worker1.emit(7, 0, 0.25)
    worker1.epoch_end(0)
    with LedgerWriter(tmp_path, rank=1) as writer:
        writer.append(worker0.take(), step=10)
        writer.append(FateBatch.empty(), step=10)
        writer.append(worker1.take(), step=11)
        assert writer.num_records == 7
    with LedgerWriter(tmp_path, rank=0) as writer:
        recorder = FateRecorder(0)
        recorder.skip(1, 0, "empty text")
        recorder.drop(2, 0, "filter: deception>=0.8")
        writer.append(recorder.take(), step=3)

    records = list(read_ledger(tmp_path))
    assert records[:2] == [
        LedgerRecord(Fate.SKIP, 1, 3, 0, 0.0, "empty text", 0, 0),
        LedgerRecord(Fate.DROP, 2, 3, 0, 0.0, "filter: deception>=0.8", 0, 0)]
    assert records[2:] == [
        LedgerRecord(Fate.EMIT, 5, 10, 1, 1.5, "", 0, 0),
        LedgerRecord(Fate.DROP, 6, 10, 1, 0.0, "filter: deception>=0.8", 0, 0),
        LedgerRecord(Fate.DEFER, 7, 10, 1, 0.0, "", 0, 0),
        LedgerRecord(Fate.SKIP, 8, 11, 1, 0.0, "not UTF-8", 0, 1),
        LedgerRecord(Fate.RELEASE, 7, 11, 1, 0.0, "", 0, 1),
        LedgerRecord(Fate.EMIT, 7, 11, 1, 0.25, "", 0, 1),
        LedgerRecord(Fate.EPOCH_END, -1, 11, 1, 0.0, "", 0, 1)]
    event, row, step, rank, weight, reason = records[0][:6]  # the design's six fields come first
    assert (event, row, step, rank, weight, reason) == (Fate.SKIP, 1, 3, 0, 0.0, "empty text")

    # The vectorised reader agrees, with reason codes made global across ranks.
    loaded, reasons = load_ledger(tmp_path)
    assert loaded.dtype == RECORD_DTYPE and len(loaded) == len(records)
    assert [reasons[code] for code in loaded["reason"]] == [r.reason for r in records]
    assert loaded["row"].tolist() == [r.row for r in records]
    assert reasons[0] == "" and len(set(reasons)) == len(reasons) == 4


def test_recorder_batches_are_compact_and_carry_only_their_reasons() -> None:
    recorder = FateRecorder(worker=3)
    for row in range(100):
        recorder.drop(row, 2, f"filter: detail {row}")  # reasons that never repeat
    recorder.take()
    for row in range(100, 1100):
        recorder.emit(row, 2, 1.0)
    recorder.skip(1100, 2, "not UTF-8")
    batch = recorder.take()
    assert len(recorder) == 0 and len(batch) == 1001
    assert batch.reason_table == ("", "not UTF-8")
    assert batch.reasons[-1] == "not UTF-8" and batch.reasons[0] == ""
    assert set(batch.worker.tolist()) == {3} and set(batch.epoch.tolist()) == {2}
    assert len(pickle.dumps(batch)) < 1001 * 23 + 1000  # 23 bytes per event plus fixed overhead
    copied = pickle.loads(pickle.dumps(batch))
    for name in ("event", "worker", "epoch", "row", "weight", "reason"):
        assert getattr(copied, name).dtype == getattr(batch, name).dtype
        np.testing.assert_array_equal(getattr(copied, name), getattr(batch, name))
    assert copied.reason_table == batch.reason_table
    assert pickle.loads(pickle.dumps(recorder)).worker == 3

    built = FateBatch.build([Fate.EMIT, Fate.DROP], [1, 2], epoch=0, worker=1, weight=[2.0, 0.0],
                            reasons=["", "x"])
    merged = FateBatch.concat([batch, built])
    assert len(merged) == 1003
    assert merged.reasons[-3:] == ["not UTF-8", "", "x"]
    with pytest.raises(ValueError, match="row"):
        FateBatch(np.zeros(2, np.uint8), np.zeros(2, np.uint16), np.zeros(2, np.uint32),
                  np.zeros(1, np.int64), np.zeros(2, np.float32), np.zeros(2, np.uint32)).validate()


def test_reopen_continues_and_truncate_restores_a_checkpoint(tmp_path: Path) -> None:
    with LedgerWriter(tmp_path, 0) as writer:
        writer.append(FateBatch.build([Fate.DROP] * 3, [0, 1, 2], 0, reasons=["a", "b", "a"]), 1)
        checkpoint = writer.state_dict()
        writer.append(FateBatch.build([Fate.DROP, Fate.SKIP], [3, 4], 0, reasons=["c", "b"]), 2)
    assert checkpoint == {"num_records": 3}
    with LedgerWriter(tmp_path, 0) as writer:
        assert writer.num_records == 5
        writer.load_state_dict(checkpoint)  # resume: cut what came after the checkpoint
        assert writer.num_records == 3
        writer.append(FateBatch.build([Fate.SKIP], [3], 0, reasons=["b"]), 2)
        with pytest.raises(LedgerError, match="cannot cut to 9 records"):
            writer.truncate(9)
    lines = reasons_path(tmp_path, 0).read_text().splitlines()
    assert len(lines) == 3  # a, b, c: each reason written once, ids kept across reopening
    assert [(r.row, r.reason, r.step) for r in read_ledger(tmp_path)] == [
        (0, "a", 1), (1, "b", 1), (2, "a", 1), (3, "b", 2)]
    assert records_path(tmp_path, 0).stat().st_size == 4 * RECORD_DTYPE.itemsize


def test_torn_tails_are_ignored_by_readers_and_cut_by_the_writer(tmp_path: Path) -> None:
    with LedgerWriter(tmp_path, 0) as writer:
        writer.append(FateBatch.build([Fate.DROP, Fate.EMIT], [0, 1], 0, reasons=["why", ""]), 5)
    # What a kill in the middle of two writes leaves behind.
    with records_path(tmp_path, 0).open("ab") as handle:
        handle.write(b"\x01" * 20)
    with reasons_path(tmp_path, 0).open("ab") as handle:
        handle.write(b'{"id": 2, "te')
    assert [r.row for r in read_ledger(tmp_path)] == [0, 1]
    assert len(load_ledger(tmp_path).records) == 2
    with LedgerWriter(tmp_path, 0) as writer:
        assert writer.torn_bytes_cut == 20 and writer.num_records == 2
        writer.append(FateBatch.build([Fate.SKIP], [2], 0, reasons=["new"]), 6)
    assert records_path(tmp_path, 0).stat().st_size == 3 * RECORD_DTYPE.itemsize
    assert [r.reason for r in read_ledger(tmp_path)] == ["why", "", "new"]


def test_damaged_reason_table_is_an_error(tmp_path: Path) -> None:
    with LedgerWriter(tmp_path, 0) as writer:
        writer.append(FateBatch.build([Fate.DROP], [0], 0, reasons=["why"]), 5)
    path = reasons_path(tmp_path, 0)
    path.write_text("not json\n" + path.read_text())
    with pytest.raises(LedgerError, match="damaged at line 1"):
        LedgerWriter(tmp_path, 0)


def test_meta_is_written_once_and_a_changed_layout_is_refused(tmp_path: Path) -> None:
    meta = write_ledger_meta(tmp_path, world_size=2, num_workers=3, num_rows=100,
                             manifest="corpus/manifest.json")
    assert read_ledger_meta(tmp_path) == meta and meta.num_readers == 6 and meta.num_epochs is None
    write_ledger_meta(tmp_path, world_size=2, num_workers=3, num_rows=100,
                      manifest="corpus/manifest.json")  # a resumed run: no change
    with pytest.raises(LedgerError, match="world_size 2 -> 4"):
        write_ledger_meta(tmp_path, world_size=4, num_workers=3, num_rows=100,
                          manifest="corpus/manifest.json")
    with pytest.raises(LedgerError, match="not found"):
        read_ledger_meta(tmp_path / "elsewhere")
    with pytest.raises(LedgerError, match="no ledger records"):
        load_ledger(tmp_path)


class _Documents(IterableDataset):
    """An iterable dataset whose batches carry their fates, like the loader's."""

    def __init__(self, num_rows: int, num_workers: int) -> None:
        self.num_rows, self.num_workers = num_rows, num_workers

    def __iter__(self) -> Iterator[dict[str, object]]:
        worker = get_worker_info().id
        recorder = FateRecorder(worker)
        share = [row for row in range(self.num_rows) if row % self.num_workers == worker]
        for start in range(0, len(share), 4):
            rows = share[start:start + 4]
            for row in rows:
                if row % 5 == 0:
                    recorder.drop(row, 0, "filter: fives")
                else:
                    recorder.emit(row, 0, 1.0)
            if start + 4 >= len(share):
                recorder.epoch_end(0)
            yield {"rows": torch.tensor(rows), "fates": recorder.take()}


def test_fates_travel_through_a_dataloader_and_lightning_device_transfer(tmp_path: Path) -> None:
    dataset = _Documents(num_rows=50, num_workers=2)
    write_ledger_meta(tmp_path, world_size=1, num_workers=2, num_rows=50, manifest="test")
    with LedgerWriter(tmp_path, 0) as writer:
        for step, batch in enumerate(DataLoader(dataset, batch_size=None, num_workers=2)):
            # What Lightning's move_data_to_device does: dataclasses in a batch are rebuilt.
            batch = apply_to_collection(batch, torch.Tensor, lambda tensor: tensor.to("cpu"))
            writer.append(batch["fates"], step)
    result = check_ledger(tmp_path)
    assert result.ok, result.problems
    assert result.complete_epochs == [0] and result.epochs[0].dropped == 10
