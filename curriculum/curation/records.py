"""Counting and recording curation fates: the per-row table, the counts, and ``curation.json``.

Counts come in two views, both adding up to the input rows:

- **total**: each row's final fate (kept, revised, filtered, unscored);
- **per principle**: the fate that principle's thresholds give the row's original score
  (``revised`` = routed to revision by it); a row without usable text is unscored for all.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from curriculum.curation.decide import FATES, Outcome
from curriculum.curation.principles import Principle

if TYPE_CHECKING:
    from curriculum.curation.pipeline import CurationResult

_PRINCIPLE_FATE = {"filtered": "filtered", "revise": "revised", "kept": "kept",
                   "unscored": "unscored"}


@dataclass
class CurationCounts:
    """Fate counts in total and per principle (see the module docstring)."""

    rows: int
    total: dict[str, int]
    per_principle: dict[str, dict[str, int]]

    @classmethod
    def empty(cls, principles: Sequence[Principle]) -> CurationCounts:
        """All zero."""
        return cls(0, dict.fromkeys(FATES, 0),
                   {p.name: dict.fromkeys(FATES, 0) for p in principles})

    def add(self, principles: Sequence[Principle], outcomes: Sequence[Outcome]) -> None:
        """Count a chunk's outcomes."""
        self.rows += len(outcomes)
        for outcome in outcomes:
            self.total[outcome.fate] += 1
            for principle, score in zip(principles, outcome.scores, strict=True):
                fate = _PRINCIPLE_FATE[principle.fate_of(score)]
                self.per_principle[principle.name][fate] += 1

    def balanced(self) -> bool:
        """filtered + revised + kept + unscored = rows, in total and for every principle."""
        return sum(self.total.values()) == self.rows and all(
            sum(c.values()) == self.rows for c in self.per_principle.values())

    def table(self) -> str:
        """A text table of the counts (rows: principles and the total)."""
        lines = [f"{'':24s}" + "".join(f"{f:>10s}" for f in FATES) + f"{'rows':>10s}"]
        for name, counts in [*self.per_principle.items(), ("total", self.total)]:
            lines.append(f"{name:24s}" + "".join(f"{counts[f]:>10,}" for f in FATES)
                         + f"{sum(counts.values()):>10,}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready counts."""
        return {"rows": self.rows, "total": self.total, "per_principle": self.per_principle}


class RowRecords:
    """Per input row: fate code, deciding principle, scores before and after revision."""

    def __init__(self, num_principles: int) -> None:
        self.num_principles = num_principles
        self._rows: list[np.ndarray] = []
        self._fates: list[np.ndarray] = []
        self._deciders: list[np.ndarray] = []
        self._scores: list[np.ndarray] = []
        self._revised: list[np.ndarray] = []
        self._keys: list[str] = []

    def add(self, outcomes: Sequence[Outcome], principles: Sequence[Principle]) -> None:
        """Append a chunk's outcomes."""
        index = {p.name: i for i, p in enumerate(principles)}
        n, width = len(outcomes), self.num_principles
        self._rows.append(np.fromiter((o.document.row for o in outcomes), np.int64, n))
        self._fates.append(np.fromiter((FATES.index(o.fate) for o in outcomes), np.uint8, n))
        self._deciders.append(np.fromiter((index.get(o.principle, -1) for o in outcomes),
                                          np.int16, n))
        self._scores.append(np.asarray([o.scores for o in outcomes], np.float32).reshape(n, width))
        self._revised.append(np.asarray([o.revised_scores for o in outcomes],
                                        np.float32).reshape(n, width))
        self._keys.extend(o.document.key for o in outcomes)

    def _cat(self, parts: list[np.ndarray], dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
        return np.concatenate(parts) if parts else np.zeros(shape, dtype)

    @property
    def rows(self) -> np.ndarray:
        """int64 input rows, in processing (row) order."""
        return self._cat(self._rows, np.int64, (0,))

    @property
    def keys(self) -> list[str]:
        """Sample keys of :attr:`rows`."""
        return self._keys

    @property
    def scores(self) -> np.ndarray:
        """float32 (n, P) original scores, NaN where unscored."""
        return self._cat(self._scores, np.float32, (0, self.num_principles))

    def save(self, path: Path, principles: Sequence[Principle]) -> None:
        """Write ``rows.npz`` (write, then rename)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp.npz")
        np.savez(temporary, rows=self.rows,
                 fate=self._cat(self._fates, np.uint8, (0,)),
                 decider=self._cat(self._deciders, np.int16, (0,)),
                 scores=self.scores,
                 revised_scores=self._cat(self._revised, np.float32, (0, self.num_principles)),
                 principles=np.asarray([p.name for p in principles]),
                 fates=np.asarray(FATES))
        os.replace(temporary, path)


def load_rows(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a ``rows.npz`` (see :meth:`RowRecords.save`)."""
    with np.load(Path(path)) as data:
        return {name: data[name] for name in data.files}


def write_summary(path: Path, result: CurationResult, principles: Sequence[Principle],
                  judge_identity: str) -> None:
    """Write ``curation.json``: counts, judge, principles and their hashes, timings."""
    counters = result.judge
    record = {
        "version": 1, "complete": True, "judge": judge_identity,
        "principles": {p.name: {"prompt_hash": p.prompt_hash(), "source": p.source,
                                "filter_threshold": p.filter_threshold,
                                "revise_threshold": p.revise_threshold} for p in principles},
        "counts": result.counts.to_dict(), "output_docs": result.output_docs,
        "judge_requests": counters.requests, "cached_replies": counters.cached,
        "prompt_tokens": counters.prompt_tokens, "completion_tokens": counters.completion_tokens,
        "store_rows": result.store_rows,
    }
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(temporary, path)
