"""The accounting check: per epoch, every row has exactly one fate.

Per (epoch, row), the events in the order the trainer consumed them must read
``(DEFER RELEASE)* (EMIT | DROP | SKIP | DEFER)``: a row is emitted, dropped or skipped once, or
still pending in the spool, and a released row is decided again. Equivalently, as the design puts
it, ``n_terminal + (n_defer - n_release) == 1`` with ``n_release <= n_defer`` and nothing after a
terminal event. An epoch is *complete* when every reader (rank, worker) recorded EPOCH_END for it
(of one layout, for a run resumed on another layout: see :mod:`curriculum.ledger.layouts`);
then every row in ``[0, num_rows)`` must be accounted for. In an epoch still in progress a row may
have no fate yet, or be released and waiting for its new decision, but never two fates.

Everything is vectorised (two stable sorts and a few passes), so ten million records take seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from curriculum.ledger.histories import IS_TERMINAL, RowHistories
from curriculum.ledger.layouts import Layouts
from curriculum.ledger.meta import read_ledger_meta
from curriculum.ledger.reader import load_rank_files, rank_files
from curriculum.ledger.records import Fate

_NAMES = {int(fate): fate.name for fate in Fate}


@dataclass
class EpochCounts:
    """How the rows of one epoch stand, by their latest fate."""

    epoch: int
    complete: bool
    """Every reader recorded EPOCH_END for this epoch."""
    readers_done: int
    """Readers (rank, worker) that recorded EPOCH_END."""
    emitted: int = 0
    deferred_pending: int = 0
    """Rows whose last event is a DEFER: waiting in the spool."""
    dropped: int = 0
    skipped: int = 0
    released_undecided: int = 0
    """Rows released from the spool with no new decision yet (a problem in a complete epoch)."""
    missing: int = 0
    """Rows with no event at all (counted in complete epochs only)."""

    @property
    def accounted(self) -> int:
        """Rows emitted, dropped, skipped or pending in the spool."""
        return self.emitted + self.deferred_pending + self.dropped + self.skipped


@dataclass
class LedgerCheck:
    """The result of :func:`check_ledger`."""

    ok: bool
    problems: list[str]
    """The first problems found, one line each, naming epoch and row where there is one."""
    num_problems: int
    num_records: int
    num_rows: int
    world_size: int
    num_workers: int
    epochs: dict[int, EpochCounts] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    """Things worth knowing that are not problems (a torn tail the reader ignored)."""

    @property
    def complete_epochs(self) -> list[int]:
        """Epochs every reader finished, in order."""
        return [epoch for epoch, counts in sorted(self.epochs.items()) if counts.complete]

    def summary_line(self) -> str:
        """One line: ``ok: ...`` or ``FAILED: N problems ...``."""
        layout = (f"{self.num_records:,} records from {self.world_size} rank(s) x "
                  f"{max(1, self.num_workers)} worker(s)")
        if not self.ok:
            return f"FAILED: {self.num_problems:,} problem(s) in {layout}"
        parts = [f"ok: {layout}"]
        complete = [self.epochs[epoch] for epoch in self.complete_epochs]
        if complete:
            total = EpochCounts(-1, True, 0)
            for counts in complete:
                for name in ("emitted", "deferred_pending", "dropped", "skipped"):
                    setattr(total, name, getattr(total, name) + getattr(counts, name))
            epochs = _epoch_list([counts.epoch for counts in complete])
            parts.append(f"{epochs} complete, each of {self.num_rows:,} rows accounted for once "
                         f"({total.emitted:,} emitted, {total.deferred_pending:,} pending in the "
                         f"spool, {total.dropped:,} dropped, {total.skipped:,} skipped)")
        else:
            parts.append("no complete epoch yet")
        for counts in self.epochs.values():
            if not counts.complete:
                parts.append(f"epoch {counts.epoch} in progress ({counts.accounted:,} rows so far, "
                             f"{counts.readers_done}/{self.world_size * max(1, self.num_workers)} "
                             "readers done)")
        return "; ".join(parts)


def _epoch_list(epochs: list[int]) -> str:
    if len(epochs) == 1:
        return f"epoch {epochs[0]}"
    if epochs == list(range(epochs[0], epochs[-1] + 1)):
        return f"epochs {epochs[0]}-{epochs[-1]}"
    return "epochs " + ", ".join(map(str, epochs))


class _Problems:
    """Counts every problem; keeps the text of the first ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self.messages: list[str] = []

    def add(self, total: int, items: Iterable[Any], describe: Callable[[Any], str]) -> None:
        """Count ``total`` problems, describing the first few ``items``."""
        if total <= 0:
            return
        self.count += total
        for item in items:
            if len(self.messages) >= self.limit:
                break
            self.messages.append(describe(item))


