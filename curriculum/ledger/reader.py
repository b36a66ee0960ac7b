"""Reading a run's ledger: record by record, or all at once as numpy arrays."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from curriculum.ledger.errors import LedgerError
from curriculum.ledger.meta import ledger_dir, ranks_on_disk, reasons_path, records_path
from curriculum.ledger.reasons import parse_reason_table
from curriculum.ledger.records import RECORD_DTYPE, Fate, LedgerRecord


@dataclass(frozen=True)
class RankFile:
    """One rank's records file as read (read-only: a torn tail is ignored, not cut)."""

    rank: int
    path: Path
    num_records: int
    torn_bytes: int
    """Bytes of a partial last record (a writer killed mid-write, not reopened since)."""
    reasons: dict[int, str]


def rank_files(run_dir: str | Path) -> list[RankFile]:
    """The records files of a run, by rank; :class:`LedgerError` when there is no ledger."""
    ranks = ranks_on_disk(run_dir)
    if not ranks:
        raise LedgerError(f"{ledger_dir(run_dir)}: no ledger records (rank-*.bin) found")
    files = []
    for rank in ranks:
        path = records_path(run_dir, rank)
        size = path.stat().st_size
        reasons, _ = parse_reason_table(reasons_path(run_dir, rank))
        files.append(RankFile(rank, path, size // RECORD_DTYPE.itemsize,
                              size % RECORD_DTYPE.itemsize, reasons))
    return files


_FATES = {int(fate): fate for fate in Fate}


class LoadedLedger(NamedTuple):
    """All records of a run, with reason codes made global across ranks."""

    records: np.ndarray
    """Structured array of :data:`RECORD_DTYPE`, rank by rank, each rank in the order written."""
    reasons: list[str]
    """Reason texts by code (``reasons[0] == ''``); a code whose line is missing reads
    ``'<missing reason N of rank R>'``."""


def load_ledger(run_dir: str | Path) -> LoadedLedger:
    """Every record of the run in one structured array (fast: no Python loop per record)."""
    return load_rank_files(rank_files(run_dir))


def load_rank_files(files: list[RankFile]) -> LoadedLedger:
    """:func:`load_ledger` of files found by :func:`rank_files`."""
    records = np.empty(sum(file.num_records for file in files), dtype=RECORD_DTYPE)
    reasons: list[str] = [""]
    codes: dict[str, int] = {"": 0}
    start = 0
    for file in files:
        part = records[start:start + file.num_records]
        start += file.num_records
        with file.path.open("rb") as handle:
            if handle.readinto(part.view(np.uint8)) != part.nbytes:
                raise LedgerError(f"{file.path}: shorter than when it was listed")
        local = part["reason"]
        used = np.flatnonzero(np.bincount(local)) if len(local) else np.empty(0, np.int64)
        mapping = np.arange(int(used[-1]) + 1 if len(used) else 1, dtype=np.uint32)
        for local_code in used[used > 0].tolist():
            text = file.reasons.get(local_code, f"<missing reason {local_code} of rank {file.rank}>")
            if text not in codes:
                codes[text] = len(reasons)
                reasons.append(text)
            mapping[local_code] = codes[text]
        if (mapping != np.arange(len(mapping))).any():  # most often the first rank's codes
            part["reason"] = mapping[local]
    return LoadedLedger(records, reasons)


def read_ledger(run_dir: str | Path, chunk_records: int = 1 << 16) -> Iterator[LedgerRecord]:
    """Every record of the run as a :class:`LedgerRecord` ``(event, row, step, rank, weight,
    reason, epoch, worker)``: rank by rank, each rank in the order the trainer consumed them.

    Reads ``chunk_records`` at a time, so memory stays flat however long the ledger is.
    """
    for file in rank_files(run_dir):
        records = np.memmap(file.path, dtype=RECORD_DTYPE, mode="r", shape=(file.num_records,)) \
            if file.num_records else np.empty(0, RECORD_DTYPE)
        for start in range(0, file.num_records, chunk_records):
            chunk = np.array(records[start:start + chunk_records])
            columns = [chunk[name].tolist() for name in
                       ("event", "row", "step", "rank", "weight", "reason", "epoch", "worker")]
            for event, row, step, rank, weight, reason, epoch, worker in zip(*columns, strict=True):
                text = "" if not reason else file.reasons.get(
                    reason, f"<missing reason {reason} of rank {file.rank}>")
                yield LedgerRecord(_FATES.get(event, event), row, step, rank, weight, text, epoch,
                                   worker)
        del records
