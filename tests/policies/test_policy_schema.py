"""Loading policy files: what is accepted, and errors that name the YAML path and line."""

from __future__ import annotations

import textwrap

import pytest
from policy_support import BEHAVIORS

from policies import PolicyError, load_policy, load_policy_text
from policies.schema import Delay, Downweight, DropRule, Prioritize, Sample, Tag, Upweight

VALID = textwrap.dedent("""\
    name: demo
    seed: 3
    max_weight: 4
    stages:
      - name: early
        until: {steps: 100, min_steps: 10}
        rules:
          - upweight: 2.0
            when: pct.affinity.values >= 0.7
          - delay: {until_stage: late}
            when: affinity.situational_awareness > affinity.values
      - name: late
        rules:
          - prioritize: pct.affinity.values
""")


def load(text: str):
    return load_policy_text(textwrap.dedent(text), BEHAVIORS)


def error_of(text: str) -> PolicyError:
    with pytest.raises(PolicyError) as caught:
        load(text)
    return caught.value


def test_valid_policy_loads_into_typed_stages() -> None:
    policy = load(VALID)
    spec = policy.spec
    assert (spec.name, spec.seed, spec.max_weight, spec.type) == ("demo", 3, 4.0, "staged")
    early, late = spec.stages
    assert early.exit.steps == 100 and early.exit.min_steps == 10
    assert isinstance(early.rules[0], Upweight) and early.rules[0].factor == 2.0
    assert isinstance(early.rules[1], Delay) and early.rules[1].until_stage == 1
    assert early.rules[1].label == "stages[0].rules[1] (delay)"
    assert late.exit is None and isinstance(late.rules[0], Prioritize)
    assert policy.percentile_families == ("pct.affinity",)


def test_every_rule_kind_parses() -> None:
    policy = load("""\
        stages:
          - until: {tokens: 1000000}
            rules:
              - {downweight: 0.5, when: measured.values}
              - {tag: revise, name: revise_band, when: "pct.attribution.deception > 0.9"}
              - {drop: "filter: deception", when: attribution.deception > 3}
              - {sample: 0.25}
              - {delay: {for_steps: 50}, when: step < 10}
              - {delay: {until_step: 5000}}
              - {delay: {until_stage: 1}}
          - rules: []
    """)
    kinds = [type(rule) for rule in policy.spec.stages[0].rules]
    assert kinds == [Downweight, Tag, DropRule, Sample, Delay, Delay, Delay]
    assert policy.spec.stages[0].rules[1].label == "stages[0].rules[1] (tag: revise_band)"
    assert policy.spec.stages[1].name == "stage1"


def test_unknown_score_names_path_and_line() -> None:
    error = error_of("""\
        stages:
          - name: first
            until: {steps: 10}
            rules: []
          - name: second
            rules:
              - upweight: 2
                when: affinty.values > 0.5
    """)
    assert str(error).startswith("stages[1].rules[0].when: unknown score 'affinty.values'")
    assert "did you mean 'affinity.values'" in str(error)
    assert str(error).endswith("(line 8)")
    assert (error.path, error.line) == ("stages[1].rules[0].when", 8)


