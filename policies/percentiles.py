"""Percentile tables: rank-normalised scores within the store, placed with one searchsorted.

Used by the policy language's ``pct.<family>.<b>`` names (:mod:`policies.scores`).
"""

from __future__ import annotations

import math
import struct
from typing import TYPE_CHECKING

import numpy as np

from policies.evidence import relative_effect

if TYPE_CHECKING:  # only for annotations: scores imports this module
    from policies.scores import ScoreSource


def _sortable_keys(values: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """int64 keys ordered like (column, value) for float32 ``values`` (no NaNs; -0.0 is 0.0)."""
    bits = np.ascontiguousarray(values, np.float32).view(np.uint32).astype(np.int64)
    negative = bits >= 0x80000000
    ordered = np.where(negative, 0xFFFFFFFF - bits, bits + 0x80000000)
    return (np.asarray(columns, np.int64) << 32) | ordered


class PercentileTable:
    """Rank-normalised percentiles of one score family within the store.

    The percentile of a value among a column's N values (NaNs left out) is
    ``(#below + #equal / 2) / N``, in [0, 1]; NaN stays NaN. The distinct values of every column
    are kept as one sorted array of (column, value) keys, so a whole row of K scores — or a
    batch of them — is placed with a single ``np.searchsorted``.
    """

    def __init__(self, keys: np.ndarray, below: np.ndarray, equal: np.ndarray,
                 column_ends: np.ndarray, column_sizes: np.ndarray) -> None:
        self.keys = keys
        """Sorted int64 (column, value) keys of each column's distinct values."""
        self.below = below
        """Per key: how many of the column's values are smaller."""
        self.equal = equal
        """Per key: how many of the column's values are equal."""
        self.column_ends = column_ends
        """Per column: index one past its last key."""
        self.column_sizes = column_sizes
        """Per column: number of (non-NaN) values."""
        self._offsets = np.arange(len(column_sizes), dtype=np.int64) << 32
        self._last = max(len(keys) - 1, 0)
        self._divisor = np.maximum(column_sizes, 1).astype(np.float64)
        self._empty = column_sizes == 0
        self._sizes_list = column_sizes.tolist()
        self._ends_list = column_ends.tolist()
        self._divisor_list = self._divisor.tolist()
        if not len(keys):  # every column empty: searches must still index something
            self.keys, self.below, self.equal = (np.zeros(1, np.int64) for _ in range(3))

    @classmethod
    def from_values(cls, values: np.ndarray) -> PercentileTable:
        """Build from an (N, K) array of scores."""
        values = np.asarray(values, np.float32)
        keys, below, equal, ends, sizes = [], [], [], [], []
        total = 0
        for b in range(values.shape[1]):
            column = values[:, b]
            column = column[~np.isnan(column)] + np.float32(0.0)  # -0.0 -> 0.0
            distinct, counts = np.unique(column, return_counts=True)
            keys.append(_sortable_keys(distinct, np.full(len(distinct), b)))
            below.append(np.cumsum(counts) - counts)
            equal.append(counts)
            total += len(distinct)
            ends.append(total)
            sizes.append(len(column))
        return cls(np.concatenate(keys).astype(np.int64),
                   np.concatenate(below).astype(np.int64),
                   np.concatenate(equal).astype(np.int64),
                   np.array(ends, np.int64), np.array(sizes, np.int64))

    @classmethod
    def from_store(cls, store: ScoreSource, family: str, chunk_rows: int = 1 << 20,
                   effect_scale: np.ndarray | None = None) -> PercentileTable:
        """Build from every row of ``store`` for ``family`` (``affinity``, ``attribution`` or
        ``effect``, the latter with the store's ``effect_scale``), reading in chunks."""
        read = store.affinity if family == "affinity" else store.attribution
        if family == "effect":
            def read(rows: np.ndarray) -> np.ndarray:
                return relative_effect(store.attribution(rows), effect_scale)
        n, k = int(store.num_rows), len(store.behaviors)
        values = np.empty((n, k), np.float32)
        for start in range(0, n, chunk_rows):
            rows = np.arange(start, min(n, start + chunk_rows), dtype=np.int64)
            values[start:start + len(rows)] = read(rows)
        return cls.from_values(values)

    def percentile_one(self, values: np.ndarray) -> list[float]:
        """Percentiles of one document's K scores; equal to :meth:`percentile`, but in plain
        Python around one ``searchsorted`` (tiny numpy operations cost more than they do)."""
        x = np.asarray(values, np.float32) + np.float32(0.0)
        bits = struct.unpack(f"<{len(x)}I", x.tobytes())
        keys = [((b << 32) | ((0xFFFFFFFF - v) if v >= 0x80000000 else (v + 0x80000000)))
                for b, v in enumerate(bits)]
        index = self.keys.searchsorted(keys).tolist()
        out = []
        for b, i in enumerate(index):
            size = self._sizes_list[b]
            if size == 0 or (bits[b] & 0x7FFFFFFF) > 0x7F800000:  # empty column or NaN
                out.append(math.nan)
            elif i >= self._ends_list[b]:
                out.append((size + 0 * 0.5) / self._divisor_list[b])
            else:
                equal = int(self.equal[i]) if int(self.keys[i]) == keys[b] else 0
                out.append((int(self.below[i]) + equal * 0.5) / self._divisor_list[b])
        return out

    def percentile(self, values: np.ndarray) -> np.ndarray:
        """Percentiles of an (n, K) or (K,) array of scores, float64."""
        x = np.asarray(values, np.float32)
        nan = x != x
        missing = nan.any()
        if missing:
            x = np.where(nan, np.float32(0.0), x)
        bits = (x + np.float32(0.0)).view(np.uint32).astype(np.int64)  # + 0.0: -0.0 -> 0.0
        keys = np.where(bits >= 0x80000000, 0xFFFFFFFF - bits, bits + 0x80000000) | \
            self._offsets
        index = self.keys.searchsorted(keys)
        safe = np.minimum(index, self._last)
        beyond = index >= self.column_ends
        found = ~beyond & (self.keys[safe] == keys)
        below = np.where(beyond, self.column_sizes, self.below[safe])
        pct = (below + np.where(found, self.equal[safe], 0) * 0.5) / self._divisor
        if missing or self._empty.any():
            pct = np.where(nan | self._empty, np.nan, pct)
        return pct
