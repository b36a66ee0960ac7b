"""Custom Python policies: register by name, load from YAML with ``type:``."""

from __future__ import annotations

import numpy as np
import pytest
from policy_support import BEHAVIORS, MemoryStore

from policies import (
    BasePolicy,
    CurriculumState,
    Emit,
    PolicyError,
    PolicyRunner,
    load_policy_text,
    register_policy,
    registered_policies,
)
from policies.registry import unregister_policy


class HalfWeight(BasePolicy):
    def __init__(self, spec, weight: float) -> None:
        super().__init__(spec)
        self.weight = weight

    def decide(self, scores, state):
        return Emit(self.weight, 0.0, "half_weight")


@pytest.fixture
def registered():
    @register_policy("half_weight_test")
    def build(context):
        keys = context.params_keys(("weight",))
        weight = keys["weight"].number(0.0, 1.0) if "weight" in keys else 0.5
        if weight == 0.25:
            raise ValueError("0.25 is unlucky")
        return HalfWeight(context.spec, weight)

    yield "half_weight_test"
    unregister_policy("half_weight_test")


def test_custom_policy_loads_from_yaml_and_decides(registered: str,
                                                   memory_store: MemoryStore) -> None:
    assert registered in registered_policies()
    policy = load_policy_text(f"type: {registered}\nseed: 4\nparams: {{weight: 0.4}}",
                              BEHAVIORS)
    assert policy.spec.seed == 4 and policy.spec.type == registered
    assert [s.name for s in policy.stages] == ["main"]
    decisions = PolicyRunner(policy, memory_store).decide_rows(np.arange(5), CurriculumState())
    assert list(decisions) == [Emit(0.4, 0.0, "half_weight")] * 5


def test_custom_policy_errors_name_the_params_path(registered: str) -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy_text(f"type: {registered}\nparams:\n  weight: 7\n", BEHAVIORS)
    assert (caught.value.path, caught.value.line) == ("params.weight", 3)
    with pytest.raises(PolicyError) as caught:
        load_policy_text(f"type: {registered}\nparams: {{wieght: 0.3}}", BEHAVIORS)
    assert caught.value.path == "params.wieght"
    with pytest.raises(PolicyError) as caught:  # a factory's plain ValueError is still located
        load_policy_text(f"type: {registered}\nparams: {{weight: 0.25}}", BEHAVIORS)
    assert caught.value.path == "params" and "unlucky" in caught.value.message
    with pytest.raises(PolicyError) as caught:
        load_policy_text(f"type: {registered}\nstages: []", BEHAVIORS)
    assert caught.value.path == "stages"


def test_names_are_unique_unless_replaced(registered: str) -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_policy(registered)(lambda context: None)
    register_policy(registered, replace=True)(lambda context: HalfWeight(context.spec, 1.0))
    assert load_policy_text(f"type: {registered}", BEHAVIORS).weight == 1.0
    with pytest.raises(ValueError, match="identifiers"):
        register_policy("not a name")


def test_the_documented_example_works(memory_store: MemoryStore) -> None:
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text[text.index("### Policies in Python"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    yaml_text = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    try:
        exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own docs
        policy = load_policy_text(yaml_text, memory_store)
        rows = np.arange(memory_store.num_rows)
        decisions = PolicyRunner(policy, memory_store).decide_rows(rows, CurriculumState())
        values_rows = memory_store.category == 0
        assert all(d.weight == 3.0 for d, v in zip(decisions, values_rows, strict=True) if v)
        with pytest.raises(PolicyError) as caught:
            load_policy_text("type: boost\nparams: {behavior: valuez}", memory_store)
        assert caught.value.path == "params.behavior"
    finally:
        unregister_policy("boost")
