"""Stage transitions and the driver the trainer calls on step boundaries."""

from __future__ import annotations

import textwrap

import pytest
from policy_support import BEHAVIORS

from policies import CurriculumDriver, StageTracker, load_policy_text


def stages_of(text: str):
    return load_policy_text(textwrap.dedent(text), BEHAVIORS).stages


def test_steps_tokens_and_the_last_stage() -> None:
    tracker = StageTracker(stages_of("""\
        stages:
          - {name: a, until: {steps: 10}}
          - {name: b, until: {tokens: 1000}}
          - {name: c}
    """))
    assert [tracker.update(s, s * 10) for s in range(0, 10)] == [0] * 10
    assert tracker.update(10, 100) == 1
    assert tracker.update(50, 1099) == 1  # 999 tokens into stage b
    assert tracker.update(51, 1100) == 2
    assert tracker.update(10**6, 10**9) == 2  # the last stage never ends
    history = tracker.history
    assert [(t.stage, t.step, t.tokens, t.reason) for t in history] == [
        (0, 0, 0, "start"), (1, 10, 100, "steps >= 10"), (2, 51, 1100, "tokens >= 1000")]


def test_metric_condition_with_minimum_and_maximum() -> None:
    spec = """\
        stages:
          - until: {when: probe_loss.values < 2.1, min_steps: 5, max_steps: 20}
          - {}
    """
    tracker = StageTracker(stages_of(spec))
    assert tracker.update(3, 0, {"probe_loss/values": 1.0}) == 0  # before min_steps
    assert tracker.update(4, 0, {}) == 0  # not logged yet: NaN, false
    assert tracker.update(5, 0, {"probe_loss/values": 2.5}) == 0
    assert tracker.update(6, 0, {"probe_loss.values": 2.0}) == 1  # either key style
    assert tracker.history[-1].reason == "when: probe_loss.values < 2.1"
    tracker = StageTracker(stages_of(spec))
    assert tracker.update(19, 0, {"probe_loss/values": 3.0}) == 0
    assert tracker.update(20, 0, {"probe_loss/values": 3.0}) == 1
    assert tracker.history[-1].reason == "max_steps 20"


def test_progress_names_in_exit_conditions() -> None:
    tracker = StageTracker(stages_of("""\
        stages:
          - until: {when: "stage_steps >= 3 and stage_tokens > 10"}
          - until: {when: "step >= 100 or stage_tokens >= 50"}
          - {}
    """))
    assert tracker.update(2, 100) == 0
    assert tracker.update(3, 100) == 1
    assert tracker.update(4, 149) == 1
    assert tracker.update(5, 150) == 2


def test_one_transition_per_update_and_stages_are_not_skipped() -> None:
    tracker = StageTracker(stages_of("""\
        stages:
          - until: {steps: 1}
          - until: {steps: 1}
          - {}
    """))
    assert tracker.update(100, 0) == 1
    assert tracker.update(100, 0) == 1  # stage 1 began at step 100: 0 steps in it
    assert tracker.update(101, 0) == 2


def test_the_same_observations_give_the_same_stages() -> None:
    spec = stages_of("""\
        stages:
          - until: {when: probe_loss.values < 2, min_steps: 2}
          - until: {steps: 3}
          - {}
    """)
    observations = [(s, s * 7, {"probe_loss/values": 3.0 - s / 4}) for s in range(20)]
    runs = []
    for _ in range(2):
        tracker = StageTracker(spec)
        runs.append([tracker.update(*o) for o in observations])
    assert runs[0] == runs[1]
    assert runs[0][-1] == 2


def test_state_dict_round_trip_resumes_exactly() -> None:
    spec = stages_of("stages: [{until: {steps: 5}}, {until: {steps: 5}}, {}]")
    tracker = StageTracker(spec)
    for step in range(7):
        tracker.update(step, step)
    resumed = StageTracker(spec)
    resumed.load_state_dict(tracker.state_dict())
    assert resumed.history == tracker.history
    assert [resumed.update(s, s) for s in range(7, 12)] == \
        [tracker.update(s, s) for s in range(7, 12)]


def test_steps_must_not_go_backwards() -> None:
    tracker = StageTracker(stages_of("stages: [{}]"))
    tracker.update(5, 0)
    with pytest.raises(ValueError, match="backwards"):
        tracker.update(4, 0)


def test_driver_publishes_stage_and_metrics() -> None:
    policy = load_policy_text("stages: [{until: {steps: 2}}, {}]", BEHAVIORS)
    driver = CurriculumDriver(policy)
    state = driver.advance(1, 10, {"probe_loss/values": 3.0})
    assert (state.step, state.tokens, state.stage) == (1, 10, 0)
    assert state.metrics["probe_loss/values"] == 3.0
    state = driver.advance(2, 20, {})
    assert state.stage == 1
    resumed = CurriculumDriver(policy)
    resumed.load_state_dict(driver.state_dict())
    assert resumed.history == driver.history


def test_tracker_pickles_with_its_history() -> None:
    import pickle

    tracker = StageTracker(stages_of("stages: [{until: {when: probe_loss.values < 1}}, {}]"))
    copy = pickle.loads(pickle.dumps(tracker))
    assert copy.update(1, 1, {"probe_loss/values": 0.5}) == 1
    assert copy.history == (*tracker.history, copy.history[-1])
