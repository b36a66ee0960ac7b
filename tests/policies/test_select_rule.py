"""The `select` rule: validation at load time with the YAML path, and how it chooses rows."""

from __future__ import annotations

import numpy as np
import pytest

from policies import PolicyError, load_policy, load_policy_text

BEHAVIORS = ("deception", "neutral", "situational_awareness", "values")

POLICY = """
name: sel
candidate_factor: 2
stages:
  - name: a
    until: {{steps: 10}}
    select: {select}
  - name: b
    rules: []
"""


def _load(select: str):
    return load_policy_text(POLICY.format(select=select), BEHAVIORS)


@pytest.mark.parametrize(("select", "message"), [
    ('{top_fraction: 0.5, by: "-score.valuse"}',
     "stages[0].select.by: unknown behavior 'valuse' in 'score.valuse' (did you mean "
     "'score.values'?)"),
    ('{top_fraction: 0.5, by: "affinity.values"}',
     "stages[0].select.by: 'affinity.values' cannot be read by a select rule"),
    ('{top_fraction: 1.5, by: "score.values"}', "stages[0].select.top_fraction: must be in (0"),
    ('{by: "score.values"}', "stages[0].select: give exactly one of top_fraction"),
    ('{top_fraction: 0.5, sample_fraction: 0.5, by: "score.values"}',
     "stages[0].select: give exactly one of"),
    ('{sample_fraction: 0.5, by: "score.values"}', "sample_fraction needs a temperature"),
    ('{top_fraction: 0.5, temperature: 1, by: "score.values"}',
     "stages[0].select.temperature: temperature only applies to sample_fraction"),
    ('{top_fraction: 0.5, by: "score.values", unselected: keep}',
     "stages[0].select.unselected: expected 'return' or 'reject'"),
    ('{top_fraction: 0.5, by: "score.values", unselected: reject, max_returns: 2}',
     "stages[0].select.max_returns: max_returns only applies to unselected: return"),
    ('{top_fraction: 0.5, by: "score.values", max_return: 2}',
     "stages[0].select.max_return: unknown key 'max_return' (did you mean 'max_returns'?)"),
    ('{top_fraction: 0.5}', "stages[0].select: missing required key 'by'"),
])
def test_mistakes_fail_at_load_with_their_path(select: str, message: str) -> None:
    with pytest.raises(PolicyError) as error:
        _load(select)
    assert message in str(error.value)
    assert "(line " in str(error.value)


def test_candidate_factor_is_checked() -> None:
    text = POLICY.format(select='{top_fraction: 0.5, by: "score.values"}')
    with pytest.raises(PolicyError, match=r"candidate_factor: must be between 1 and 64"):
        load_policy_text(text.replace("candidate_factor: 2", "candidate_factor: 0"), BEHAVIORS)


def test_top_fraction_keeps_the_best_rows() -> None:
    rule = _load('{top_fraction: 0.5, by: "-score.values + score.situational_awareness"}') \
        .spec.stages[0].select
    scores = np.zeros((6, 4))
    scores[:, 3] = [0.3, -0.2, 0.1, -0.5, 0.0, np.nan]   # values
    scores[:, 2] = [0.0, 0.0, 0.0, 0.0, 0.4, 0.0]        # situational awareness
    values = rule.values(scores, BEHAVIORS)
    assert np.allclose(values[:5], [-0.3, 0.2, -0.1, 0.5, 0.4])
    keep = rule.keep_count(loader_rows=6, candidates=6)
    assert keep == 3
    assert rule.choose(values, keep, step=0).tolist() == [1, 3, 4]  # NaN never beats a number
    assert rule.unselected == "return" and rule.max_returns == 1
    assert "stages[0].select (top 0.5 by" in rule.label


def test_boltzmann_sampling_is_seeded_by_step_and_follows_the_temperature() -> None:
    rule = _load('{sample_fraction: 0.25, temperature: 0.2, by: "score.values"}') \
        .spec.stages[0].select
    values = np.linspace(0.0, 1.0, 40)
    first = rule.choose(values, 10, step=7)
    assert np.array_equal(first, rule.choose(values, 10, step=7))
    assert not np.array_equal(first, rule.choose(values, 10, step=8))
    cold = np.mean([rule.choose(values, 10, s).mean() for s in range(50)])
    hot_rule = _load('{sample_fraction: 0.25, temperature: 100, by: "score.values"}') \
        .spec.stages[0].select
    hot = np.mean([hot_rule.choose(values, 10, s).mean() for s in range(50)])
    assert cold > 30 and 15 < hot < 25  # low temperature favours high values; high is uniform


def test_shipped_policy_selects() -> None:
    policy = load_policy("values_first_select", BEHAVIORS)
    assert policy.spec.candidate_factor == 2
    assert all(stage.select is not None for stage in policy.spec.stages)
