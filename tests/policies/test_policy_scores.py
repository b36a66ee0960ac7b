"""Percentiles within the store, and reading scores for rows."""

from __future__ import annotations

import numpy as np
from policy_support import MemoryStore

from policies import CurriculumState, PercentileTable, StoreScores
from policies.scores import ScoreLayout


def brute_force(column: np.ndarray, x: float) -> float:
    column = column[~np.isnan(column)]
    if np.isnan(x) or not len(column):
        return float("nan")
    return ((column < x).sum() + (column == x).sum() / 2) / len(column)


def test_percentiles_match_the_definition() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(size=(500, 3)).astype(np.float32)
    values[::5, 1] = 0.25  # ties
    values[::7, 2] = np.nan  # missing scores are left out
    values[:4, 0] = -0.0
    values[4:8, 0] = 0.0
    table = PercentileTable.from_values(values)
    queries = np.concatenate([values[:100], rng.normal(size=(40, 3)).astype(np.float32) * 4,
                              np.array([[np.inf, -np.inf, np.nan]], np.float32)])
    expected = np.array([[brute_force(values[:, b], q[b]) for b in range(3)] for q in queries])
    got = table.percentile(queries)
    np.testing.assert_array_equal(got, expected)
    one_by_one = np.array([table.percentile_one(q) for q in queries])
    np.testing.assert_array_equal(one_by_one, expected)
    assert np.nanmin(got) >= 0 and np.nanmax(got) <= 1


def test_empty_columns_give_nan() -> None:
    table = PercentileTable.from_values(np.full((4, 2), np.nan, np.float32))
    assert np.isnan(table.percentile(np.ones((3, 2)))).all()
    assert all(np.isnan(table.percentile_one(np.ones(2))))


def test_store_scores_reads_rows_and_refreshes() -> None:
    store = MemoryStore(num_rows=50)
    scores = StoreScores(store, ("pct.affinity", "pct.attribution"))
    batch = scores.batch([3, 1, 4])
    np.testing.assert_array_equal(batch.affinity, store.affinity(np.array([3, 1, 4])))
    top = int(np.argmax(store.affinity(np.arange(50))[:, 0]))
    assert scores.batch([top]).pct_affinity[0, 0] == 1 - 0.5 / 50
    one = scores.document(4)
    np.testing.assert_array_equal(one.pct_attribution, batch.pct_attribution[2])
    before = scores.batch([4]).pct_attribution.copy()
    store._attribution[:] = -store._attribution  # attribution drifted: ranks flip
    scores.refresh()
    np.testing.assert_allclose(scores.batch([4]).pct_attribution, 1 - before)


def test_layout_vector_and_matrix_agree() -> None:
    store = MemoryStore(num_rows=20)
    layout = ScoreLayout(store.behaviors)
    scores = StoreScores(store, ("pct.affinity",)).batch(np.arange(20))
    state = CurriculumState(step=5, tokens=7, stage=1)
    matrix = layout.matrix(scores, state)
    for i in range(20):
        np.testing.assert_array_equal(np.array(layout.vector(scores.document(i), state)),
                                      matrix[i])
    assert matrix[0, layout.slots["tokens"]] == 7
    assert np.isnan(matrix[0, layout.slots["pct.attribution.values"]])
