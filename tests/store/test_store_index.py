"""FAISS index choice and the kNN estimator's IVF index (real FAISS)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from curriculum.store import (
    BehaviorStore,
    KnnEstimator,
    StoreReader,
    build_store,
    choose_index_factory,
)
from curriculum.store.estimate import recall_at_k
from curriculum.store.index import default_nprobe, train_index
from curriculum.synth import SynthResult


def _clustered(count: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((64, dim)).astype(np.float32)
    points = centers[rng.integers(0, 64, count)] + 0.35 * rng.standard_normal((count, dim))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def template_search(estimator: KnnEstimator, queries: np.ndarray, k: int) -> tuple:
    """FAISS's own IVF search on the estimator's index."""
    index = estimator._index  # noqa: SLF001
    index.nprobe = estimator.nprobe
    return index.search(queries, k)


def test_index_type_follows_size() -> None:
    assert choose_index_factory(999_999, 128) == "Flat"
    assert choose_index_factory(1_000_000, 128) == "IVF2048,Flat"
    assert choose_index_factory(50_000_000, 128).endswith(",PQ32")
    assert choose_index_factory(250_000, 128, flat_below=200_000).startswith("IVF")
    assert default_nprobe("Flat") == 0 and default_nprobe("IVF4096,Flat") == 16


def test_ivf_estimator_recall_against_exact_search() -> None:
    vectors = _clustered(20_000, 32, seed=0)
    queries = _clustered(200, 32, seed=1)
    factory = "IVF64,Flat"
    template = train_index(factory, 32, len(vectors), lambda a, b: vectors[a:b])
    estimator = KnnEstimator.from_template(template, factory)
    assert estimator.nprobe == default_nprobe(factory) == 8
    rows = np.arange(len(vectors)) * 3  # ids are store rows, not positions
    estimator.add(rows, vectors)
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10] * 3
    similarities, found = estimator.search(queries, 10)
    assert recall_at_k(found, exact) >= 0.9
    # Searching in list order with preassigned lists is an optimization only: same answers as
    # FAISS's own search, with or without the stored coarse lists.
    plain_similarities, plain_found = template_search(estimator, queries, 10)
    np.testing.assert_array_equal(found, plain_found)
    np.testing.assert_allclose(similarities, plain_similarities, rtol=1e-6)
    _, lists = estimator.coarse_lists(queries, 4)
    np.testing.assert_array_equal(estimator.search(queries, 10, coarse_lists=lists)[1], found)
    # Tuning finds the smallest power-of-two nprobe that reaches the target recall.
    reached = estimator.tune_nprobe(queries, exact, k=10, target_recall=0.9)
    assert reached >= 0.9 and estimator.nprobe <= 8
    if estimator.nprobe > 1:
        estimator.nprobe //= 2
        assert recall_at_k(estimator.search(queries, 10)[1], exact) < 0.9


def test_store_with_an_ivf_index_searches_like_flat(
    built_store_path: Path, store_corpus: SynthResult, tmp_path: Path
) -> None:
    ivf = build_store(store_corpus.out_dir, store_corpus.probes_dir, tmp_path / "ivf",
                      index_factory="IVF16,Flat", estimator_factory="IVF16,Flat")
    flat = BehaviorStore.open(built_store_path)
    assert isinstance(flat, BehaviorStore)
    rows = np.arange(0, ivf.num_rows, 37)
    _, ivf_rows = ivf.search(ivf.embeddings(rows), 5)
    _, flat_rows = flat.search(flat.embeddings(rows), 5)
    overlap = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(ivf_rows, flat_rows, strict=True)])
    assert overlap >= 0.8
    np.testing.assert_array_equal(ivf.affinity(rows), StoreReader(built_store_path).affinity(rows))
    # The estimator's IVF template was trained at build time and fills as rows are measured.
    assert (tmp_path / "ivf" / "estimator_template.faiss").is_file()
    assert np.load(tmp_path / "ivf" / "coarse_lists.npy").shape == (ivf.num_rows, 4)
    ivf.record_attribution(np.arange(0, 600), np.ones((600, 4)))
    assert ivf.refresh_estimates() == ivf.num_rows - 600
    np.testing.assert_allclose(ivf.attribution(np.arange(600, 1200)), 1.0, rtol=1e-5)
    ivf.close()
    flat.close()
