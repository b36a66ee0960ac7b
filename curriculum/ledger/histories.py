"""Per (epoch, row) event histories of a whole ledger, vectorised.

Most rows have a single event (emitted, dropped or skipped once), so they are told apart with one
``bincount`` over dense ``(epoch, row)`` keys and need no sorting; only the records of rows with
several events (defer chains, and mistakes) are sorted into consumption order. That keeps a
ten-million-record check to a few seconds.
"""

from __future__ import annotations

import numpy as np

from curriculum.ledger.records import Fate

IS_TERMINAL = np.zeros(256, dtype=bool)
IS_TERMINAL[[Fate.EMIT, Fate.DROP, Fate.SKIP]] = True
_NUM_CODES = 8


class RowHistories:
    """The histories of the records selected by ``valid`` (document events with rows in range).

    A history is valid when it reads ``(DEFER RELEASE)* (EMIT | DROP | SKIP | DEFER)?`` in
    consumption order (step, then position within a rank's file); a trailing RELEASE is valid but
    undecided.
    """

    def __init__(self, event: np.ndarray, epoch: np.ndarray, row: np.ndarray, step: np.ndarray,
                 valid: np.ndarray, num_rows: int) -> None:
        self.num_rows = rows = max(num_rows, 1)
        self.epochs = np.unique(epoch[valid]).astype(np.int64)
        """Distinct epochs with document events, sorted; the others refer to them by index."""
        self.event = event
        size = len(self.epochs) * rows
        keys = np.searchsorted(self.epochs, epoch).astype(np.int64) * rows + row
        keys[~valid] = size  # a spare bin for everything else
        if size <= 4 * len(event) + (1 << 24):
            self._counts: np.ndarray | None = np.bincount(keys, minlength=size + 1)
            multiplicity = self._counts[keys]
            singles = np.flatnonzero(valid & (multiplicity == 1))
            grouped = np.flatnonzero(valid & (multiplicity > 1))
        else:  # epochs so sparse (a damaged ledger) that a dense count would not fit: sort all
            self._counts = None
            singles, grouped = np.empty(0, np.int64), np.flatnonzero(valid)

        # Rows with several events: each rank's file is in step order, so the first stable sort
        # merely merges the ranks; the second groups by key and keeps that order within a group.
        grouped = grouped[np.argsort(step[grouped], kind="stable")]
        grouped = grouped[np.argsort(keys[grouped], kind="stable")]
        self.grouped = grouped
        """Record indices of multi-event rows, by key, then in consumption order."""
        group_keys = keys[grouped]
        events = event[grouped]
        flags = np.ones(len(grouped), dtype=bool)
        flags[1:] = group_keys[1:] != group_keys[:-1]
        self.starts = np.flatnonzero(flags)
        self.stops = np.append(self.starts[1:], len(grouped))[:len(self.starts)].astype(np.int64)
        self.group_keys = group_keys[self.starts]
        position = np.arange(len(grouped)) - np.repeat(self.starts, self.stops - self.starts)
        odd = (position % 2).astype(bool)
        is_last = np.zeros(len(grouped), dtype=bool)
        is_last[self.stops - 1] = True
        self.violation = (odd != (events == Fate.RELEASE)) | (IS_TERMINAL[events] & ~is_last)
        """Per grouped record: it breaks the grammar at its place."""
        self.bad_groups = np.unique(np.searchsorted(self.starts, np.flatnonzero(self.violation),
                                                    side="right") - 1)
        self.group_final = events[self.stops - 1]

        single_events, single_keys = event[singles], keys[singles]
        bad = np.flatnonzero(single_events == Fate.RELEASE)  # released, never deferred
        order = np.argsort(single_keys[bad], kind="stable")
        self.bad_singles = singles[bad[order]]
        self._bad_single_keys = single_keys[bad[order]]
        # Final event per epoch: rows' last events, counted by (epoch index, event code).
        cells = np.bincount(single_keys // rows * _NUM_CODES + single_events,
                            minlength=len(self.epochs) * _NUM_CODES)
        cells += np.bincount(self.group_keys // rows * _NUM_CODES + self.group_final,
                             minlength=len(self.epochs) * _NUM_CODES)
        self.final_counts = cells.reshape(len(self.epochs), _NUM_CODES)
        """``[epoch index, event code]``: rows whose last event has that code."""

    def epoch_index(self, epoch: int) -> int | None:
        """Index of ``epoch`` in :attr:`epochs`, or None when it has no document event."""
        index = int(np.searchsorted(self.epochs, epoch))
        return index if index < len(self.epochs) and self.epochs[index] == epoch else None

    def rows_present(self, epoch: int) -> np.ndarray:
        """Bool per row: the row has at least one event in ``epoch``."""
        index = self.epoch_index(epoch)
        if index is None:
            return np.zeros(self.num_rows, dtype=bool)
        lo = index * self.num_rows
        if self._counts is not None:
            return self._counts[lo:lo + self.num_rows] > 0
        present = np.zeros(self.num_rows, dtype=bool)
        first, last = np.searchsorted(self.group_keys, [lo, lo + self.num_rows])
        present[self.group_keys[first:last] - lo] = True
        return present

    def violations(self) -> tuple[int, list[tuple[np.ndarray, int]]]:
        """``(count, histories)``: how many rows break the grammar, and a lazy-enough list of
        ``(record indices in order, position of the first break)`` sorted by (epoch, row)."""
        items = [(int(key), np.array([i]), 0) for i, key in
                 zip(self.bad_singles[:1000].tolist(), self._bad_single_keys[:1000].tolist(),
                     strict=True)]
        for g in self.bad_groups[:1000].tolist():
            start, stop = int(self.starts[g]), int(self.stops[g])
            items.append((int(self.group_keys[g]), self.grouped[start:stop],
                          int(np.argmax(self.violation[start:stop]))))
        items.sort(key=lambda item: item[0])
        return len(self.bad_singles) + len(self.bad_groups), [(rows, at) for _, rows, at in items]

    def undecided(self, epoch: int) -> np.ndarray:
        """Histories (as group ids) in ``epoch`` whose last event is a RELEASE, grammar otherwise
        intact: released from the spool and not decided again."""
        index = self.epoch_index(epoch)
        if index is None:
            return np.empty(0, np.int64)
        lo = index * self.num_rows
        first, last = np.searchsorted(self.group_keys, [lo, lo + self.num_rows])
        groups = first + np.flatnonzero(self.group_final[first:last] == Fate.RELEASE)
        return groups[~np.isin(groups, self.bad_groups)]

    def history(self, group: int) -> np.ndarray:
        """Record indices of one multi-event row, in consumption order."""
        return self.grouped[self.starts[group]:self.stops[group]]
