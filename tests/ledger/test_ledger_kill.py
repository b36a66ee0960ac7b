"""A writer killed with SIGKILL leaves whole records and a readable reason table; resuming from a
checkpoint's record count (truncate) gives a ledger that passes the check."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from curriculum.ledger import (
    RECORD_DTYPE,
    Fate,
    FateRecorder,
    LedgerWriter,
    check_ledger,
    load_ledger,
    reasons_path,
    records_path,
    write_ledger_meta,
)

# Appends batches of 97 fates forever; every fifth row is dropped with a reason that changes every
# 50 rows, so new reason lines keep being written between records.
_APPENDER = """
import itertools, sys
from curriculum.ledger import FateRecorder, LedgerWriter
writer = LedgerWriter(sys.argv[1], 0)
recorder = FateRecorder(0)
row = writer.num_records
for step in itertools.count():
    for _ in range(97):
        if row % 5 == 0:
            recorder.drop(row, 0, f"reason {row // 50}")
        else:
            recorder.emit(row, 0, 1.0)
        row += 1
    writer.append(recorder.take(), step)
    if step == 0:
        print("appending", flush=True)
"""


def _append_then_kill(run_dir: Path, min_records: int) -> None:
    child = subprocess.Popen([sys.executable, "-c", _APPENDER, str(run_dir)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "appending"
        path = records_path(run_dir, 0)
        deadline = time.monotonic() + 30
        while path.stat().st_size < min_records * RECORD_DTYPE.itemsize:
            assert time.monotonic() < deadline, "the appender is too slow"
            time.sleep(0.01)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL


def test_sigkill_leaves_whole_records_and_resume_passes_the_check(tmp_path: Path) -> None:
    _append_then_kill(tmp_path, min_records=20_000)
    raw_size = records_path(tmp_path, 0).stat().st_size
    with LedgerWriter(tmp_path, 0) as writer:
        num_records = writer.num_records
        assert records_path(tmp_path, 0).stat().st_size == num_records * RECORD_DTYPE.itemsize
        assert raw_size - num_records * RECORD_DTYPE.itemsize == writer.torn_bytes_cut
    assert num_records >= 20_000

    # Exactly what was written, in order, and every record's reason has its line.
    records, reasons = load_ledger(tmp_path)
    assert np.array_equal(records["row"], np.arange(num_records))
    dropped = records[records["event"] == Fate.DROP]
    assert [reasons[code] for code in dropped["reason"]] == [f"reason {row // 50}"
                                                             for row in dropped["row"].tolist()]
    assert reasons_path(tmp_path, 0).read_bytes().endswith(b"\n")

    # Kill it again while it continues the same file, then resume from a "checkpoint" halfway.
    _append_then_kill(tmp_path, min_records=num_records + 5_000)
    checkpoint = num_records // 2
    with LedgerWriter(tmp_path, 0) as writer:
        assert writer.num_records >= num_records + 5_000
        writer.truncate(checkpoint)
        recorder = FateRecorder(0)
        for row in range(checkpoint, num_records):  # the resumed run reads on from the checkpoint
            recorder.emit(row, 0, 1.0)
        recorder.epoch_end(0)
        writer.append(recorder.take(), step=10**6)
    write_ledger_meta(tmp_path, world_size=1, num_workers=1, num_rows=num_records, manifest="kill")
    result = check_ledger(tmp_path)
    assert result.ok, result.problems
    assert result.complete_epochs == [0] and result.epochs[0].accounted == num_records
