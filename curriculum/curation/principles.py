"""Principles: what a judge assesses a document against, and the thresholds that decide its fate.

One principle per YAML file (``configs/principles/deception.yaml``)::

    name: deception                     # becomes the store score assess.deception
    description: Text that shows or teaches deception or manipulation.
    prompt: |                           # must hold {document} once
      Rate from 0 to 100 how much the text shows deception ... Text: {document}
      Answer with one number.
    examples:                           # optional few-shot pairs, shown before the document
      - {document: "She returned the wallet.", score: 0}
    filter_threshold: 80                # score >= 80: filtered (removed)
    revise_threshold: 50                # 50 <= score < 80: revised; below 50: kept
    revision_prompt: |                  # needed when revise_threshold < filter_threshold
      Rewrite the text without the deception, keeping its information. Text: {document}
    reassess_revision: true             # the revision must score below revise_threshold
    probe_behavior: deception           # store behavior the probe: judge reads (default: name)

Validation reuses the policy files' YAML reader, so a mistake names its YAML path and line
(``filter_threshold: must be between 0 and 100, got 120 (line 7)``). The ``{document}`` slot is
filled by plain replacement, never ``str.format``, so braces in documents or prompts are inert.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from policies.errors import PolicyError
from policies.yamlsource import Located, load_yaml

DOCUMENT_SLOT = "{document}"
KEYS = ("name", "description", "prompt", "examples", "filter_threshold", "revise_threshold",
        "revision_prompt", "reassess_revision", "probe_behavior")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class PrincipleError(ValueError):
    """A principle file that cannot be used; the message names the file, YAML path and line."""


@dataclass(frozen=True)
class Example:
    """A few-shot example: a document and the score the judge should give it."""

    document: str
    score: float


@dataclass(frozen=True)
class Principle:
    """One principle; scores are on a 0-100 scale (higher = more of the undesirable aspect)."""

    name: str
    """Identifier; the store score family is ``assess.<name>``."""
    prompt: str
    """Assessment prompt with one ``{document}`` slot."""
    filter_threshold: float
    """Documents scoring at least this are filtered out."""
    revise_threshold: float
    """Documents scoring at least this (and below ``filter_threshold``) are revised."""
    revision_prompt: str | None = None
    """Rewrite prompt with one ``{document}`` slot; None when there is no revise band."""
    reassess_revision: bool = True
    """Assess the revision again; it is kept only if it scores below ``revise_threshold``."""
    examples: tuple[Example, ...] = ()
    """Few-shot examples placed before the document."""
    probe_behavior: str | None = None
    """Store behavior that the ``probe:`` judge reads; None means ``name``."""
    description: str = ""
    """Free text for people."""
    source: str | None = field(default=None, compare=False)
    """The file the principle was read from."""

    @property
    def has_revise_band(self) -> bool:
        """Whether some scores route a document to revision."""
        return self.revise_threshold < self.filter_threshold

    @property
    def behavior(self) -> str:
        """The store behavior read by the probe judge."""
        return self.probe_behavior or self.name

    def assessment_prompt(self, document: str) -> str:
        """The full assessment prompt for ``document`` (few-shot examples first)."""
        shots = "".join(f"Example text: {e.document}\nScore: {e.score:g}\n\n" for e in self.examples)
        return shots + self.prompt.replace(DOCUMENT_SLOT, document)

    def revision_request(self, document: str) -> str:
        """The full revision prompt for ``document``."""
        if self.revision_prompt is None:
            raise PrincipleError(f"principle {self.name!r} has no revision_prompt")
        return self.revision_prompt.replace(DOCUMENT_SLOT, document)

    def prompt_hash(self) -> str:
        """16 hex digits identifying the prompts, examples and thresholds (provenance)."""
        record = {"prompt": self.prompt, "revision_prompt": self.revision_prompt,
                  "examples": [(e.document, e.score) for e in self.examples],
                  "filter": self.filter_threshold, "revise": self.revise_threshold,
                  "reassess": self.reassess_revision}
        return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]

    def fate_of(self, score: float | None) -> str:
        """``unscored``, ``filtered``, ``revise`` or ``kept`` by this principle's thresholds."""
        if score is None or score != score:
            return "unscored"
        if score >= self.filter_threshold:
            return "filtered"
        if score >= self.revise_threshold:
            return "revise"
        return "kept"


