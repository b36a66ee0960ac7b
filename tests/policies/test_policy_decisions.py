"""What staged policies decide: rule semantics, one-vs-batch agreement, determinism."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
from policy_support import BEHAVIORS, MemoryStore

from policies import (
    CurriculumState,
    DecisionBatch,
    Defer,
    Drop,
    Emit,
    PolicyRunner,
    load_policy,
    load_policy_text,
)
from policies.scores import DocumentScores, ScoreBatch

STATE = CurriculumState(step=100, tokens=10_000, stage=0)


def policy_of(text: str, behaviors=BEHAVIORS):
    return load_policy_text(textwrap.dedent(text), behaviors)


def document(affinity=(0.5, 0.1, 0.1, 0.1), attribution=(0.0, 0.0, 0.0, 0.0),
             measured=(False,) * 4, row: int = 0) -> DocumentScores:
    return DocumentScores(row, np.array(affinity, np.float32), np.array(attribution, np.float32),
                          np.array(measured))


def test_no_rule_emits_at_weight_one() -> None:
    policy = policy_of("stages: [{rules: []}]")
    assert policy.decide(document(), STATE) == Emit(1.0, 0.0, "stages[0] (default)")


def test_modifiers_accumulate_and_name_every_rule() -> None:
    policy = policy_of("""\
        max_weight: 5
        stages:
          - rules:
              - {upweight: 2, when: affinity.values > 0.4}
              - {upweight: 2, max_weight: 3, when: affinity.values > 0.4}
              - {prioritize: affinity.values * 10}
              - {prioritize: 1}
              - {tag: revise, when: affinity.values > 0.4}
              - {tag: revise}
              - {downweight: 0.5, when: affinity.values > 0.9}
    """)
    decision = policy.decide(document(), STATE)
    assert decision == Emit(
        3.0, 6.0,
        "stages[0].rules[0] (upweight) + stages[0].rules[1] (upweight) + "
        "stages[0].rules[2] (prioritize) + stages[0].rules[3] (prioritize) + "
        "stages[0].rules[4] (tag) + stages[0].rules[5] (tag)",
        ("revise",))


def test_weights_are_clamped_to_the_policy_range() -> None:
    policy = policy_of("""\
        min_weight: 0.3
        max_weight: 4
        stages: [{rules: [{upweight: 10}, {downweight: 0.01}]}]
    """)
    assert policy.decide(document(), STATE).weight == 0.3
    policy = policy_of("max_weight: 4\nstages: [{rules: [{upweight: 10}]}]")
    assert policy.decide(document(), STATE).weight == 4.0


def test_first_terminal_rule_decides() -> None:
    policy = policy_of("""\
        stages:
          - until: {steps: 10}
            rules:
              - {upweight: 2}
              - {drop: "filter: values", when: affinity.values > 0.4}
              - {delay: {until_stage: 1}}
          - rules: []
    """)
    assert policy.decide(document(), STATE) == Drop("filter: values",
                                                    "stages[0].rules[1] (drop)")
    assert policy.decide(document(affinity=(0.1,) * 4), STATE) == Defer(
        until_stage=1, rule="stages[0].rules[2] (delay)")


def test_delays_by_step() -> None:
    policy = policy_of("""\
        stages:
          - rules:
              - {delay: {until_step: 150}, when: affinity.values > 0.4}
              - {delay: {for_steps: 25}}
    """)
    assert policy.decide(document(), STATE) == Defer(until_step=150,
                                                     rule="stages[0].rules[0] (delay)")
    # once step 150 has passed, the fixed-step delay holds nothing back any more
    later = CurriculumState(step=150, tokens=0, stage=0)
    assert policy.decide(document(), later) == Defer(until_step=175,
                                                     rule="stages[0].rules[1] (delay)")
    assert Defer(until_step=175).is_due(stage=0, step=175)
    assert not Defer(until_stage=2).is_due(stage=1, step=10**9)


def test_rules_of_the_current_stage_apply() -> None:
    policy = policy_of("""\
        stages:
          - {until: {steps: 10}, rules: [{upweight: 2}]}
          - {rules: [{downweight: 0.5}]}
    """)
    assert policy.decide(document(), CurriculumState(stage=0)).weight == 2.0
    assert policy.decide(document(), CurriculumState(stage=1)).weight == 0.5
    assert policy.decide(document(), CurriculumState(stage=7)).weight == 0.5  # past the end


def test_rules_can_read_the_curriculum_state() -> None:
    policy = policy_of("stages: [{rules: [{upweight: 2, when: step >= 100 and tokens > 5}]}]")
    assert policy.decide(document(), STATE).weight == 2.0
    assert policy.decide(document(), CurriculumState(step=99, tokens=10)).weight == 1.0


def test_sample_keeps_about_the_requested_share_and_names_the_reason(memory_store) -> None:
    policy = policy_of("seed: 5\nstages: [{rules: [{sample: 0.3}]}]")
    runner = PolicyRunner(policy, memory_store)
    decisions = runner.decide_rows(np.arange(memory_store.num_rows), STATE)
    kept = decisions.counts()["emit"] / len(decisions)
    assert 0.22 < kept < 0.38
    dropped = [d for d in decisions if isinstance(d, Drop)]
    assert dropped[0].reason == "sample: keep 0.3"
    assert dropped[0].rule == "stages[0].rules[0] (sample)"


FULL = """\
    seed: 11
    min_weight: 0.2
    max_weight: 6
    stages:
      - until: {steps: 10}
        rules:
          - {upweight: 2.5, max_weight: 4, when: pct.affinity.values >= 0.6}
          - {downweight: 0.5, when: "measured.deception == 1 and attribution.deception > 0"}
          - {prioritize: "pct.affinity.values - pct.attribution.deception / 2"}
          - {tag: revise, when: pct.attribution.deception > 0.8}
          - {drop: "filter", when: pct.affinity.deception > 0.95}
          - {sample: 0.7, when: affinity.neutral > 0.4}
          - {delay: {until_stage: 1}, when: affinity.situational_awareness > 0.45}
          - {delay: {for_steps: 20}, when: "attribution.values / attribution.neutral > 3"}
          - {delay: {until_step: 50}, when: attribution.values < -1.5}
      - rules:
          - {upweight: 1.5, when: "not measured.values"}
