"""Distilled assessments for a whole corpus (the FineWeb-Edu recipe).

An LLM judge assesses a sample; a small regressor (ridge regression on the store's document
embeddings, closed form) learns to predict its 0-100 scores; the regressor scores every row of
the store. Agreement with the judge is measured on held-out sampled rows the fit never saw:
Spearman rank correlation, and precision / recall of "score >= filter_threshold". The store then
gets ``assess.<principle>``: the judge's score where it assessed the row, the prediction
elsewhere (``assess.json`` records ``kind: distilled`` and the held-out figures).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from curriculum.curation.principles import Principle
from curriculum.curation.sampling import SampleAssessment


@dataclass(frozen=True)
class DistillReport:
    """Held-out agreement of the distilled scores with the judge, for one principle."""

    principle: str
    train_rows: int
    test_rows: int
    spearman: float
    precision: float
    """Of held-out rows predicted >= filter_threshold, the fraction the judge put there too."""
    recall: float
    """Of held-out rows the judge put >= filter_threshold, the fraction predicted there."""
    threshold: float
    judge_positives: int
    """Held-out rows the judge scored >= threshold (precision/recall are NaN without any)."""

    def to_dict(self) -> dict[str, float | int | str]:
        """JSON-ready fields."""
        return asdict(self)


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 with ties given their average rank."""
    values = np.asarray(values, np.float64)
    order = np.argsort(values, kind="stable")
    ranked = np.empty(len(values), np.float64)
    ranked[order] = np.arange(len(values), dtype=np.float64)
    distinct, inverse = np.unique(values, return_inverse=True)
    sums = np.bincount(inverse, weights=ranked, minlength=len(distinct))
    counts = np.bincount(inverse, minlength=len(distinct))
    return (sums / counts)[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (NaN for fewer than 2 rows or a constant input)."""
    if len(a) < 2:
        return float("nan")
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = np.sqrt((ra @ ra) * (rb @ rb))
    return float(ra @ rb / denominator) if denominator > 0 else float("nan")


def fit_ridge(features: np.ndarray, targets: np.ndarray, alpha: float = 1.0,
              ) -> tuple[np.ndarray, float]:
    """Weights and intercept minimising ``|X w + b - y|^2 + alpha |w|^2`` (closed form)."""
    x = np.asarray(features, np.float64)
    y = np.asarray(targets, np.float64)
    mean_x, mean_y = x.mean(axis=0), y.mean()
    xc = x - mean_x
    gram = xc.T @ xc + alpha * np.eye(x.shape[1])
    weights = np.linalg.solve(gram, xc.T @ (y - mean_y))
    return weights, float(mean_y - mean_x @ weights)


def _precision_recall(truth: np.ndarray, predicted: np.ndarray, threshold: float,
                      ) -> tuple[float, float, int]:
    actual, flagged = truth >= threshold, predicted >= threshold
    hits = int((actual & flagged).sum())
    precision = hits / int(flagged.sum()) if flagged.any() else float("nan")
    recall = hits / int(actual.sum()) if actual.any() else float("nan")
    return precision, recall, int(actual.sum())


def distill(store_path: str | Path, sample: SampleAssessment, principles: Sequence[Principle],
            test_fraction: float = 0.2, alpha: float = 1.0, seed: int = 0,
            write_store: bool = True) -> tuple[list[DistillReport], dict[str, np.ndarray]]:
    """Fit per principle on the sample's scored rows, report held-out agreement, predict every
    store row; returns the reports and principle -> (num_rows,) distilled scores."""
    from curriculum.store import StoreReader

    reader = StoreReader(store_path).open()
    store_rows = reader.rows_for_keys(sample.keys)
    rng = np.random.default_rng(seed)
    reports: list[DistillReport] = []
    predictions: dict[str, np.ndarray] = {}
    everything = np.arange(reader.num_rows, dtype=np.int64)
    for j, principle in enumerate(principles):
        usable = np.flatnonzero(np.isfinite(sample.scores[:, j]) & (store_rows >= 0))
        if len(usable) < 4:
            raise ValueError(f"distill {principle.name}: only {len(usable)} sampled rows have a "
                             "score; assess a larger sample")
        shuffled = rng.permutation(usable)
        test_count = max(1, int(round(len(shuffled) * test_fraction)))
        test, train = shuffled[:test_count], shuffled[test_count:]
        targets = sample.scores[:, j].astype(np.float64)
        weights, bias = fit_ridge(reader.embeddings(store_rows[train]), targets[train], alpha)
        held_out = np.clip(reader.embeddings(store_rows[test]) @ weights + bias, 0.0, 100.0)
        precision, recall, positives = _precision_recall(
            targets[test], held_out, principle.filter_threshold)
        reports.append(DistillReport(principle.name, len(train), len(test),
                                     spearman(targets[test], held_out), precision, recall,
                                     principle.filter_threshold, positives))
        predicted = np.empty(reader.num_rows, np.float32)
        for start in range(0, reader.num_rows, 1 << 16):
            block = everything[start:start + (1 << 16)]
            predicted[block] = np.clip(reader.embeddings(block) @ weights + bias, 0.0, 100.0)
        predicted[store_rows[usable]] = targets[usable]  # the judge's own scores where known
        predictions[principle.name] = predicted
    if write_store:
        from curriculum.store.assessments import write_assessments

        sources = {r.principle: {"kind": "distilled", **r.to_dict()} for r in reports}
        write_assessments(store_path, reader.num_rows, predictions, sources)
    return reports, predictions
