"""The behavior store: per-document embeddings in FAISS, affinity and attribution tables.

``build_store`` makes one from shards and probe sets; ``BehaviorStore.open`` reopens it in the
writer (FAISS, attribution updates, kNN estimates); ``StoreReader`` (or ``BehaviorStore.open(path,
readonly=True)``) is the FAISS-free, picklable handle for DataLoader workers. Importing this
package does not import FAISS or torch.
"""

from curriculum.store.affinity import AFFINITY_DEFINITION, probe_affinity
from curriculum.store.build import build_store
from curriculum.store.embedders import (
    Embedder,
    HashedNgramEmbedder,
    known_embedders,
    load_embedder,
    make_embedder,
    register_embedder,
)
from curriculum.store.errors import StoreError
from curriculum.store.estimate import KnnEstimator
from curriculum.store.index import choose_index_factory
from curriculum.store.probe_sets import read_probe_sets
from curriculum.store.reader import ShardSummaries, StoreReader
from curriculum.store.store import BehaviorStore

__all__ = [
    "AFFINITY_DEFINITION",
    "BehaviorStore",
    "Embedder",
    "HashedNgramEmbedder",
    "KnnEstimator",
    "ShardSummaries",
    "StoreError",
    "StoreReader",
    "build_store",
    "choose_index_factory",
    "known_embedders",
    "load_embedder",
    "make_embedder",
    "register_embedder",
    "probe_affinity",
    "read_probe_sets",
]
