"""The per-rank ledger writer (the trainer process, one per rank)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from curriculum.ledger.errors import LedgerError
from curriculum.ledger.meta import reasons_path, records_path
from curriculum.ledger.reasons import format_reason_line, parse_reason_table
from curriculum.ledger.records import RECORD_DTYPE, FateBatch


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class LedgerWriter:
    """Appends one rank's fates to ``RUN/ledger/rank-RRRRR.bin`` and its reason table.

    Promises:

    - :meth:`append` hands its bytes to the operating system before it returns, so a killed
      process (even SIGKILL) loses nothing it appended; :meth:`flush` with ``fsync=True`` also
      survives a machine crash (call it when a checkpoint is saved).
    - Opening cuts a trailing partial record and a torn last reason line left by a kill mid-write,
      so the file is always a whole number of records.
    - A reason's line is written before the first record that uses it.
    - Resume: save :attr:`num_records` (or :meth:`state_dict`) with each checkpoint and call
      :meth:`truncate` (or :meth:`load_state_dict`) on resume, so the ledger again matches the
      loader state; on a fresh run in a reused directory, ``truncate(0)``.
    """

    def __init__(self, run_dir: str | Path, rank: int) -> None:
        self.rank = int(rank)
        self.path = records_path(run_dir, self.rank)
        self.reasons_path = reasons_path(run_dir, self.rank)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._reasons_fd = -1
        try:
            size = os.fstat(self._fd).st_size
            whole = size - size % RECORD_DTYPE.itemsize
            self.torn_bytes_cut = size - whole
            """Bytes of a partial last record cut when opening (a kill mid-write)."""
            if self.torn_bytes_cut:
                os.ftruncate(self._fd, whole)
                os.fsync(self._fd)
            self._num_records = whole // RECORD_DTYPE.itemsize
            table, good_bytes = parse_reason_table(self.reasons_path)
            self._reasons_fd = os.open(self.reasons_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                                       0o644)
            if os.fstat(self._reasons_fd).st_size != good_bytes:
                os.ftruncate(self._reasons_fd, good_bytes)
                os.fsync(self._reasons_fd)
        except BaseException:
            self.close()
            raise
        self._reason_ids: dict[str, int] = {text: reason_id for reason_id, text in table.items()}
        self._reason_ids[""] = 0
        self._next_reason_id = max(table, default=0) + 1

    @property
    def num_records(self) -> int:
        """Records in the file now (save this with a checkpoint)."""
        return self._num_records

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._fd < 0

    def _reason_id(self, text: str) -> int:
        reason_id = self._reason_ids.get(text)
        if reason_id is None:
            reason_id = self._next_reason_id
            _write_all(self._reasons_fd, format_reason_line(reason_id, text))
            self._reason_ids[text] = reason_id
            self._next_reason_id += 1
        return reason_id

    def append(self, fates: FateBatch, step: int) -> None:
        """Append ``fates``, consumed by the trainer at global step ``step``."""
        if self.closed:
            raise LedgerError(f"{self.path}: append after close")
        size = len(fates)
        if size == 0:
            return
        mapping = np.fromiter((self._reason_id(text) for text in fates.reason_table),
                              dtype=np.uint32, count=len(fates.reason_table))
        records = np.empty(size, dtype=RECORD_DTYPE)
        records["event"] = fates.event
        records["rank"] = self.rank
        records["worker"] = fates.worker
        records["epoch"] = fates.epoch
        records["row"] = fates.row
        records["step"] = step
        records["weight"] = fates.weight
        records["reason"] = mapping[fates.reason]
        _write_all(self._fd, records.tobytes())
        self._num_records += size

    def flush(self, fsync: bool = False) -> None:
        """Appends already reach the operating system; ``fsync=True`` also forces them (and the
        reason table) to the disk, so they survive a machine crash."""
        if self.closed or not fsync:
            return
        os.fsync(self._reasons_fd)
        os.fsync(self._fd)

    def truncate(self, num_records: int) -> None:
        """Cut the file back to its first ``num_records`` records (the count saved with the
        checkpoint a run resumes from). The reason table is kept: unused entries are harmless."""
        num_records = int(num_records)
        if not 0 <= num_records <= self._num_records:
            raise LedgerError(f"{self.path}: cannot cut to {num_records} records, it holds "
                              f"{self._num_records} (was the ledger written without fsync before "
                              "the checkpoint?)")
        if num_records < self._num_records:
            os.ftruncate(self._fd, num_records * RECORD_DTYPE.itemsize)
            os.fsync(self._fd)
            self._num_records = num_records

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must hold to restore the ledger: ``{"num_records": n}``."""
        return {"num_records": self._num_records}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the ledger to a checkpoint's :meth:`state_dict` (truncates)."""
        self.truncate(state["num_records"])

    def close(self) -> None:
        """Force the records to disk and close the files (idempotent)."""
        for name in ("_reasons_fd", "_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                setattr(self, name, -1)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)

    def __enter__(self) -> LedgerWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_fd", -1) >= 0 or getattr(self, "_reasons_fd", -1) >= 0:
            self.close()
