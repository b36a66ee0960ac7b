"""The ``probe:STORE`` judge: a model-free baseline from the behavior store's affinity.

The score of a document for a principle is the percentile of its affinity to the principle's
probe behavior (``probe_behavior``, default the principle's name) among all the store's
documents, times 100: 90 means "closer to the deception probe set than 90 % of the corpus". It
needs no model and no network, so the demo and CI run offline; it is a baseline, and its scores
say where a document ranks, not how much of the aspect it shows in absolute terms.

Input documents are read by row (their affinity is already in the store); revised texts are
embedded with the store's embedder. Revision is sentence filtering: each sentence is scored on
its own and those at or above the revise threshold are removed (at least the highest-scoring
one), which keeps the rest of the text unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from curriculum.curation.judge import JudgeError, JudgeItem, JudgeReply
from curriculum.curation.principles import Principle

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


class ProbeJudge:
    """Judge from a store's affinity table (see the module docstring)."""

    def __init__(self, store_path: str | Path, batch_size: int = 4096) -> None:
        from curriculum.store import BehaviorStore, StoreError

        self.store_path = Path(store_path)
        try:
            self.store = BehaviorStore.open(self.store_path)
        except (StoreError, FileNotFoundError) as error:
            raise JudgeError(f"judge probe:{store_path}: {str(error).splitlines()[0]}") from None
        self._batch_size = int(batch_size)
        self._sorted: dict[str, np.ndarray] = {}

    @property
    def identity(self) -> str:
        return f"probe:{self.store_path.resolve()}"

    @property
    def cacheable(self) -> bool:
        return False  # as cheap to recompute as to look up, and deterministic

    @property
    def batch_size(self) -> int:
        return self._batch_size

    def check_corpus(self, manifest: object) -> None:
        """Refuse a corpus whose rows are not the store's rows."""
        from curriculum.store import StoreError

        try:
            self.store.check_compatible(shards=manifest)
        except StoreError as error:
            raise JudgeError(f"judge probe:{self.store_path}: {str(error).splitlines()[0]}") \
                from None

    def _column(self, principle: Principle) -> int:
        behaviors = self.store.behaviors
        if principle.behavior not in behaviors:
            raise JudgeError(f"judge probe:{self.store_path}: principle {principle.name!r} reads "
                             f"behavior {principle.behavior!r}, but the store has "
                             f"{', '.join(behaviors)} (set probe_behavior)")
        return behaviors.index(principle.behavior)

    def _sorted_column(self, principle: Principle) -> np.ndarray:
        behavior = principle.behavior
        if behavior not in self._sorted:
            column = self._column(principle)
            values = np.empty(self.store.num_rows, np.float32)
            for start in range(0, self.store.num_rows, 1 << 20):
                rows = np.arange(start, min(self.store.num_rows, start + (1 << 20)))
                values[start:start + len(rows)] = self.store.affinity(rows)[:, column]
            self._sorted[behavior] = np.sort(values)
        return self._sorted[behavior]

    def scores(self, principle: Principle, affinity: np.ndarray) -> np.ndarray:
        """0-100 percentile scores of affinity values for ``principle`` (ties count half)."""
        ordered = self._sorted_column(principle)
        below = np.searchsorted(ordered, affinity, side="left")
        at_or_below = np.searchsorted(ordered, affinity, side="right")
        return 100.0 * (below + at_or_below) / (2.0 * max(len(ordered), 1))

    def _affinity(self, principle: Principle, items: Sequence[JudgeItem]) -> np.ndarray:
        column = self._column(principle)
        out = np.empty(len(items), np.float32)
        stored = [i for i, item in enumerate(items) if item.row is not None]
        if stored:
            rows = np.fromiter((items[i].row for i in stored), np.int64, len(stored))
            out[stored] = self.store.affinity(rows)[:, column]
        fresh = [i for i, item in enumerate(items) if item.row is None]
        if fresh:
            out[fresh] = self.store.text_affinity([items[i].text for i in fresh])[:, column]
        return out

    def assess_rows(self, principle: Principle, rows: Sequence[int]) -> list[JudgeReply]:
        """Replies for stored rows (the fast path: one vectorised read, shared replies for
        equal scores are fine since replies are immutable)."""
        column = self._column(principle)
        affinity = self.store.affinity(np.asarray(rows, np.int64))[:, column]
        return [JudgeReply(score, "", "probe") for score in self.scores(principle, affinity).tolist()]

    def assess_sync(self, items: Sequence[JudgeItem]) -> list[JudgeReply]:
        """Replies for ``items`` (vectorised per principle)."""
        replies: list[JudgeReply | None] = [None] * len(items)
        by_principle: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            by_principle.setdefault(item.principle.name, []).append(i)
        for indices in by_principle.values():
            principle = items[indices[0]].principle
            group = [items[i] for i in indices]
            scores = self.scores(principle, self._affinity(principle, group)).tolist()
            for i, score in zip(indices, scores, strict=True):
                replies[i] = JudgeReply(score, "", "probe", "", len(items[i].text) // 4, 0)
        return [r for r in replies if r is not None]

    def revise_sync(self, items: Sequence[JudgeItem]) -> list[JudgeReply]:
        """Sentence-filtered revisions of ``items`` (every sentence embedded in one batch)."""
        split = [[s for s in _SENTENCE_END.split(item.text.strip()) if s] for item in items]
        singles = [JudgeItem(item.principle, sentence)
                   for item, sentences in zip(items, split, strict=True) for sentence in sentences]
        by_principle: dict[str, list[int]] = {}
        for i, single in enumerate(singles):
            by_principle.setdefault(single.principle.name, []).append(i)
        scores = np.empty(len(singles), np.float64)
        for indices in by_principle.values():
            principle = singles[indices[0]].principle
            group = [singles[i] for i in indices]
            scores[indices] = self.scores(principle, self._affinity(principle, group))
        replies, start = [], 0
        for item, sentences in zip(items, split, strict=True):
            mine = scores[start:start + len(sentences)]
            start += len(sentences)
            if not sentences:
                replies.append(JudgeReply(None, "empty document", "", ""))
                continue
            keep = mine < item.principle.revise_threshold
            if keep.all():
                keep[int(np.argmax(mine))] = False
            text = " ".join(s for s, k in zip(sentences, keep.tolist(), strict=True) if k)
            replies.append(JudgeReply(None, "" if text else "every sentence scored at or above "
                                      "the revise threshold", "", text))
        return replies

    async def assess(self, items: Sequence[JudgeItem]) -> list[JudgeReply]:
        return self.assess_sync(items)

    async def revise(self, items: Sequence[JudgeItem]) -> list[JudgeReply]:
        return self.revise_sync(items)

    async def aclose(self) -> None:
        self.store.close()
