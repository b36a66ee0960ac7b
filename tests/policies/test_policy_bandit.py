"""The adaptive bandit policy: rewarded by probe-loss improvement, deterministic, shared through
the curriculum state."""

from __future__ import annotations

import numpy as np
import pytest
from policy_support import BEHAVIORS, MemoryStore

from policies import (
    CurriculumDriver,
    CurriculumState,
    PolicyError,
    PolicyRunner,
    load_policy,
    load_policy_text,
)


def losses(values: float, others: float) -> dict[str, float]:
    return {"probe_loss/values": values, "probe_loss/situational_awareness": others,
            "probe_loss/neutral": others, "probe_loss/deception": others}


def test_improving_behavior_gains_weight(memory_store: MemoryStore) -> None:
    policy = load_policy("bandit", memory_store)
    driver = CurriculumDriver(policy)
    state = driver.advance(0, 0, losses(4.0, 4.0))
    assert state.metrics["bandit/weight/values"] == pytest.approx(1.0)
    for step in range(1, 6):  # values' probe loss falls, the others stay flat
        state = driver.advance(step, step * 100, losses(4.0 - 0.3 * step, 4.0))
    weights = {b: state.metrics[f"bandit/weight/{b}"] for b in BEHAVIORS}
    assert weights["values"] > 1.5 > weights["neutral"]
    assert weights["neutral"] == weights["deception"]

    runner = PolicyRunner(policy, memory_store)
    rows = np.arange(memory_store.num_rows)
    decisions = runner.decide_rows(rows, state)
    values_rows = rows[memory_store.category == 0]
    assert all(decisions[int(i)].weight == pytest.approx(weights["values"])
               and decisions[int(i)].rule == "bandit (arm values)" for i in values_rows[:20])
    # workers that only see the published state decide the same (no shared object needed)
    fresh = PolicyRunner(load_policy("bandit", memory_store), memory_store)
    assert list(fresh.decide_rows(rows, state)) == list(decisions)
    assert list(decisions) == [runner.decide_row(int(r), state) for r in rows]


def test_same_metric_history_gives_same_weights(memory_store: MemoryStore) -> None:
    history = [losses(3.0 + np.sin(s), 3.0 + np.cos(s)) for s in range(30)]
    results = []
    for _ in range(2):
        driver = CurriculumDriver(load_policy("bandit", memory_store))
        results.append([dict(driver.advance(s, s, m).metrics) for s, m in enumerate(history)])
    assert results[0] == results[1]


def test_state_dict_resumes(memory_store: MemoryStore) -> None:
    policy = load_policy("bandit", memory_store)
    for step in range(5):
        policy.observe(step, step, losses(3.0 - step * 0.1, 3.0))
    copy = load_policy("bandit", memory_store)
    copy.load_state_dict(policy.state_dict())
    assert copy.observe(5, 5, losses(2.0, 3.0)) == policy.observe(5, 5, losses(2.0, 3.0))


def test_arms_and_params_are_validated() -> None:
    policy = load_policy_text("type: bandit\nparams: {arms: [values, deception]}", BEHAVIORS)
    assert policy.arms == ("values", "deception")
    neutral_doc_state = CurriculumState()
    from policies.scores import DocumentScores

    doc = DocumentScores(0, np.array([0.1, 0.1, 0.9, 0.1], np.float32), np.zeros(4, np.float32),
                         np.zeros(4, bool))
    assert policy.decide(doc, neutral_doc_state).rule == "bandit (not an arm)"
    for text, path in [
        ("type: bandit\nparams: {arms: [valuez]}", "params.arms[0]"),
        ("type: bandit\nparams: {arms: []}", "params.arms"),
        ("type: bandit\nparams: {learning_rate: 0}", "params.learning_rate"),
        ("type: bandit\nparams: {exploration: 2}", "params.exploration"),
        ("type: bandit\nparams: {min_weight: 3, max_weight: 2}", "params.max_weight"),
        ("type: bandit\nparams: [1]", "params"),
        ("type: bandit\nparams: {rate: 1}", "params.rate"),
    ]:
        with pytest.raises(PolicyError) as caught:
            load_policy_text(text, BEHAVIORS)
        assert caught.value.path == path, str(caught.value)
