"""Affinity: how similar a document is to each behavior's probe set, known before training.

Definition (recorded in ``store.json`` as ``mean_top_k_cosine``): the affinity of document x to
behavior b is the mean of the ``top_k`` largest cosine similarities between x's embedding and the
embeddings of b's probe documents (all of them when the probe set is smaller than ``top_k``).
Compared with similarity to the probe centroid, the top-k mean rewards closeness to *some* probe
documents, so a behavior whose probe set covers several distinct styles still scores documents
that match one style well; compared with the single nearest probe, it is less noisy.
Values lie in [-1, 1]; with the hashed embedder they are mostly in [0, 1].
"""

from __future__ import annotations

import numpy as np

AFFINITY_DEFINITION = "mean_top_k_cosine"
DEFAULT_TOP_K = 10


def probe_affinity(
    embeddings: np.ndarray,
    probe_embeddings: np.ndarray,
    probe_behaviors: np.ndarray,
    num_behaviors: int,
    top_k: int = DEFAULT_TOP_K,
) -> np.ndarray:
    """float32 (n, num_behaviors) affinities of unit-norm ``embeddings`` (n, dim).

    ``probe_behaviors[i]`` is the behavior column of probe document ``i``; every behavior must
    have at least one probe document.
    """
    embeddings = np.asarray(embeddings, dtype=np.float32)
    out = np.empty((len(embeddings), num_behaviors), dtype=np.float32)
    for behavior in range(num_behaviors):
        probes = probe_embeddings[probe_behaviors == behavior]
        if not len(probes):
            raise ValueError(f"behavior column {behavior} has no probe documents")
        similarities = embeddings @ probes.T
        k = min(top_k, len(probes))
        if k < len(probes):
            similarities = np.partition(similarities, len(probes) - k, axis=1)[:, -k:]
        out[:, behavior] = similarities.mean(axis=1)
    return out


def shard_mean_affinity(
    affinity: np.ndarray, first_rows: np.ndarray, counts: np.ndarray
) -> np.ndarray:
    """float32 (num_shards, K): mean affinity per shard (NaN for an empty shard)."""
    out = np.full((len(counts), affinity.shape[1]), np.nan, dtype=np.float32)
    for shard, (first, count) in enumerate(zip(first_rows.tolist(), counts.tolist(), strict=True)):
        if count:
            out[shard] = np.asarray(affinity[first : first + count], dtype=np.float64).mean(axis=0)
    return out
