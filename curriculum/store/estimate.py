"""kNN estimation of attribution for documents nobody has measured yet.

An unmeasured document's estimate for behavior b is the similarity-weighted mean of the measured
means of its ``k`` nearest *measured* neighbours in embedding space::

    estimate_b(x) = sum_j w_j * mean_b(n_j) / sum_j w_j,   w_j = max(cos(x, n_j), 0)

counting only neighbours measured for b. Where no neighbour qualifies (nothing measured nearby,
or all similarities <= 0), the estimate is the global mean of the measured values of b (0.0 when
nothing is measured at all).

The neighbours come from a FAISS index holding only measured rows, which grows as measurements
arrive (``add``). It runs in the writer process only, in batches.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from curriculum.store.index import (
    default_nprobe,
    faiss_module,
    new_index,
    nlist_of,
    set_nprobe,
    to_search_device,
)

#: ``lookup(rows) -> (means (n, K) float, measured (n, K) bool)`` for measured rows.
Lookup = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class KnnEstimator:
    """A growing FAISS index of measured rows, and the weighted-mean rule above.

    ``factory`` is a FAISS factory string; an IVF index must be trained (:meth:`train`) on a
    sample of the store's embeddings before rows are added. Ids in the index are store rows.
    """

    def __init__(self, dim: int, factory: str = "Flat", nprobe: int | None = None) -> None:
        faiss = faiss_module()
        self.dim = int(dim)
        self.factory = factory
        self.nprobe = default_nprobe(factory) if nprobe is None else int(nprobe)
        base = new_index(factory, dim)
        # IVF indexes take ids natively; others (Flat, HNSW) need an id map around them.
        self._index: Any = base if nlist_of(factory) else faiss.IndexIDMap2(base)
        self._on_device = False
        self.num_indexed = 0

    @classmethod
    def from_template(cls, template: Any, factory: str, nprobe: int | None = None) -> KnnEstimator:
        """An estimator whose index starts as a copy of a trained, empty ``template``."""
        faiss = faiss_module()
        estimator = cls(template.d, factory, nprobe)
        index = faiss.clone_index(template)
        index.reset()
        estimator._index = index if nlist_of(factory) else faiss.IndexIDMap2(index)
        return estimator

    @property
    def is_trained(self) -> bool:
        """Whether rows can be added."""
        return bool(self._index.is_trained)

    def train(self, sample: np.ndarray) -> None:
        """Train the IVF coarse quantizer (no-op for indexes that need no training)."""
        if not self._index.is_trained:
            self._index.train(np.ascontiguousarray(sample, dtype=np.float32))

    def add(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        """Add measured rows (each row once over the estimator's life)."""
        if not len(rows):
            return
        if not self._on_device:
            self._index = to_search_device(self._index)
            self._on_device = True
        self._index.add_with_ids(
            np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(rows, dtype=np.int64)
        )
        self.num_indexed += len(rows)

    def coarse_lists(self, vectors: np.ndarray, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities float32, lists int64), each (n, nprobe): the IVF lists nearest to each
        vector. Only for IVF indexes."""
        ivf = self._ivf()
        if ivf is None:
            raise ValueError(f"{self.factory}: not an IVF index")
        return ivf.quantizer.search(np.ascontiguousarray(vectors, np.float32), nprobe)

    def _ivf(self) -> Any:
        """The index as a CPU IndexIVF, or None (GPU indexes and other types search plainly)."""
        faiss = faiss_module()
        return self._index if isinstance(self._index, faiss.IndexIVF) else None

    def search(
        self, vectors: np.ndarray, k: int, coarse_lists: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(similarities (n, k), rows (n, k)) of the nearest measured rows; row -1 = none.

        ``coarse_lists`` (n, >= nprobe), when given, are the vectors' nearest IVF lists, as the
        store keeps them for every row (``coarse_lists.npy``): the coarse search, the larger cost
        when few lists are probed, is then skipped.

        On a CPU IVF index the queries are searched in the order of their nearest list, so that
        consecutive queries scan the same inverted list while it is in cache (about 2x faster
        on large indexes); results come back in the caller's order.
        """
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if self.num_indexed == 0:
            empty = np.full((len(vectors), k), -1, dtype=np.int64)
            return np.zeros((len(vectors), k), dtype=np.float32), empty
        ivf = self._ivf()
        if ivf is None:
            set_nprobe(self._index, self.nprobe)
            return self._index.search(vectors, k)
        faiss = faiss_module()
        nprobe = min(self.nprobe, ivf.nlist)
        # Only plain IVF-Flat ignores the coarse similarities (others add them to residuals).
        if (coarse_lists is not None and coarse_lists.shape[1] >= nprobe
                and isinstance(ivf, faiss.IndexIVFFlat)):
            lists = np.ascontiguousarray(coarse_lists[:, :nprobe], dtype=np.int64)
            coarse = np.zeros(lists.shape, dtype=np.float32)
        else:
            coarse, lists = self.coarse_lists(vectors, nprobe)
        order = np.argsort(lists[:, 0], kind="stable")
        ivf.nprobe = nprobe
        similarities, rows = ivf.search_preassigned(
            np.ascontiguousarray(vectors[order]), k, np.ascontiguousarray(lists[order]),
            np.ascontiguousarray(coarse[order]),
        )
        restored = np.empty_like(order)
        restored[order] = np.arange(len(order))
        return similarities[restored], rows[restored]

    def tune_nprobe(
        self,
        queries: np.ndarray,
        exact_rows: np.ndarray,
        k: int = 10,
        target_recall: float = 0.9,
    ) -> float:
        """Set ``nprobe`` to the smallest power of two whose recall@k against exact search
        reaches ``target_recall`` on ``queries``; return the recall reached.

        ``exact_rows`` (len(queries), k) are the true nearest measured rows (e.g. from
        ``faiss.knn`` over the measured embeddings). How many lists must be probed depends on
        how clustered the embeddings are, so it is measured rather than guessed. No-op (recall
        1.0) for indexes that are not IVF.
        """
        nlist = nlist_of(self.factory)
        if not nlist:
            return 1.0
        recall = 0.0
        nprobe = 1
        while nprobe <= nlist:
            self.nprobe = nprobe
            _, found = self.search(queries, k)
            recall = recall_at_k(found, exact_rows)
            if recall >= target_recall:
                break
            nprobe *= 2
        self.nprobe = min(nprobe, nlist)
        return recall

    def estimate(
        self,
        vectors: np.ndarray,
        k: int,
        lookup: Lookup,
        fallback: np.ndarray,
        coarse_lists: np.ndarray | None = None,
    ) -> np.ndarray:
        """Estimates (n, K) float32 for the documents with embeddings ``vectors`` (see
        :meth:`search` for ``coarse_lists``)."""
        similarities, rows = self.search(vectors, k, coarse_lists)
        return weighted_estimate(similarities, rows, lookup, fallback)


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean fraction of the exact neighbours (row ids, (n, k)) that ``found`` also holds."""
    k = exact.shape[1]
    hits = [len(np.intersect1d(f[f >= 0], e)) for f, e in zip(found, exact, strict=True)]
    return float(np.mean(hits) / k) if hits else 1.0


def weighted_estimate(
    similarities: np.ndarray, rows: np.ndarray, lookup: Lookup, fallback: np.ndarray
) -> np.ndarray:
    """The similarity-weighted mean of neighbours' measured means (see the module docstring)."""
    count, k = rows.shape
    num_behaviors = len(fallback)
    found = rows >= 0
    # Rows -1 (fewer than k neighbours) are looked up as row 0 and then weighted 0.
    means, measured = lookup(np.where(found, rows, 0).ravel())
    means = np.asarray(means, dtype=np.float64).reshape(count, k, num_behaviors)
    measured = np.asarray(measured).reshape(count, k, num_behaviors) & found[:, :, None]
    weights = np.clip(similarities, 0.0, None)[:, :, None] * measured
    total = weights.sum(axis=1)
    weighted = np.einsum("nkb,nkb->nb", weights, means)
    estimate = np.where(
        total > 0, weighted / np.where(total > 0, total, 1.0), np.asarray(fallback)[None, :]
    )
    return estimate.astype(np.float32)
