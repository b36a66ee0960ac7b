"""The selection ledger: what in-batch selection did with every candidate sequence it was offered.

The main ledger settles a document when the loader emits it into a candidate batch. With a
``select`` rule the trainer then decides, per batch row ("sequence"), whether it updates the
weights. Each sequence's documents get, per (sequence, row), the events

``OFFER (RETURN)* (SELECT | REJECT)``   or, while it waits in the return queue,   ``OFFER (RETURN)+``

in ``RUN/ledger/selection-rank-RRRRR.bin`` (fixed-size records), each with the document's
labelled tokens in that sequence. :func:`check_selection` verifies this grammar for every
(sequence, row), that every REJECT names the rule's stage, that the sequences left pending are
exactly those of the return queue saved with the last checkpoint or at the end of training
(``selection-pending-rank-RRRRR.json``), and that every offered row was EMITted in the main
ledger: together with :func:`~curriculum.ledger.check_ledger` this accounts for every token of
every row. Resume works as for the main ledger: save :attr:`SelectionLedger.num_records` with a
checkpoint and :meth:`SelectionLedger.truncate` to it.
"""

from __future__ import annotations

import enum
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from curriculum.ledger.meta import ledger_dir


class SelectionEvent(enum.IntEnum):
    """What in-batch selection did with a candidate sequence's document."""

    OFFER = 1
    """First offered in a candidate batch (arrived from the loader)."""
    SELECT = 2
    """Its sequence updated the weights at this step: terminal."""
    RETURN = 3
    """Not selected; back in the return queue, offered again at the next step."""
    REJECT = 4
    """Not selected and not returned (the rule's bound on returns was reached): terminal."""


SELECTION_DTYPE = np.dtype([
    ("event", "<u1"),
    ("step", "<i8"),
    ("sequence", "<i8"),
    ("row", "<i8"),
    ("tokens", "<i4"),
    ("stage", "<i4"),
])
"""One record: event, global step, sequence id (unique in the run), document row, the row's
labelled tokens in the sequence, and the stage whose rule decided (-1: none)."""


def selection_path(run_dir: str | Path, rank: int) -> Path:
    """``RUN/ledger/selection-rank-RRRRR.bin``."""
    return ledger_dir(run_dir) / f"selection-rank-{int(rank):05d}.bin"


def pending_path(run_dir: str | Path, rank: int) -> Path:
    """``RUN/ledger/selection-pending-rank-RRRRR.json``: the return queue's sequences."""
    return ledger_dir(run_dir) / f"selection-pending-rank-{int(rank):05d}.json"


class SelectionLedger:
    """Appends one rank's selection records; a whole number of records is always on disk."""

    def __init__(self, run_dir: str | Path, rank: int) -> None:
        self.run_dir = Path(run_dir)
        self.rank = int(rank)
        self.path = selection_path(run_dir, rank)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        size = os.fstat(self._fd).st_size
        whole = size - size % SELECTION_DTYPE.itemsize
        if whole != size:  # a kill mid-write
            os.ftruncate(self._fd, whole)
        self._num_records = whole // SELECTION_DTYPE.itemsize

    @property
    def num_records(self) -> int:
        """Records in the file now (save this with a checkpoint)."""
        return self._num_records

    def append(self, records: np.ndarray) -> None:
        """Append records (SELECTION_DTYPE); handed to the operating system before returning."""
        data = np.ascontiguousarray(records, dtype=SELECTION_DTYPE).tobytes()
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        self._num_records += len(records)

    def truncate(self, num_records: int) -> None:
        """Cut the file back to ``num_records`` (resume from a checkpoint)."""
        if num_records > self._num_records:
            raise ValueError(f"{self.path}: cannot truncate {self._num_records} records to "
                             f"{num_records}")
        os.ftruncate(self._fd, num_records * SELECTION_DTYPE.itemsize)
        self._num_records = num_records

    def write_pending(self, step: int, sequences: list[int]) -> None:
        """Record which sequences wait in the return queue as of ``step`` (atomically)."""
        path = pending_path(self.run_dir, self.rank)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"step": int(step), "records": self._num_records,
                                         "sequences": [int(s) for s in sequences]}))
        os.replace(temporary, path)

    def flush(self) -> None:
        """Force the records to disk (with a checkpoint)."""
        os.fsync(self._fd)

    def close(self) -> None:
        """Close the file."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def read_selection(run_dir: str | Path) -> dict[int, np.ndarray]:
    """``{rank: records}`` of every rank's selection ledger in the run."""
    out = {}
    for path in sorted(ledger_dir(run_dir).glob("selection-rank-*.bin")):
        rank = int(path.stem.rsplit("-", 1)[1])
        data = path.read_bytes()
        whole = len(data) - len(data) % SELECTION_DTYPE.itemsize
        out[rank] = np.frombuffer(data[:whole], dtype=SELECTION_DTYPE)
    return out