@pytest.mark.parametrize(("text", "path", "fragment"), [
    ("stages: []", "stages", "at least one stage"),
    ("stages: {}", "stages", "expected a list"),
    ("[1, 2]", "(file)", "must be a mapping"),
    ("stages:\n  - rules: []\n    colour: red", "stages[0].colour", "unknown key 'colour'"),
    ("stage:\n  - rules: []", "stage", "did you mean 'stages'"),
    ("seed: -1\nstages: [{rules: []}]", "seed", "between 0 and"),
    ("seed: 1.5\nstages: [{rules: []}]", "seed", "expected an integer"),
    ("seed: true\nstages: [{rules: []}]", "seed", "expected an integer"),
    ("max_weight: 0\nstages: [{rules: []}]", "max_weight", "must be in (0"),
    ("min_weight: 3\nmax_weight: 2\nstages: [{rules: []}]", "max_weight", "below min_weight"),
    ("stages: [{rules: [{upweight: 0.5}]}]", "stages[0].rules[0].upweight", "must be in [1"),
    ("stages: [{rules: [{upweight: .nan}]}]", "stages[0].rules[0].upweight", "finite"),
    ("stages: [{rules: [{downweight: 0}]}]", "stages[0].rules[0].downweight", "must be in (0"),
    ("stages: [{rules: [{sample: 1.5}]}]", "stages[0].rules[0].sample", "must be in [0, 1]"),
    ("stages: [{rules: [{upweight: 2, drop: x}]}]", "stages[0].rules[0]", "exactly one action"),
    ("stages: [{rules: [{when: step > 1}]}]", "stages[0].rules[0]", "needs one action"),
    ("stages: [{rules: [{drop: x, max_weight: 2}]}]", "stages[0].rules[0].max_weight",
     "only applies to upweight"),
    ("stages: [{rules: [{upweight: 2, max_weight: 50}]}]", "stages[0].rules[0].max_weight",
     "above the policy's max_weight"),
    ("stages: [{rules: [{drop: ''}]}]", "stages[0].rules[0].drop", "expected a reason"),
    ("stages: [{rules: [{prioritize: true}]}]", "stages[0].rules[0].prioritize",
     "number or an expression"),
    ("stages: [{rules: [{prioritize: len(x)}]}]", "stages[0].rules[0].prioritize",
     "function calls"),
    ("stages: [{rules: [{tag: 'two words'}]}]", "stages[0].rules[0].tag", "expected a tag"),
    ("stages: [{rules: [{drop: x, when: affinity.nonsense > 1}]}]", "stages[0].rules[0].when",
     "unknown behavior 'nonsense'"),
    ("stages: [{rules: [{drop: x, when: probe_loss.values > 1}]}]", "stages[0].rules[0].when",
     "is a logged metric"),
    ("stages: [{rules: [{drop: x, when: stage_steps > 1}]}]", "stages[0].rules[0].when",
     "only available in a stage's 'until'"),
    ("stages: [{rules: [{drop: x, when: [1]}]}]", "stages[0].rules[0].when",
     "expected an expression"),
    # stages that could never be reached, conditions that could never be evaluated
    ("stages: [{rules: []}, {rules: []}]", "stages[0]", "can never be reached"),
    ("stages: [{rules: [], until: {steps: 5}}]", "stages[0].until", "last stage never ends"),
    ("stages: [{until: {min_steps: 5}}, {rules: []}]", "stages[0].until", "no exit condition"),
    ("stages: [{until: {min_steps: 9, max_steps: 5}}, {}]", "stages[0].until.min_steps",
     "above max_steps"),
    ("stages: [{until: {steps: 9, max_steps: 5}}, {}]", "stages[0].until.steps",
     "never be reached"),
    ("stages: [{until: {when: affinity.values > 1}}, {}]", "stages[0].until.when",
     "document score, which a stage exit condition can never read"),
    ("stages: [{until: {when: probe_loss.valuez < 1}}, {}]", "stages[0].until.when",
     "unknown metric 'probe_loss.valuez'"),
    ("stages: [{until: {when: val_loss < 1}}, {}]", "stages[0].until.when",
     "declare extra logged metrics"),
    ("stages: [{until: {steps: 0}}, {}]", "stages[0].until.steps", "between 1 and"),
    ("stages: [{name: a, until: {steps: 1}}, {name: a}]", "stages[1].name", "duplicate stage"),
    ("stages: [{name: 'a b'}]", "stages[0].name", "expected a stage name"),
    ("stages: [{until: {steps: 1}, rules: [{delay: {until_stage: stage0}}]}, {}]",
     "stages[0].rules[0].delay.until_stage", "later stage than its own"),
    ("stages: [{until: {steps: 1}, rules: [{delay: {until_stage: relase}}]}, {name: release}]",
     "stages[0].rules[0].delay.until_stage", "did you mean 'release'"),
    ("stages: [{until: {steps: 1}, rules: [{delay: {until_stage: 5}}]}, {}]",
     "stages[0].rules[0].delay.until_stage", "between 0 and 1"),
    ("stages: [{rules: [{delay: {}}]}]", "stages[0].rules[0].delay", "exactly one of"),
    ("stages: [{rules: [{delay: {until_step: 5, for_steps: 2}}]}]", "stages[0].rules[0].delay",
     "exactly one of"),
    ("stages: [{rules: [{delay: {until_step: 0}}]}]", "stages[0].rules[0].delay.until_step",
     "between 1 and"),
    ("metrics: [bad name]\nstages: [{}]", "metrics[0]", "expected a metric name"),
    ("type: 3\nstages: [{}]", "type", "expected a policy type name"),
    ("type: nonexistent\nstages: [{}]", "type", "unknown policy type 'nonexistent'"),
    ("name: [x]\nstages: [{}]", "name", "expected a name"),
    ("stages: [{}]\nparams: {}", "params", "unknown key 'params'"),
    ("{1: 2, stages: [{}]}", "(file)", "keys must be strings"),
])
def test_mistakes_are_reported_at_their_path(text: str, path: str, fragment: str) -> None:
    error = error_of(text)
    assert error.path == path, str(error)
    assert fragment in error.message, str(error)
    assert str(error).startswith(f"{path}: ")


