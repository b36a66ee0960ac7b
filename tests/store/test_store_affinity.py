"""Affinity separates the synthetic behavior categories, and shard summaries agree with it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from store_support import roc_auc

from curriculum.store import BehaviorStore, StoreReader
from curriculum.synth import SynthResult, read_labels


def test_affinity_ranks_each_category_first(
    built_store_path: Path, store_corpus: SynthResult
) -> None:
    reader = StoreReader(built_store_path)
    labels = read_labels(store_corpus.labels_path)
    keys = list(labels)
    rows = reader.rows_for_keys(keys)
    assert (rows >= 0).all()
    categories = np.asarray([labels[k] for k in keys])
    affinity = reader.affinity(rows)
    assert affinity.dtype == np.float32 and affinity.shape == (len(keys), 4)
    assert set(reader.behaviors) == set(categories)
    for column, behavior in enumerate(reader.behaviors):
        inside = categories == behavior
        auc = roc_auc(affinity[inside, column], affinity[~inside, column])
        assert auc >= 0.9, f"{behavior}: ROC AUC {auc:.3f}"


def test_behaviors_are_probe_file_stems_sorted(
    built_store_path: Path, store_corpus: SynthResult
) -> None:
    stems = sorted(p.stem for p in store_corpus.probes_dir.glob("*.jsonl"))
    assert StoreReader(built_store_path).behaviors == tuple(stems)


def test_shard_summaries_are_the_mean_affinity_of_each_shard(built_store_path: Path) -> None:
    reader = StoreReader(built_store_path)
    summaries = reader.shard_summaries()
    assert summaries.num_rows.sum() == reader.num_rows
    for shard, (first, count) in enumerate(zip(summaries.first_rows, summaries.num_rows,
                                               strict=True)):
        expected = reader.affinity(np.arange(first, first + count)).mean(axis=0)
        np.testing.assert_allclose(summaries.mean_affinity[shard], expected, rtol=1e-5)
    order = summaries.order("values")
    column = reader.behaviors.index("values")
    assert np.all(np.diff(summaries.mean_affinity[order, column]) <= 0)
    assert all(Path(p).is_file() for p in summaries.shard_paths)


def test_text_affinity_matches_stored_affinity(
    built_store_path: Path, store_corpus: SynthResult
) -> None:
    from curriculum.shards.tar_samples import iter_raw_samples

    store = BehaviorStore.open(built_store_path)
    assert isinstance(store, BehaviorStore)
    samples = [s for _, s in zip(range(20), iter_raw_samples(store_corpus.shard_paths[0]),
                                 strict=False)]
    rows = store.rows_for_keys([s.key for s in samples])
    texts = [s.members["txt"] for s in samples]
    np.testing.assert_allclose(store.text_affinity(texts), store.affinity(rows), atol=1e-5)
    np.testing.assert_allclose(store.embed(texts), store.embeddings(rows), atol=1e-6)
    store.close()


def test_unknown_behavior_in_summary_order_is_refused(built_store_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown behavior 'honesty'"):
        StoreReader(built_store_path).shard_summaries().order("honesty")
