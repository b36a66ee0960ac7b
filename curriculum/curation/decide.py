"""One chunk of documents through assessment, decision, revision and re-assessment.

The fate of a document, over all principles in their file order:

1. assessed against every principle;
2. **filtered** if any principle scores it at or above its ``filter_threshold`` (the first such
   principle is named), else **unscored** if any assessment could not be read (the reason is
   kept), else **revised** if any principle puts it in its revise band, else **kept**;
3. a document to revise is rewritten once per principle whose band it is in (in order, each
   rewrite starting from the last); a failed rewrite makes it unscored;
4. a principle with ``reassess_revision`` assesses the final rewrite, which is kept only if it
   scores below that principle's ``revise_threshold`` (else filtered, "revision still ...").

Every document ends in exactly one of the four fates, which is what makes
``filtered + revised + kept + unscored = input rows`` hold by construction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from curriculum.curation.assessor import CachedJudge
from curriculum.curation.judge import JudgeItem, JudgeReply
from curriculum.curation.principles import Principle

FATES: tuple[str, ...] = ("kept", "revised", "filtered", "unscored")
NAN = math.nan


@dataclass
class InputDocument:
    """One input row: its key, text (None when unusable, with ``skip_reason``) and members."""

    row: int
    key: str
    text: str | None
    members: dict[str, bytes] = field(default_factory=dict)
    skip_reason: str = ""


@dataclass
class Outcome:
    """The fate of one input row."""

    document: InputDocument
    fate: str
    scores: list[float]
    """Per principle, the score of the original text (NaN when unscored)."""
    revised_scores: list[float]
    """Per principle, the score of the revision (NaN when not revised or not re-assessed)."""
    principle: str = ""
    """The principle that decided a filtered, revised or unscored fate."""
    reason: str = ""
    text: str | None = None
    """The text that goes to the curated shards (kept or revised), else None."""


def _first_decision(principles: Sequence[Principle],
                    replies: Sequence[JudgeReply]) -> tuple[str, str, str, list[Principle]]:
    """(fate, principle, reason, principles to revise with) from the original assessments."""
    fates = [p.fate_of(r.score) for p, r in zip(principles, replies, strict=True)]
    for p, fate in zip(principles, fates, strict=True):
        if fate == "filtered":
            return "filtered", p.name, f"filter: {p.name}>={p.filter_threshold:g}", []
    for p, r, fate in zip(principles, replies, fates, strict=True):
        if fate == "unscored":
            return "unscored", p.name, f"unscored: {p.name}: {r.reason or 'no score'}", []
    band = [p for p, fate in zip(principles, fates, strict=True) if fate == "revise"]
    if band:
        return "revised", band[0].name, "revised: " + ",".join(p.name for p in band), band
    return "kept", "", "", []


async def _revise(judge: CachedJudge, pending: list[tuple[Outcome, list[Principle]]]) -> None:
    """Rewrite each pending document once per principle of its band, in principle order."""
    texts = {id(o): o.document.text or "" for o, _ in pending}
    alive = list(pending)
    step = 0
    while alive:
        batch = [(o, band[step]) for o, band in alive if step < len(band)]
        if not batch:
            break
        replies = await judge.revise([JudgeItem(p, texts[id(o)]) for o, p in batch])
        for (outcome, principle), reply in zip(batch, replies, strict=True):
            if not reply.text:
                outcome.fate, outcome.principle = "unscored", principle.name
                outcome.reason = f"unscored: {principle.name}: revision failed " \
                                 f"({reply.reason or 'empty'})"
            texts[id(outcome)] = reply.text
        alive = [(o, band) for o, band in alive if o.fate == "revised"]
        step += 1
    for outcome, _ in pending:
        if outcome.fate == "revised":
            outcome.text = texts[id(outcome)]


async def _reassess(judge: CachedJudge, principles: Sequence[Principle],
                    pending: list[tuple[Outcome, list[Principle]]]) -> None:
    jobs = [(o, p) for o, band in pending if o.fate == "revised"
            for p in band if p.reassess_revision]
    if not jobs:
        return
    replies = await judge.assess([JudgeItem(p, o.text or "") for o, p in jobs])
    index = {p.name: j for j, p in enumerate(principles)}
    for (outcome, principle), reply in zip(jobs, replies, strict=True):
        outcome.revised_scores[index[principle.name]] = NAN if reply.score is None \
            else reply.score
        if outcome.fate != "revised":
            continue  # an earlier principle already settled it
        if reply.score is None:
            outcome.fate, outcome.principle, outcome.text = "unscored", principle.name, None
            outcome.reason = f"unscored: {principle.name}: revision {reply.reason or 'no score'}"
        elif reply.score >= principle.revise_threshold:
            outcome.fate, outcome.principle, outcome.text = "filtered", principle.name, None
            outcome.reason = f"filter: {principle.name} revision still >= " \
                             f"{principle.revise_threshold:g}"


async def _assess_all(judge: CachedJudge, principles: Sequence[Principle],
                      usable: Sequence[InputDocument]) -> list[JudgeReply]:
    """Replies in (document, principle) order; a judge with ``assess_rows`` (the probe judge)
    answers whole columns at once, without an item per request."""
    fast = getattr(judge.judge, "assess_rows", None)
    if fast is not None and judge.cache is None and all(d.row >= 0 for d in usable):
        rows = [d.row for d in usable]
        columns = [fast(p, rows) for p in principles]
        return [reply for per_doc in zip(*columns, strict=True) for reply in per_doc]
    items = [JudgeItem(p, d.text or "", d.row) for d in usable for p in principles]
    return await judge.assess(items) if items else []


async def decide_chunk(judge: CachedJudge, principles: Sequence[Principle],
                       documents: Sequence[InputDocument]) -> list[Outcome]:
    """The outcome of every document of a chunk, in order (see the module docstring)."""
    usable = [d for d in documents if d.text is not None]
    replies = await _assess_all(judge, principles, usable) if usable else []
    by_row: dict[int, Outcome] = {}
    pending: list[tuple[Outcome, list[Principle]]] = []
    width = len(principles)
    for d_index, document in enumerate(usable):
        mine = replies[d_index * width:(d_index + 1) * width]
        fate, principle, reason, band = _first_decision(principles, mine)
        outcome = Outcome(document, fate, [NAN if r.score is None else r.score for r in mine],
                          [NAN] * width, principle, reason,
                          document.text if fate == "kept" else None)
        by_row[document.row] = outcome
        if band:
            pending.append((outcome, band))
    if pending:
        await _revise(judge, pending)
        await _reassess(judge, principles, pending)
    outcomes = []
    for document in documents:
        if document.text is None:
            outcomes.append(Outcome(document, "unscored", [NAN] * width, [NAN] * width, "",
                                    f"unscored: {document.skip_reason}"))
        else:
            outcomes.append(by_row[document.row])
    return outcomes