def check_ledger(run_dir: str | Path, num_rows: int | None = None,
                 max_problems: int = 20) -> LedgerCheck:
    """Check the accounting invariant over the run's whole ledger (see the module docstring).

    ``num_rows`` defaults to ``meta.json``'s; the layout (world size, workers) always comes from
    ``meta.json``. Raises :class:`curriculum.ledger.LedgerError` when the ledger cannot be read.
    """
    meta = read_ledger_meta(run_dir)
    num_rows = meta.num_rows if num_rows is None else int(num_rows)
    layouts = Layouts(meta)
    files = rank_files(run_dir)
    records, _ = load_rank_files(files)
    problems = _Problems(max_problems)
    notes = [f"{file.path.name} ends in a {file.torn_bytes}-byte partial record (a writer killed "
             "mid-write); ignored" for file in files if file.torn_bytes]

    event = np.ascontiguousarray(records["event"])
    rank = np.ascontiguousarray(records["rank"])
    worker = np.ascontiguousarray(records["worker"])
    epoch = np.ascontiguousarray(records["epoch"]).astype(np.int64)
    row = np.ascontiguousarray(records["row"])
    step = np.ascontiguousarray(records["step"])
    reason = np.ascontiguousarray(records["reason"])
    file_starts = np.cumsum([0] + [file.num_records for file in files])

    def where(i: int) -> str:
        f = int(np.searchsorted(file_starts, i, side="right")) - 1
        return (f"record {i - file_starts[f]} of {files[f].path.name}: rank {rank[i]} worker "
                f"{worker[i]} step {step[i]}")

    # Record by record: codes, layout, order.
    bad = np.flatnonzero((event < Fate.EMIT) | (event > Fate.EPOCH_END))
    problems.add(len(bad), bad, lambda i: f"unknown event code {event[i]} ({where(i)})")
    segment = layouts.segment_of(step)
    outside = (rank >= layouts.world_size[segment]) | (worker >= layouts.num_workers[segment])
    for file, start, stop in zip(files, file_starts[:-1], file_starts[1:], strict=True):
        outside[start:stop] |= rank[start:stop] != file.rank
    bad = np.flatnonzero(outside)
    problems.add(len(bad), bad, lambda i: f"outside the layout of "
                 f"{layouts.describe(segment[i])} ({where(i)})")
    back = np.flatnonzero(np.diff(step) < 0) + 1
    back = back[~np.isin(back, file_starts)]
    problems.add(len(back), back, lambda i: f"step goes back from {step[i - 1]} to {step[i]} "
                 f"({where(i)}): a resumed run must truncate the ledger to its checkpoint")

    is_document = (event >= Fate.EMIT) & (event < Fate.EPOCH_END)
    bad = np.flatnonzero(is_document & ((row < 0) | (row >= num_rows)))
    problems.add(len(bad), bad, lambda i: f"epoch {epoch[i]} row {row[i]}: {_NAMES[event[i]]} of a "
                 f"row outside [0, {num_rows:,}) ({where(i)})")
    is_document &= (row >= 0) & (row < num_rows)
    bad = np.flatnonzero(is_document & ((event == Fate.DROP) | (event == Fate.SKIP)) & (reason == 0))
    problems.add(len(bad), bad, lambda i: f"epoch {epoch[i]} row {row[i]}: {_NAMES[event[i]]} "
                 f"without a reason ({where(i)})")

    # Readers that finished each epoch (within one layout: after an elastic resume every new
    # reader ends each epoch the old readers had not all ended).
    ends = np.flatnonzero((event == Fate.EPOCH_END) & ~outside)
    epochs, repeated = layouts.epochs_done(epoch[ends], segment[ends], rank[ends], worker[ends])
    problems.add(len(repeated), repeated, lambda item: f"epoch {item[0]}: rank {item[1]} worker "
                 f"{item[2]} recorded EPOCH_END {item[3]} times")
    epochs = {e: EpochCounts(e, complete, done) for e, (complete, done) in epochs.items()}

    # Row by row, then epoch by epoch: how rows stand; in complete epochs, every row must stand
    # somewhere.
    rows = RowHistories(event, epoch, row, step, is_document, num_rows)

    def history(indices: np.ndarray) -> str:
        return ", ".join(f"{_NAMES[event[i]]} (step {step[i]}, rank {rank[i]} worker {worker[i]})"
                         for i in indices[:8].tolist())

    def describe_violation(item: tuple[np.ndarray, int]) -> str:
        indices, position = item
        i = indices[position]
        name = _NAMES[event[i]]
        if IS_TERMINAL[event[i]] and position < len(indices) - 1:
            what = f"{name} at step {step[i]} is followed by more events: counted more than once"
        elif event[i] == Fate.RELEASE:
            what = f"RELEASE at step {step[i]} without a pending DEFER"
        elif event[i] == Fate.DEFER:
            what = f"DEFER at step {step[i]} while already in the spool"
        else:
            what = f"{name} at step {step[i]} while in the spool (DEFER without RELEASE)"
        return f"epoch {epoch[i]} row {row[i]}: {what}; events: {history(indices)}"

    num_bad, bad_histories = rows.violations()
    problems.add(num_bad, bad_histories, describe_violation)

    for e in rows.epochs.tolist():
        epochs.setdefault(e, EpochCounts(e, False, 0))
    for e, counts in sorted(epochs.items()):
        index = rows.epoch_index(e)
        final = rows.final_counts[index] if index is not None else np.zeros(8, np.int64)
        counts.emitted, counts.deferred_pending = int(final[Fate.EMIT]), int(final[Fate.DEFER])
        counts.dropped, counts.skipped = int(final[Fate.DROP]), int(final[Fate.SKIP])
        counts.released_undecided = int(final[Fate.RELEASE])
        if not counts.complete:
            continue
        undecided = rows.undecided(e)
        problems.add(len(undecided), undecided, lambda g, e=e: f"epoch {e} row "
                     f"{row[rows.history(g)[0]]}: released from the spool but never decided "
                     f"again; events: {history(rows.history(g))}")
        missing = np.flatnonzero(~rows.rows_present(e)[:num_rows])
        counts.missing = len(missing)
        problems.add(len(missing), missing,
                     lambda r, e=e: f"epoch {e} row {r}: no fate recorded (missing) in a complete "
                     "epoch")

    if len(layouts.since) > 1:
        notes.append("resumed on another layout (elastic): " + layouts.history())
    return LedgerCheck(problems.count == 0, problems.messages, problems.count, len(records),
                       num_rows, meta.world_size, meta.num_workers, dict(sorted(epochs.items())), notes)
