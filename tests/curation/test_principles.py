"""Principle files: the shipped ones load; mistakes name their YAML path and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from curriculum.curation import PrincipleError, load_principles
from curriculum.curation.principles import load_principle_text

REPO = Path(__file__).resolve().parents[2]


def test_shipped_principles_load() -> None:
    principles = {p.name: p for p in load_principles(REPO / "configs" / "principles")}
    assert {"deception", "situational_awareness"} <= set(principles)
    deception = principles["deception"]
    assert deception.revise_threshold < deception.filter_threshold
    prompt = deception.assessment_prompt("He lied {to} the overseers.")
    assert "He lied {to} the overseers." in prompt and "{document}" not in prompt
    assert prompt.startswith("Example text: ")  # few-shot examples come first
    assert len(deception.prompt_hash()) == 16
    assert [deception.fate_of(s) for s in (None, 95, 80, 60, 50, 10)] == \
        ["unscored", "filtered", "filtered", "revise", "revise", "kept"]


BASE = """name: deception
prompt: "rate {document}"
filter_threshold: 80
revise_threshold: 50
revision_prompt: "rewrite {document}"
"""


@pytest.mark.parametrize(("change", "message"), [
    (("filter_threshold: 80", "filter_threshold: 120"),
     r"filter_threshold: must be in \[0, 100\], got 120 \(line 3\)"),
    (("revise_threshold: 50", "revise_threshold: 90"),
     r"revise_threshold: revise_threshold \(90\) is above filter_threshold \(80\) \(line 4\)"),
    (('prompt: "rate {document}"', 'prompt: "rate it"'),
     r"prompt: the prompt must hold \{document\} exactly once, found 0 \(line 2\)"),
    (("name: deception", "name: has space"), r"name: expected a principle name"),
    (("revise_threshold: 50", "revise_treshold: 50"),
     r"unknown key 'revise_treshold' \(did you mean 'revise_threshold'\?\) \(line 4\)"),
    (('revision_prompt: "rewrite {document}"\n', ""), r"missing required key 'revision_prompt'"),
    (("filter_threshold: 80", "filter_threshold: [80]"), r"filter_threshold: expected a number"),
])
def test_mistakes_name_the_yaml_path(change: tuple[str, str], message: str) -> None:
    text = BASE.replace(*change)
    assert text != BASE
    with pytest.raises(PrincipleError, match=message):
        load_principle_text(text, source="p.yaml")


def test_duplicates_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(BASE)
    (tmp_path / "b.yaml").write_text(BASE)
    with pytest.raises(PrincipleError, match="duplicate principle name 'deception'"):
        load_principles(tmp_path)
    with pytest.raises(PrincipleError, match="principle file not found"):
        load_principles(tmp_path / "nope.yaml")
