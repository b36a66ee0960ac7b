"""Helpers shared by the store tests (imported as a plain module: pytest puts this directory on
``sys.path``)."""

from __future__ import annotations

import numpy as np


def roc_auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Probability that a random positive outranks a random negative (ties count half)."""
    scores = np.concatenate([positive, negative])
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    # Average ranks over ties so that equal scores count half.
    unique, inverse = np.unique(scores, return_inverse=True)
    mean_rank = np.bincount(inverse, weights=ranks) / np.bincount(inverse)
    ranks = mean_rank[inverse]
    positive_ranks = ranks[: len(positive)].sum()
    return float(
        (positive_ranks - len(positive) * (len(positive) + 1) / 2) / (len(positive) * len(negative))
    )
