"""A small in-memory object with the behavior store's read interface, for policy unit tests."""

from __future__ import annotations

import numpy as np

BEHAVIORS = ("values", "situational_awareness", "neutral", "deception")


class MemoryStore:
    """Random scores with a planted category per row (affinity to it is raised)."""

    def __init__(self, num_rows: int = 400, seed: int = 0,
                 behaviors: tuple[str, ...] = BEHAVIORS) -> None:
        rng = np.random.default_rng(seed)
        self.behaviors = behaviors
        self.num_rows = num_rows
        self.category = rng.integers(0, len(behaviors), num_rows)
        affinity = rng.normal(0.2, 0.05, (num_rows, len(behaviors)))
        affinity[np.arange(num_rows), self.category] += 0.3
        self._affinity = affinity.astype(np.float32)
        self._attribution = rng.normal(0.0, 1.0, (num_rows, len(behaviors))).astype(np.float32)
        self._measured = rng.random((num_rows, len(behaviors))) < 0.3

    def affinity(self, rows: np.ndarray) -> np.ndarray:
        return self._affinity[np.asarray(rows)]

    def attribution(self, rows: np.ndarray) -> np.ndarray:
        return self._attribution[np.asarray(rows)]

    def is_measured(self, rows: np.ndarray) -> np.ndarray:
        return self._measured[np.asarray(rows)]
