"""Assess a sample of rows only (no revision, no outputs): the shared step of ``--dry-run`` and
distillation. Replies go through the response cache, so a later full run reuses them."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from curriculum.curation.assessor import CachedJudge, JudgeCounters, JudgeLoop
from curriculum.curation.cache import ResponseCache
from curriculum.curation.decide import InputDocument
from curriculum.curation.inputs import chunked, iter_input_documents
from curriculum.curation.judge import Judge, JudgeItem
from curriculum.curation.principles import Principle
from curriculum.shards.manifest import ShardManifest


@dataclass
class SampleAssessment:
    """Scores of sampled rows: (n, P) float, NaN where unscored or the row had no text."""

    rows: np.ndarray
    keys: list[str]
    texts_chars: np.ndarray
    """Characters per sampled document (0 for rows without text)."""
    scores: np.ndarray
    reasons: list[list[str]]
    counters: JudgeCounters
    wall_s: float


def evenly_spaced_rows(num_rows: int, sample_docs: int) -> np.ndarray:
    """``sample_docs`` rows spread evenly over ``[0, num_rows)`` (all rows if fewer)."""
    if sample_docs >= num_rows:
        return np.arange(num_rows, dtype=np.int64)
    return np.unique(np.linspace(0, num_rows - 1, sample_docs).round().astype(np.int64))


def _pick(manifest: ShardManifest, rows: np.ndarray, text_field: str) -> list[InputDocument]:
    wanted = set(rows.tolist())
    limit = int(rows.max()) + 1 if len(rows) else 0
    return [d for d in iter_input_documents(manifest, limit, text_field) if d.row in wanted]


def assess_sample(manifest: ShardManifest, rows: np.ndarray, principles: Sequence[Principle],
                  judge: Judge, cache_dir: str | Path | None, show_progress: bool = False,
                  text_field: str = "text") -> SampleAssessment:
    """Assess ``rows`` against every principle (cached), then close the judge."""
    documents = _pick(manifest, np.asarray(rows, np.int64), text_field)
    cache = ResponseCache(cache_dir) if cache_dir is not None and judge.cacheable else None
    cached = CachedJudge(judge, cache)
    width = len(principles)
    scores = np.full((len(documents), width), np.nan, np.float32)
    reasons = [[""] * width for _ in documents]
    started = time.perf_counter()
    try:
        with JudgeLoop() as loop:
            try:
                chunk_size = max(1, judge.batch_size)
                futures = []
                for chunk in chunked(iter(documents), chunk_size):
                    items = [JudgeItem(p, d.text, d.row) for d in chunk if d.text is not None
                             for p in principles]
                    futures.append((chunk, loop.submit(cached.assess(items))))
                done = 0
                with tqdm(total=len(documents), desc="assess sample", unit="doc",
                          disable=not show_progress) as progress:
                    for chunk, future in futures:
                        replies = iter(future.result())
                        for document in chunk:
                            i = done
                            done += 1
                            if document.text is None:
                                reasons[i] = [document.skip_reason] * width
                                continue
                            for j in range(width):
                                reply = next(replies)
                                if reply.score is not None:
                                    scores[i, j] = reply.score
                                reasons[i][j] = reply.reason
                        progress.update(len(chunk))
            finally:
                loop.run(judge.aclose())  # on the loop its connections were made on
    finally:
        if cache is not None:
            cache.close()
    return SampleAssessment(
        np.asarray([d.row for d in documents], np.int64), [d.key for d in documents],
        np.asarray([len(d.text or "") for d in documents], np.int64), scores, reasons,
        cached.counters, time.perf_counter() - started)
