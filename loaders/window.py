"""The priority window: a bounded reorder buffer that releases higher-priority documents first.

Ties are broken by a seeded hash of (epoch, row), so the order is random but reproducible and
independent of anything but the documents themselves. No document starves: one that has waited
``max_age_docs`` pushes is released before anything else.
"""

from __future__ import annotations

import hashlib
import heapq
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class WindowItem:
    """An emitted document waiting in the window."""

    row: int
    epoch: int
    tokens: np.ndarray
    weight: float
    priority: float
    seq: int = 0


def tie_break(seed: int, epoch: int, row: int) -> int:
    """A reproducible pseudo-random 64-bit number for (seed, epoch, row)."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{row}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


class PriorityWindow:
    """Holds up to ``size`` documents; each push beyond that releases one."""

    def __init__(self, size: int, max_age_docs: int | None = None, seed: int = 0) -> None:
        if size < 0:
            raise ValueError(f"window size must be >= 0, got {size}")
        self.size = size
        self.max_age_docs = max_age_docs if max_age_docs is not None else 4 * max(1, size)
        self.seed = seed
        self._heap: list[tuple[float, int, int]] = []
        self._items: dict[int, WindowItem] = {}
        self._arrivals: deque[int] = deque()
        self._next_seq = 0

    def __len__(self) -> int:
        return len(self._items)

    def push(self, item: WindowItem) -> WindowItem | None:
        """Add a document; returns the document released to make room, if any."""
        item.seq = self._next_seq
        self._next_seq += 1
        self._items[item.seq] = item
        heapq.heappush(self._heap, (-item.priority, tie_break(self.seed, item.epoch, item.row),
                                    item.seq))
        self._arrivals.append(item.seq)
        if len(self._items) <= self.size:
            return None
        return self._release()

    def drain(self) -> list[WindowItem]:
        """Release everything, in release order (end of data)."""
        released = []
        while self._items:
            released.append(self._release())
        return released

    def trim(self) -> list[WindowItem]:
        """Release documents beyond the window's size, in release order (a window restored from
        several merged ones)."""
        released = []
        while len(self._items) > self.size:
            released.append(self._release())
        return released

    def _release(self) -> WindowItem:
        while self._arrivals and self._arrivals[0] not in self._items:
            self._arrivals.popleft()
        oldest = self._arrivals[0]
        if self._next_seq - oldest > self.max_age_docs:
            # Starvation bound: the longest-waiting document goes first, whatever its priority.
            return self._items.pop(oldest)
        while True:
            _, _, seq = heapq.heappop(self._heap)
            if seq in self._items:
                return self._items.pop(seq)

    def state_dict(self) -> dict[str, Any]:
        """Window contents in arrival order, as row references in plain arrays: the state travels
        with many batches, so tokens are not copied into it (:meth:`load_state_dict` re-reads
        them) and arrays keep it cheap to build, pickle and compare."""
        items = [self._items[s] for s in sorted(self._items)]
        return {
            "next_seq": self._next_seq,
            "rows": np.array([i.row for i in items], dtype=np.int64),
            "epochs": np.array([i.epoch for i in items], dtype=np.int64),
            "weights": np.array([i.weight for i in items], dtype=np.float64),
            "priorities": np.array([i.priority for i in items], dtype=np.float64),
            "seqs": np.array([i.seq for i in items], dtype=np.int64),
        }

    def load_state_dict(self, state: dict[str, Any],
                        tokens_of: Callable[[int], np.ndarray]) -> None:
        """Restore :meth:`state_dict` (or its earlier form, a list of item tuples);
        ``tokens_of(row)`` re-reads a document's tokens."""
        if "items" in state:
            entries = state["items"]
        else:
            entries = zip(*(np.asarray(state[k]).tolist()
                            for k in ("rows", "epochs", "weights", "priorities", "seqs")),
                          strict=True)
        self._heap, self._items, self._arrivals = [], {}, deque()
        for row, epoch, weight, priority, seq in entries:
            item = WindowItem(int(row), int(epoch), tokens_of(int(row)), float(weight),
                              float(priority), int(seq))
            self._items[item.seq] = item
            heapq.heappush(self._heap, (-item.priority, tie_break(self.seed, item.epoch, item.row),
                                        item.seq))
            self._arrivals.append(item.seq)
        self._next_seq = int(state["next_seq"])
