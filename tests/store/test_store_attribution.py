"""Online attribution: running sums and counts, kNN estimates, single writer, snapshots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from curriculum.store import BehaviorStore, StoreError, StoreReader
from curriculum.store.estimate import weighted_estimate


def test_record_attribution_keeps_sum_and_count(fresh_store: BehaviorStore) -> None:
    store = fresh_store
    num_behaviors = len(store.behaviors)
    rows = np.array([3, 7, 3, 11])  # row 3 twice in one call: both scores count
    scores = np.arange(16, dtype=np.float64).reshape(4, num_behaviors)
    store.record_attribution(rows, scores)
    store.record_attribution([7], np.full((1, num_behaviors), 10.0))

    values, measured = store.attribution_and_measured([3, 7, 11, 12])
    np.testing.assert_allclose(values[0], (scores[0] + scores[2]) / 2)
    np.testing.assert_allclose(values[1], (scores[1] + 10.0) / 2)
    np.testing.assert_allclose(values[2], scores[3])
    np.testing.assert_array_equal(values[3], np.zeros(num_behaviors))  # no estimate yet
    assert measured.shape == (4, num_behaviors) and measured.dtype == bool
    assert measured[:3].all() and not measured[3].any()
    np.testing.assert_array_equal(store.attribution_counts([3, 7, 11])[:, 0], [2, 2, 1])
    assert store.attribution([3]).dtype == np.float32
    # A reader in the same or another process sees the writes without reopening.
    np.testing.assert_allclose(store.reader().attribution([3, 7, 11]), values[:3])


def test_bad_attribution_input_is_refused(fresh_store: BehaviorStore) -> None:
    store = fresh_store
    num_behaviors = len(store.behaviors)
    with pytest.raises(StoreError, match="expected \\(2, 4\\)"):
        store.record_attribution([1, 2], np.zeros((2, num_behaviors + 1)))
    with pytest.raises(StoreError, match="infinity"):
        store.record_attribution([1], np.full((1, num_behaviors), np.inf))
    with pytest.raises(StoreError, match="row 1200 is outside the store"):
        store.record_attribution([1200], np.zeros((1, num_behaviors)))
    with pytest.raises(StoreError, match="row -1 is outside the store"):
        store.affinity([-1])
    with pytest.raises(StoreError, match="1-D array of integers"):
        store.attribution([0.5])


def test_estimates_are_similarity_weighted_means_of_measured_neighbours(
    fresh_store: BehaviorStore,
) -> None:
    store = fresh_store
    num_behaviors = len(store.behaviors)
    rng = np.random.default_rng(1)
    measured = np.sort(rng.choice(store.num_rows, size=400, replace=False))
    scores = rng.normal(size=(400, num_behaviors))
    # The last behavior is scored on half of the rows only (NaN = not scored).
    scores[::2, -1] = np.nan
    store.record_attribution(measured, scores)
    assert store.refresh_estimates(k=8) == store.num_rows - 200

    unmeasured = np.setdiff1d(np.arange(store.num_rows), measured)[:50]
    # Brute force with numpy: cosine to every measured row, top 8, weights max(cos, 0);
    # per behavior, only neighbours measured for it count.
    similarity = store.embeddings(unmeasured) @ store.embeddings(measured).T
    top = np.argsort(-similarity, axis=1, kind="stable")[:, :8]
    weights = np.clip(np.take_along_axis(similarity, top, 1), 0, None)[:, :, None]
    weights = weights * ~np.isnan(scores[top])
    expected = (weights * np.nan_to_num(scores[top])).sum(1) / weights.sum(1)
    np.testing.assert_allclose(store.attribution(unmeasured), expected, rtol=1e-4, atol=1e-5)
    assert not store.is_measured(unmeasured).any()
    # Measured cells keep their measured means; half-scored rows estimate the missing cell.
    measured_cells = store.is_measured(measured)
    np.testing.assert_array_equal(measured_cells, ~np.isnan(scores))
    values = store.attribution(measured)
    np.testing.assert_allclose(values[measured_cells], scores[measured_cells], rtol=1e-6)
    assert np.isfinite(values).all()


def test_estimates_follow_new_measurements(fresh_store: BehaviorStore) -> None:
    store = fresh_store
    num_behaviors = len(store.behaviors)
    store.record_attribution(np.arange(0, 1200, 2), np.ones((600, num_behaviors)))
    store.refresh_estimates()
    np.testing.assert_allclose(store.attribution([1, 3]), 1.0, rtol=1e-6)
    # Every even row measured again with -3: means become -1, estimates follow after refresh.
    store.record_attribution(np.arange(0, 1200, 2), np.full((600, num_behaviors), -3.0))
    np.testing.assert_allclose(store.attribution([1, 3]), 1.0, rtol=1e-6)  # stale until refresh
    assert store.refresh_estimates(rows=[1, 3]) == 2
    np.testing.assert_allclose(store.attribution([1, 3]), -1.0, rtol=1e-6)


def test_without_neighbours_the_estimate_is_the_measured_mean() -> None:
    similarities = np.array([[0.9, -0.2], [-0.5, -0.1]], dtype=np.float32)
    rows = np.array([[4, -1], [4, 5]])

    def lookup(found: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        means = np.where(found[:, None] == 4, [[2.0, 7.0]], [[5.0, 5.0]])
        return means, np.ones((len(found), 2), dtype=bool)

    estimate = weighted_estimate(similarities, rows, lookup, fallback=np.array([0.5, -0.5]))
    np.testing.assert_allclose(estimate, [[2.0, 7.0], [0.5, -0.5]])


def test_one_writer_at_a_time(fresh_store: BehaviorStore) -> None:
    store = fresh_store
    num_behaviors = len(store.behaviors)
    store.record_attribution([0], np.ones((1, num_behaviors)))
    second = BehaviorStore.open(store.path)
    assert isinstance(second, BehaviorStore)
    second.affinity([0])  # reading is always allowed
    with pytest.raises(StoreError, match="writer.lock: another handle or process is writing"):
        second.record_attribution([1], np.ones((1, num_behaviors)))
    store.close()
    second.record_attribution([1], np.ones((1, num_behaviors)))  # the lock was given back
    second.close()
    with pytest.raises(StoreError, match="read-only"):
        StoreReader(store.path).tables.attribution.add(np.array([0]), np.ones((1, 4)))


def test_rows_left_mid_update_by_a_crashed_writer(fresh_store: BehaviorStore) -> None:
    store = fresh_store
    path = store.path
    store.close()
    seq = np.load(path / "attribution_seq.npy", mmap_mode="r+")
    seq[[5, 9]] += 1  # what a writer killed between its two increments leaves behind
    seq.flush()
    del seq
    reopened = BehaviorStore.open(path)
    assert isinstance(reopened, BehaviorStore)
    with pytest.raises(StoreError, match="attribution_seq.npy: 2 rows were mid-update"):
        reopened.record_attribution([1], np.ones((1, 4)))
    reopened.close()
    repaired = BehaviorStore.open(path, repair=True)
    assert isinstance(repaired, BehaviorStore)
    repaired.record_attribution([1], np.ones((1, 4)))
    repaired.attribution([5, 9])
    repaired.close()


def test_snapshot_and_restore(fresh_store: BehaviorStore, tmp_path: Path) -> None:
    store = fresh_store
    rng = np.random.default_rng(2)
    store.record_attribution(np.arange(100), rng.normal(size=(100, 4)))
    store.refresh_estimates()
    snapshot = tmp_path / "attribution-snapshot"
    store.snapshot_attribution(snapshot)
    before = store.attribution(np.arange(store.num_rows))
    store.record_attribution(np.arange(50, 300), rng.normal(size=(250, 4)))
    store.refresh_estimates()
    assert not np.array_equal(store.attribution(np.arange(store.num_rows)), before)
    store.restore_attribution(snapshot)
    np.testing.assert_array_equal(store.attribution(np.arange(store.num_rows)), before)
    assert store.is_measured(np.arange(store.num_rows)).any(axis=1).sum() == 100