def test_metrics_declared_at_the_top_may_be_read_by_exit_conditions() -> None:
    policy = load("""\
        metrics: [val_loss]
        stages:
          - until: {when: val_loss < 3 and probe_loss.values < 2, max_steps: 100}
          - rules: []
    """)
    assert policy.spec.stages[0].exit.when.names == ("val_loss", "probe_loss.values")


def test_numbers_written_as_text_are_accepted() -> None:
    policy = load("stages: [{until: {steps: 1e6, tokens: '2_000'}}, {}]")
    assert policy.spec.stages[0].exit.steps == 1_000_000
    assert policy.spec.stages[0].exit.tokens == 2000


def test_garbage_yaml_reports_the_line() -> None:
    error = error_of("stages:\n  - rules: [\n  - oops: {\n")
    assert error.path == "(file)" and "invalid YAML" in error.message
    assert error.line is not None


def test_duplicate_keys_are_errors_not_silently_collapsed() -> None:
    error = error_of("stages: [{}]\nseed: 1\nseed: 2\n")
    assert (error.path, error.line) == ("seed", 3)
    assert "duplicate key" in error.message


def test_empty_file() -> None:
    assert "empty" in error_of("").message
    assert "empty" in error_of("# only a comment\n").message


def test_python_tags_are_refused_by_the_safe_loader() -> None:
    error = error_of("stages: !!python/object/apply:os.system ['true']")
    assert "invalid YAML" in error.message


def test_bad_timestamps_are_policy_errors() -> None:
    # PyYAML raises ValueError (not a YAMLError) for impossible dates.
    assert "invalid YAML" in error_of("name: 2001-13-45\nstages: [{}]").message


def test_file_errors_name_the_file(tmp_path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("stages: [{rules: [{upweight: 0.1}]}]\n")
    with pytest.raises(PolicyError) as caught:
        load_policy(path, BEHAVIORS)
    assert str(caught.value).startswith(f"{path}: stages[0].rules[0].upweight")
    with pytest.raises(PolicyError, match="no policy file"):
        load_policy(tmp_path / "missing.yaml", BEHAVIORS)
    with pytest.raises(PolicyError, match="no policy file"):
        load_policy("not_a_builtin", BEHAVIORS)


def test_behaviors_come_from_the_store(memory_store) -> None:
    policy = load_policy_text("stages: [{rules: [{drop: x, when: affinity.values > 2}]}]",
                              memory_store)
    assert policy.spec.behaviors == BEHAVIORS
    with pytest.raises(PolicyError, match="unknown behavior 'values'"):
        load_policy_text("stages: [{rules: [{drop: x, when: affinity.values > 2}]}]",
                         ("honesty", "deception"))


def test_builtin_policies_load_by_name(memory_store) -> None:
    from policies import builtin_policy_names

    names = builtin_policy_names()
    assert {"values_first", "uniform", "threshold_filter", "bandit"} <= set(names)
    for name in names:
        policy = load_policy(name, memory_store)
        assert policy.spec.name == name
