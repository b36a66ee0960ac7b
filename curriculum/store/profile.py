"""Neighbour spaces for kNN attribution estimates: content embeddings, or affinity profiles.

The store estimates an unmeasured document's attribution from its nearest *measured*
neighbours (:mod:`curriculum.store.estimate`). Which documents count as neighbours decides what
the estimate can know:

- ``embedding`` (default): the store's document embeddings. With content embeddings a document
  that reads as values text but carries a few situational-awareness sentences has values
  stories as its neighbours, and inherits their effect; with gradient embeddings
  (``grad:CKPT``) neighbours are documents that act alike.
- ``affinity``: the document's *affinity profile*, its percentile against each behavior's probe
  set, centred (minus 0.5) and unit-normalised, so cosine similarity compares the shape of the
  profile (K dimensions). Documents with the same mix of behaviors -- "mostly values, somewhat
  situational awareness" -- are neighbours whatever their words, so once a few of them are
  measured the effect of that mix (which affinity alone cannot tell) reaches the others.
"""

from __future__ import annotations

import numpy as np

ESTIMATE_SPACES: tuple[str, ...] = ("embedding", "affinity")


def affinity_profiles(affinity: np.ndarray) -> np.ndarray:
    """float32 (N, K) unit rows: each column's rank percentile in (0, 1), minus 0.5."""
    affinity = np.asarray(affinity, np.float64)
    count = affinity.shape[0]
    ranks = np.empty_like(affinity)
    for column in range(affinity.shape[1]):
        order = np.argsort(affinity[:, column], kind="stable")
        ranks[order, column] = np.arange(count)
    centred = (ranks + 0.5) / max(count, 1) - 0.5
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    return (centred / np.where(norms > 0, norms, 1.0)).astype(np.float32)