@dataclass
class SelectionCheck:
    """The result of :func:`check_selection`."""

    ok: bool
    problems: list[str] = field(default_factory=list)
    sequences: int = 0
    """Candidate sequences offered."""
    selected: int = 0
    rejected: int = 0
    pending: int = 0
    """Sequences waiting in the return queue."""
    returns: int = 0
    """RETURN events (times a sequence was offered again)."""
    tokens_offered: int = 0
    tokens_selected: int = 0

    def summary_line(self) -> str:
        """One line: ``selection ok: ...`` or ``selection FAILED: ...``."""
        counts = (f"{self.sequences:,} candidate sequences: {self.selected:,} selected, "
                  f"{self.rejected:,} rejected by their rule, {self.pending:,} pending in the "
                  f"return queue ({self.returns:,} returns); {self.tokens_selected:,} of "
                  f"{self.tokens_offered:,} offered tokens trained on")
        if self.ok:
            return f"selection ok: {counts}"
        return f"selection FAILED: {len(self.problems)} problem(s); {counts}"


def _check_rank(records: np.ndarray, pending: set[int] | None, emitted: np.ndarray | None,
                rank: int, result: SelectionCheck) -> None:
    problems = result.problems
    order = np.lexsort((np.arange(len(records)), records["row"], records["sequence"]))
    event = records["event"][order]
    sequence, row = records["sequence"][order], records["row"][order]
    starts = np.flatnonzero(np.r_[True, (np.diff(sequence) != 0) | (np.diff(row) != 0)])
    ends = np.r_[starts[1:], len(order)] - 1
    terminal = (event == SelectionEvent.SELECT) | (event == SelectionEvent.REJECT)
    group = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(order)]))
    offers = np.bincount(group, event == SelectionEvent.OFFER, len(starts))
    terminals = np.bincount(group, terminal, len(starts))
    bad = np.flatnonzero((event[starts] != SelectionEvent.OFFER) | (offers != 1) |
                         (terminals > 1) | ((terminals == 1) & ~terminal[ends]))
    for g in bad[:10].tolist():
        history = [SelectionEvent(e).name for e in event[starts[g]:ends[g] + 1].tolist()]
        problems.append(f"rank {rank} sequence {sequence[starts[g]]} row {row[starts[g]]}: "
                        f"events {' '.join(history)} do not read OFFER (RETURN)* "
                        "(SELECT | REJECT)")
    rejects = (event == SelectionEvent.REJECT) & (records["stage"][order] < 0)
    if rejects.any():
        problems.append(f"rank {rank}: {int(rejects.sum())} REJECT records name no rule")
    waiting = set(sequence[ends[(terminals == 0)]].tolist())
    if pending is not None and waiting != pending:
        problems.append(f"rank {rank}: sequences left in the return queue by the ledger "
                        f"({len(waiting)}) differ from the saved queue ({len(pending)}): "
                        f"e.g. {sorted(waiting ^ pending)[:5]}")
    if emitted is not None:
        offered = np.unique(row[event == SelectionEvent.OFFER])
        missing = offered[~np.isin(offered, emitted)]
        if len(missing):
            problems.append(f"rank {rank}: {len(missing)} offered rows were never EMITted in the "
                            f"main ledger, e.g. {missing[:5].tolist()}")
    first = np.r_[True, np.diff(sequence[starts]) != 0]
    result.sequences += int(first.sum())
    last_of_sequence = event[ends][first]
    result.selected += int((last_of_sequence == SelectionEvent.SELECT).sum())
    result.rejected += int((last_of_sequence == SelectionEvent.REJECT).sum())
    result.pending += len(waiting)
    result.returns += int(((event == SelectionEvent.RETURN) & first[group]).sum())
    tokens = records["tokens"][order]
    result.tokens_offered += int(tokens[event == SelectionEvent.OFFER].sum())
    result.tokens_selected += int(tokens[event == SelectionEvent.SELECT].sum())


def check_selection(run_dir: str | Path) -> SelectionCheck | None:
    """Check every rank's selection ledger (see the module docs); None when the run has none."""
    ranks = read_selection(run_dir)
    if not ranks:
        return None
    from curriculum.ledger.errors import LedgerError
    from curriculum.ledger.reader import load_ledger

    try:
        loaded = load_ledger(run_dir)
        emitted = np.unique(loaded.records["row"][loaded.records["event"] == 1])
    except (LedgerError, OSError):  # no main ledger: check the selection ledger alone
        emitted = None
    result = SelectionCheck(ok=True)
    for rank, records in ranks.items():
        path = pending_path(run_dir, rank)
        pending = None
        if not path.exists():
            result.problems.append(f"rank {rank}: no saved return queue ({path.name}): rows "
                                   "left pending cannot be checked")
        else:
            saved = json.loads(path.read_text())
            if saved.get("records") == len(records):
                pending = set(saved["sequences"])
            else:
                result.problems.append(
                    f"rank {rank}: the saved return queue describes the first "
                    f"{saved.get('records')} records, the ledger holds {len(records)} (killed "
                    "after its last checkpoint and not resumed?)")
        _check_rank(records, pending, emitted, rank, result)
    result.ok = not result.problems
    return result
