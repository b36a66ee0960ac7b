"""The judge protocol: what assesses documents against a principle and revises them.

A judge is chosen by a spec string (:func:`make_judge`):

- ``openai:URL`` — any OpenAI-compatible server (vLLM, TGI, llama.cpp server, ``transformers
  serve``) through the official ``openai`` client (:mod:`curriculum.curation.openai_judge`);
- ``hf:DIR`` — a local Hugging Face causal LM, ``local_files_only=True``, batched
  (:mod:`curriculum.curation.hf_judge`);
- ``probe:STORE`` — a model-free baseline from the store's affinity, mapped to 0-100
  (:mod:`curriculum.curation.probe_judge`).

Judges are asynchronous: the pipeline keeps several batches in flight so a remote judge never
waits on us. A judge never passes or drops a document silently: an answer it cannot read comes
back as a :class:`JudgeReply` with ``score=None`` and a reason; a judge that cannot be reached
raises :class:`JudgeError` naming it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from curriculum.curation.principles import Principle


class JudgeError(ValueError):
    """A judge that cannot be used or reached; the message names the judge (its server)."""


@dataclass(frozen=True)
class JudgeItem:
    """One document to assess or revise against one principle."""

    principle: Principle
    text: str
    row: int | None = None
    """Row of an unchanged input document in the store (the probe judge reads it); None for a
    revised text."""


@dataclass(frozen=True)
class JudgeReply:
    """A judge's answer to one item."""

    score: float | None = None
    """0-100 for an assessment; None when unreadable (see ``reason``) or for a revision."""
    reason: str = ""
    """Why the assessment is unreadable, or the revision failed; empty on success."""
    method: str = ""
    """How the score was read: ``logprobs``, ``text``, ``probe``."""
    text: str = ""
    """The raw answer of an assessment, or the revised document."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    attempts: int = 1
    """Requests spent on this item (retries of unreadable answers included)."""

    def to_record(self) -> dict[str, object]:
        """A JSON-ready dict (what the response cache stores)."""
        return {"score": self.score, "reason": self.reason, "method": self.method,
                "text": self.text, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "attempts": self.attempts}

    @classmethod
    def from_record(cls, record: dict[str, object]) -> JudgeReply:
        """Inverse of :meth:`to_record`."""
        score = record.get("score")
        return cls(None if score is None else float(score), str(record.get("reason", "")),
                   str(record.get("method", "")), str(record.get("text", "")),
                   int(record.get("prompt_tokens", 0)), int(record.get("completion_tokens", 0)),
                   int(record.get("attempts", 1)))


@runtime_checkable
class Judge(Protocol):
    """Assesses and revises documents (see the module docstring)."""

    @property
    def identity(self) -> str:
        """Stable text naming the judge and its model (part of the cache key and provenance)."""
        ...

    @property
    def cacheable(self) -> bool:
        """Whether replies are worth caching (False for cheap, deterministic judges)."""
        ...

    @property
    def batch_size(self) -> int:
        """Items per :meth:`assess` call the judge works best with."""
        ...

    async def assess(self, items: Sequence[JudgeItem]) -> list[JudgeReply]:
        """One reply per item, in order; ``score`` is None (with a reason) when unreadable."""
        ...

    async def revise(self, items: Sequence[JudgeItem]) -> list[JudgeReply]:
        """One reply per item, in order, whose ``text`` is the revised document (empty with a
        reason when the revision failed)."""
        ...

    async def aclose(self) -> None:
        """Release connections and models."""
        ...


@dataclass(frozen=True)
class JudgeSpec:
    """Everything :func:`make_judge` needs, so that the same judge can be built again in another
    process (each worker of the Ray engine builds its own from this)."""

    spec: str
    """``openai:URL``, ``hf:DIR`` or ``probe:STORE``."""
    model: str | None = None
    concurrency: int = 16
    timeout_s: float = 60.0
    max_retries: int = 4
    score_attempts: int = 3
    batch_size: int | None = None
    max_revision_tokens: int | None = None

    def build(self) -> Judge:
        """The judge this spec names (see :func:`make_judge`)."""
        return make_judge(self.spec, model=self.model, concurrency=self.concurrency,
                          timeout_s=self.timeout_s, max_retries=self.max_retries,
                          score_attempts=self.score_attempts, batch_size=self.batch_size,
                          max_revision_tokens=self.max_revision_tokens)


def make_judge(spec: str, *, model: str | None = None, concurrency: int = 16,
               timeout_s: float = 60.0, max_retries: int = 4, score_attempts: int = 3,
               batch_size: int | None = None, max_revision_tokens: int | None = None) -> Judge:
    """Build the judge named by ``spec`` (``openai:URL``, ``hf:DIR``, ``probe:STORE``).

    ``model`` names the served model (``openai:`` only); ``concurrency`` bounds requests in
    flight; ``timeout_s`` and ``max_retries`` (with exponential backoff) apply per request;
    ``score_attempts`` is how many requests an unreadable answer gets before it is unscored;
    ``max_revision_tokens`` caps a revision's length (default: about 1.5x its source).
    """
    kind, _, target = spec.partition(":")
    if not target:
        raise JudgeError(f"judge {spec!r}: expected openai:URL, hf:DIR or probe:STORE")
    if kind == "openai":
        from curriculum.curation.openai_judge import OpenAIJudge

        return OpenAIJudge(target, model=model, concurrency=concurrency, timeout_s=timeout_s,
                           max_retries=max_retries, score_attempts=score_attempts,
                           max_revision_tokens=max_revision_tokens)
    if kind == "hf":
        from curriculum.curation.hf_judge import HFJudge

        return HFJudge(target, batch_size=batch_size or 8,
                       max_revision_tokens=max_revision_tokens or 256)
    if kind == "probe":
        from curriculum.curation.probe_judge import ProbeJudge

        return ProbeJudge(target, batch_size=batch_size or 4096)
    raise JudgeError(f"judge {spec!r}: unknown kind {kind!r} (openai, hf or probe)")
