"""Affinity as the prior, attribution as the evidence: effect, trust, blend in the language."""

from __future__ import annotations

import numpy as np
from policy_support import BEHAVIORS, MemoryStore

from policies import PolicyRunner, load_policy
from policies.decisions import DEFER
from policies.evidence import (
    ESTIMATE_WEIGHT,
    PRIOR_STRENGTH,
    behavior_scale,
    blend,
    relative_effect,
    trust,
)
from policies.percentiles import PercentileTable
from policies.scores import StoreScores
from policies.state import CurriculumState


def test_effect_is_standardised_across_behaviors_and_oriented_to_lowering_the_probe_loss() -> None:
    scores = np.array([[-4.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [-40.0, 0.0, 0.0, 0.0]])
    effect = relative_effect(scores)
    assert effect[0, 0] > 0 and np.all(effect[0, 1:] < 0)  # lowers probe 0's loss the most
    assert np.allclose(effect[0], effect[2])  # scale-free: 10x the learning rate, same effect
    assert np.all(effect[1] == 0)  # nothing known
    assert np.allclose(effect[0].mean(), 0) and np.isclose(effect[0].std(), 1)


def test_a_probe_set_with_a_large_gradient_does_not_lean_every_document_its_way() -> None:
    # Probe set 0's scores are 100x the others' (a hard probe set has a large gradient): on raw
    # scores every document "acts like" behavior 0; divided by each behavior's scale in the
    # store, each document leans towards the behavior it really lowers the most.
    rng = np.random.default_rng(0)
    own = rng.integers(0, 4, 400)
    raw = rng.normal(-1.0, 0.3, (400, 4))  # every document lowers every probe loss a little
    raw[np.arange(400), own] -= 1.0  # and its own the most
    raw[:, 0] *= 100.0
    measured = np.ones_like(raw, bool)
    scale = behavior_scale(raw, measured)
    assert np.allclose(scale[1:], scale[1], rtol=0.2) and scale[0] > 50 * scale[1]
    assert (relative_effect(raw).argmax(axis=1) == 0).mean() > 0.9
    assert (relative_effect(raw, scale).argmax(axis=1) == own).mean() > 0.9
    assert np.all(behavior_scale(raw, np.zeros_like(measured)) == 1.0)  # nothing measured yet


def test_the_policy_reads_effect_under_the_stores_behavior_scale() -> None:
    store = MemoryStore(num_rows=300, seed=1)
    store._attribution[:, 0] *= 1000.0
    scores = StoreScores(store, ("pct.effect",))
    rows = np.arange(300)
    expected_scale = behavior_scale(store.attribution(rows), store.is_measured(rows))
    assert np.allclose(scores.effect_scale, expected_scale)
    assert np.allclose(scores.batch(rows).effect, relative_effect(store.attribution(rows),
                                                                  expected_scale))
    assert np.allclose(scores.document(7).effect, scores.batch(rows).effect[7])
    store._attribution[:, 1] *= 10.0  # new measurements arrive: the scale follows on refresh
    scores.refresh()
    assert np.isclose(scores.effect_scale[1], 10.0 * expected_scale[1], rtol=1e-5)


def test_trust_shrinks_by_measurement_count() -> None:
    attribution = np.array([[1.0, 2.0], [1.0, 2.0], [0.5, 0.1], [0.0, 0.0]])
    measured = np.array([[True, True], [True, True], [False, False], [False, False]])
    counts = np.array([[1, 1], [3, 3], [0, 0], [0, 0]])
    weight = trust(attribution, measured, counts)
    assert np.allclose(weight[0], 1 / (1 + PRIOR_STRENGTH))
    assert np.allclose(weight[1], 3 / (3 + PRIOR_STRENGTH))
    assert np.allclose(weight[2], ESTIMATE_WEIGHT / (ESTIMATE_WEIGHT + PRIOR_STRENGTH))
    assert np.all(weight[3] == 0)  # no measurement, no estimate: the prior alone
    assert np.allclose(blend(np.array([0.2]), np.array([0.8]), np.array([0.25])), [0.35])


class EvidenceStore(MemoryStore):
    """Nothing measured at first; ``measure`` writes attribution that contradicts affinity."""

    def __init__(self) -> None:
        super().__init__(num_rows=200, seed=3)
        self._attribution = np.zeros_like(self._attribution)
        self._measured = np.zeros_like(self._measured)
        self.counts = np.zeros(self._measured.shape, np.int64)

    def measure(self, rows: np.ndarray, behavior: int) -> None:
        """These rows are measured to lower behavior ``behavior``'s probe loss the most."""
        self._attribution[rows] = 0.0
        self._attribution[rows, behavior] = -1.0
        self._measured[rows] = True
        self.counts[rows] = 1

    def attribution_counts(self, rows: np.ndarray) -> np.ndarray:
        return self.counts[np.asarray(rows)]


POLICY = """
name: evidence
stages:
  - name: one
    until: {steps: 10}
    rules:
      - name: hold
        delay: {until_stage: two}
        when: blend.situational_awareness >= 0.7
  - name: two
    rules: []
"""


def test_blend_is_the_affinity_prior_until_evidence_arrives_then_moves(tmp_path) -> None:
    store = EvidenceStore()
    path = tmp_path / "evidence.yaml"
    path.write_text(POLICY)
    policy = load_policy(str(path), store)
    assert set(policy.percentile_families) == {"pct.affinity", "pct.effect"}
    runner = PolicyRunner(policy, store)
    rows = np.arange(store.num_rows)
    state = CurriculumState(step=0)
    sa = BEHAVIORS.index("situational_awareness")
    pct_affinity = PercentileTable.from_values(store.affinity(rows)).percentile(store.affinity(rows))
    before = runner.decide_rows(rows, state)
    assert np.array_equal(before.kind == DEFER, pct_affinity[:, sa] >= 0.7)  # the prior alone
    # Documents that look like values (SA affinity percentile 0.45-0.65) are measured to push SA.
    looks_values = rows[(pct_affinity[:, sa] >= 0.45) & (pct_affinity[:, sa] < 0.65)][:20]
    store.measure(looks_values, sa)
    runner.refresh()  # percentiles follow the new measurements
    after = runner.decide_rows(looks_values, state)
    assert np.all(after.kind == DEFER)  # evidence overrides the prior
    batch = runner.scores.batch(looks_values)
    matrix = policy.layout.matrix(batch, state)
    blend_slot = policy.layout.slots["blend.situational_awareness"]
    trust_slot = policy.layout.slots["trust.situational_awareness"]
    assert np.allclose(matrix[:, trust_slot], 1 / (1 + PRIOR_STRENGTH))
    assert np.all(matrix[:, blend_slot] > pct_affinity[looks_values, sa])  # moved towards SA
    # The one-document path decides exactly like the batch path.
    for index, row in enumerate(looks_values[:5]):
        vector = policy.layout.vector(runner.scores.document(int(row)), state)
        assert np.allclose(vector, matrix[index], equal_nan=True)