"""


@pytest.mark.parametrize("stage", [0, 1])
@pytest.mark.parametrize("step", [0, 60])
def test_one_at_a_time_equals_the_batch_path(memory_store: MemoryStore, stage: int,
                                             step: int) -> None:
    policy = policy_of(FULL)
    runner = PolicyRunner(policy, memory_store)
    state = CurriculumState(step=step, tokens=step * 100, stage=stage)
    rows = np.arange(memory_store.num_rows)
    batch = runner.decide_rows(rows, state)
    singles = [runner.decide_row(int(r), state) for r in rows]
    assert list(batch) == singles
    kinds = {type(d).__name__ for d in singles}
    assert kinds == ({"Emit", "Defer", "Drop"} if stage == 0 else {"Emit"})


def test_decisions_do_not_depend_on_batching_or_order(memory_store: MemoryStore) -> None:
    policy = policy_of(FULL)
    runner = PolicyRunner(policy, memory_store)
    rows = np.arange(memory_store.num_rows)
    whole = list(runner.decide_rows(rows, STATE))
    shuffled = np.random.default_rng(0).permutation(rows)
    pieces: dict[int, object] = {}
    for chunk in np.array_split(shuffled, 7):  # as if seven workers saw the rows in any order
        for row, decision in zip(chunk, runner.decide_rows(chunk, STATE), strict=True):
            pieces[int(row)] = decision
    assert [pieces[int(r)] for r in rows] == whole


def test_decisions_are_deterministic_for_a_seed(memory_store: MemoryStore) -> None:
    rows = np.arange(memory_store.num_rows)
    first = list(PolicyRunner(policy_of(FULL), memory_store).decide_rows(rows, STATE))
    again = list(PolicyRunner(policy_of(FULL), memory_store).decide_rows(rows, STATE))
    assert first == again
    reseeded = list(PolicyRunner(policy_of(FULL.replace("seed: 11", "seed: 12")),
                                 memory_store).decide_rows(rows, STATE))
    assert reseeded != first  # the sample rule draws differently
    for a, b in zip(first, reseeded, strict=True):
        if a != b:  # only the sample rule draws, so only its verdicts may differ
            assert any(isinstance(d, Drop) and "(sample)" in d.rule for d in (a, b))


def test_percentiles_are_required_when_read(memory_store: MemoryStore) -> None:
    policy = policy_of("stages: [{rules: [{upweight: 2, when: pct.affinity.values > 0.5}]}]")
    batch = ScoreBatch(np.arange(3), memory_store.affinity(np.arange(3)),
                       memory_store.attribution(np.arange(3)),
                       memory_store.is_measured(np.arange(3)))
    with pytest.raises(ValueError, match="percentiles"):
        policy.decide_batch(batch, STATE)


def test_runner_refuses_a_store_with_other_behaviors(memory_store: MemoryStore) -> None:
    policy = policy_of("stages: [{rules: []}]", behaviors=("values", "deception"))
    with pytest.raises(ValueError, match="behaviors"):
        PolicyRunner(policy, memory_store)


def test_builtin_policies_decide_the_same_one_by_one_and_in_batches(
        memory_store: MemoryStore) -> None:
    rows = np.arange(memory_store.num_rows)
    for name in ("values_first", "uniform", "threshold_filter", "bandit"):
        runner = PolicyRunner(load_policy(name, memory_store), memory_store)
        batch = runner.decide_rows(rows, STATE)
        assert list(batch) == [runner.decide_row(int(r), STATE) for r in rows], name


def test_decision_batch_round_trip() -> None:
    decisions = [Emit(2.0, 1.0, "a", ("t",)), Defer(until_stage=2, rule="b"),
                 Defer(until_step=9, rule="c"), Drop("why", "d")]
    batch = DecisionBatch.from_decisions([4, 5, 6, 7], decisions)
    assert list(batch) == decisions
    assert batch.counts() == {"emit": 1, "defer": 2, "drop": 1}
    assert batch.rule_counts() == {"a": 1, "b": 1, "c": 1, "d": 1}


def test_decision_types_check_themselves() -> None:
    with pytest.raises(ValueError):
        Defer()
    with pytest.raises(ValueError):
        Defer(until_stage=1, until_step=2)
    with pytest.raises(ValueError):
        Emit(weight=float("nan"))
    with pytest.raises(ValueError):
        Emit(weight=-1.0)


def test_policies_and_runners_pickle_for_spawned_workers(memory_store: MemoryStore) -> None:
    import pickle

    rows = np.arange(memory_store.num_rows)
    for policy in (policy_of(FULL), load_policy("bandit", memory_store)):
        runner = PolicyRunner(policy, memory_store)
        copy = pickle.loads(pickle.dumps(runner))
        assert list(copy.decide_rows(rows, STATE)) == list(runner.decide_rows(rows, STATE))
    state = CurriculumState(step=3, tokens=4, stage=1, metrics={"probe_loss/values": 2.0})
    assert pickle.loads(pickle.dumps(state)) == state
