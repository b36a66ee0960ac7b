"""The layouts (ranks x workers) a run trained under, as the accounting check needs them.

A run resumed on another layout (elastic resume) has several, each from the step it was resumed
at: a record belongs to the layout in effect at its step. An epoch is complete when every reader
of one layout recorded EPOCH_END for it in that layout: a re-partition makes every new reader
end every epoch that the old readers had not all ended, and an epoch all old readers ended is
not ended again.
"""

from __future__ import annotations

import numpy as np

from curriculum.ledger.meta import LedgerMeta


class Layouts:
    """The layout history of one run (from ``meta.json``), as arrays."""

    def __init__(self, meta: LedgerMeta) -> None:
        segments = meta.segments()
        self.since = np.array([s[0] for s in segments], np.int64)
        self.world_size = np.array([s[1] for s in segments], np.int64)
        self.num_workers = np.array([max(1, s[2]) for s in segments], np.int64)
        self.num_readers = self.world_size * self.num_workers

    def segment_of(self, step: np.ndarray) -> np.ndarray:
        """Index of the layout each step trained under."""
        return np.maximum(np.searchsorted(self.since, np.asarray(step, np.int64), side="right") - 1,
                          0)

    def describe(self, segment: int) -> str:
        """``2 rank(s) x 1 worker(s)`` (with the step it began at, after a layout change)."""
        text = f"{self.world_size[segment]} rank(s) x {self.num_workers[segment]} worker(s)"
        return text if len(self.since) == 1 else f"{text} from step {self.since[segment]}"

    def history(self) -> str:
        """Every layout, in order, on one line."""
        return ", then ".join(self.describe(s) for s in range(len(self.since)))

    def epochs_done(self, epoch: np.ndarray, segment: np.ndarray, rank: np.ndarray,
                    worker: np.ndarray) -> tuple[dict[int, tuple[bool, int]], list[tuple]]:
        """From the EPOCH_END records (inside their layouts): per epoch, whether it is complete
        and how many readers ended it (in the last layout that ended it), and the readers that
        ended an epoch more than once within one layout as ``(epoch, rank, worker, times)``."""
        most = int(self.num_readers.max())
        keys = ((epoch.astype(np.int64) * len(self.since) + segment) * most
                + rank.astype(np.int64) * self.num_workers[segment] + worker)
        unique, first, times = np.unique(keys, return_index=True, return_counts=True)
        repeated = [(int(epoch[first[k]]), int(rank[first[k]]), int(worker[first[k]]),
                     int(times[k])) for k in np.flatnonzero(times > 1)]
        groups, readers = np.unique(unique // most, return_counts=True)
        done: dict[int, tuple[bool, int]] = {}
        for group, count in zip(groups.tolist(), readers.tolist(), strict=True):
            e, s = divmod(group, len(self.since))
            complete = count == int(self.num_readers[s]) or done.get(e, (False, 0))[0]
            done[e] = (complete, count)
        return done, repeated
