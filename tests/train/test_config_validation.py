"""Configs fail at load time with the YAML path of the mistake; user settings and runtime wiring
are separate; a directory never shadows a built-in policy."""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path
from typing import Literal

import pytest

from curriculum.typed_config import ConfigError, from_mapping, to_mapping
from loaders.policy_stage import CurriculumStreamConfig
from policies import PolicyError, resolve_policy_path
from train.config import load_fit_config

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"


@pytest.mark.parametrize(("override", "message"), [
    ("data.stream.packing=zigzag",
     "data.stream.packing: expected one of 'concat', 'pad', got 'zigzag'"),
    ("data.curriculum={policy: uniform, store: s, upweight_mode: repeet}",
     "data.curriculum.upweight_mode: expected one of 'loss_weight', 'repeat', got 'repeet'"),
    ("data.curriculum={policy: uniform, store: s, shard_order_by: bogus}",
     "data.curriculum.shard_order_by: expected 'affinity.<behavior>', got 'bogus'"),
    ("data.attribution={attributor: {mode: nope}}", "data.attribution.attributor: mode must be"),
])
def test_a_wrong_choice_fails_at_load_with_its_path(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_fit_config(DEMO, [override])
    assert str(error.value).startswith(message)


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass
class Paint:
    color: Color = Color.RED
    coats: Literal[1, 2] = 1
    glossy: Literal[True] | None = None


def test_literal_and_enum_fields() -> None:
    paint = from_mapping(Paint, {"color": "blue", "coats": 2})
    assert paint.color is Color.BLUE and paint.coats == 2
    assert to_mapping(paint) == {"color": "blue", "coats": 2, "glossy": None}
    with pytest.raises(ConfigError, match=r"^color: expected one of 'red', 'blue', got 'green'"):
        from_mapping(Paint, {"color": "green"})
    with pytest.raises(ConfigError, match=r"^coats: expected one of 1, 2, got True"):
        from_mapping(Paint, {"coats": True})  # a bool is not the number 1


def test_runtime_wiring_is_not_a_user_setting() -> None:
    names = {f.name for f in dataclasses.fields(CurriculumStreamConfig)}
    assert not names & {"lag_steps", "state_path", "spool_dir"}
    with pytest.raises(ConfigError, match=r"^data.curriculum.state_path: unknown key"):
        load_fit_config(DEMO, ["data.curriculum={policy: uniform, store: s, state_path: x}"])
    with pytest.raises(ConfigError, match=r"^data.policy: unknown key"):
        load_fit_config(DEMO, ["data.policy=values_first"])  # it was written and never read


def test_a_directory_never_shadows_a_builtin_policy(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "values_first").mkdir()  # what the demo names its run directory
    assert resolve_policy_path("values_first").name == "values_first.yaml"
    assert resolve_policy_path("values_first").is_file()
    (tmp_path / "mine").mkdir()
    with pytest.raises(PolicyError, match="is a directory, not a policy file"):
        resolve_policy_path("mine")
    (tmp_path / "own.yaml").write_text("name: own\n")
    assert resolve_policy_path("own.yaml") == Path("own.yaml")  # a file wins: it is a file