def _prompt_at(where: Located) -> str:
    text = where.string(what="a prompt with a {document} slot")
    if text.count(DOCUMENT_SLOT) != 1:
        raise where.error(f"the prompt must hold {DOCUMENT_SLOT} exactly once, found "
                          f"{text.count(DOCUMENT_SLOT)}")
    return text


def _examples_at(where: Located) -> tuple[Example, ...]:
    examples = []
    for item in where.sequence():
        keys = item.mapping(("document", "score"), required=("document", "score"))
        examples.append(Example(keys["document"].string(what="an example document"),
                                keys["score"].number(0.0, 100.0)))
    return tuple(examples)


def _parse(root: Located, source: str | None) -> Principle:
    keys = root.mapping(KEYS, required=("name", "prompt", "filter_threshold"))
    name = keys["name"].string(_NAME, "a principle name (letters, digits, _)")
    filter_threshold = keys["filter_threshold"].number(0.0, 100.0)
    revise_threshold = keys["revise_threshold"].number(0.0, 100.0) \
        if "revise_threshold" in keys else filter_threshold
    if revise_threshold > filter_threshold:
        raise keys["revise_threshold"].error(
            f"revise_threshold ({revise_threshold:g}) is above filter_threshold "
            f"({filter_threshold:g})")
    revision_prompt = _prompt_at(keys["revision_prompt"]) if "revision_prompt" in keys else None
    if revise_threshold < filter_threshold and revision_prompt is None:
        raise root.error(f"missing required key 'revision_prompt' (scores in "
                         f"[{revise_threshold:g}, {filter_threshold:g}) are revised)")
    reassess = True
    if "reassess_revision" in keys:
        reassess = keys["reassess_revision"].value
        if not isinstance(reassess, bool):
            raise keys["reassess_revision"].error(f"expected true or false, got {reassess!r}")
    return Principle(
        name=name, prompt=_prompt_at(keys["prompt"]), filter_threshold=filter_threshold,
        revise_threshold=revise_threshold, revision_prompt=revision_prompt,
        reassess_revision=reassess,
        examples=_examples_at(keys["examples"]) if "examples" in keys else (),
        probe_behavior=keys["probe_behavior"].string(_NAME, "a behavior name")
        if "probe_behavior" in keys else None,
        description=keys["description"].string() if "description" in keys else "",
        source=source)


def load_principle_text(text: str, source: str | None = None) -> Principle:
    """Validate one principle given as YAML text; :class:`PrincipleError` names the mistake."""
    try:
        return _parse(load_yaml(text, source).root(), source)
    except PolicyError as error:
        raise PrincipleError(str(error)) from None


def principle_files(spec: str | Path | Sequence[str | Path]) -> list[Path]:
    """The YAML files of a spec: a file, a directory (its ``*.yaml``, sorted), a comma-separated
    list, or a list of any of these."""
    items = [spec] if isinstance(spec, str | Path) else list(spec)
    paths: list[Path] = []
    for item in items:
        for part in str(item).split(","):
            path = Path(part.strip())
            if path.is_dir():
                paths.extend(sorted(path.glob("*.yaml")) + sorted(path.glob("*.yml")))
            elif path.is_file():
                paths.append(path)
            else:
                raise PrincipleError(f"{path}: principle file not found")
    if not paths:
        raise PrincipleError(f"{spec}: no principle files (*.yaml)")
    return paths


def load_principles(spec: str | Path | Sequence[str | Path]) -> tuple[Principle, ...]:
    """Load and validate every principle of ``spec`` (see :func:`principle_files`); names must
    be distinct."""
    principles: list[Principle] = []
    for path in principle_files(spec):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise PrincipleError(f"{path}: cannot read ({error})") from None
        principle = load_principle_text(text, source=str(path))
        if any(p.name == principle.name for p in principles):
            raise PrincipleError(f"{path}: name: duplicate principle name {principle.name!r}")
        principles.append(principle)
    return tuple(principles)
