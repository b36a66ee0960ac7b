"""Reading a 0-100 score out of a judge's answer, robustly.

Two ways, best first:

1. **Logprobs** (where the backend returns them): at the answer's first number token, the
   expected value of the score over the number tokens among the top alternatives, weighted by
   their probabilities (renormalised over the numbers). This uses the judge's uncertainty instead
   of its single most likely answer, and is only used when that token is the whole number (a
   tokenizer that splits ``85`` into ``8`` and ``5`` falls back to parsing).
2. **Parsing** the text: the first number in it (``85``, ``Score: 85``, ``85/100``, ``85.5``).

An answer with no number, or a number outside 0-100, is *unreadable*; the reading says why, so
the pipeline can retry and finally record the document as unscored with that reason.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

#: Smallest score a judge may give.
MIN_SCORE = 0.0
#: Largest score a judge may give.
MAX_SCORE = 100.0
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?")


@dataclass(frozen=True)
class Reading:
    """A score read from an answer, or why none could be read."""

    score: float | None
    """0-100, or None when unreadable."""
    method: str = ""
    """``logprobs`` or ``text`` when read; empty otherwise."""
    reason: str = ""
    """Why the answer is unreadable (empty when it was read)."""

    @property
    def ok(self) -> bool:
        """Whether a score was read."""
        return self.score is not None


def parse_score(text: str) -> Reading:
    """The first number in ``text`` if it lies in 0-100; otherwise an unreadable reading."""
    match = _NUMBER.search(text or "")
    if match is None:
        # The answer itself stays with the reply (and the cache), not in the reason: reasons
        # are counted, so they must not vary with every answer.
        return Reading(None, reason="no number in the answer")
    value = float(match.group(0))
    if not MIN_SCORE <= value <= MAX_SCORE:
        return Reading(None, reason=f"number {match.group(0)} is outside 0-100")
    return Reading(value, method="text")


def _token_number(token: str) -> int | None:
    stripped = token.strip()
    if stripped.isdigit() and len(stripped) <= 3:
        value = int(stripped)
        if MIN_SCORE <= value <= MAX_SCORE:
            return value
    return None


def expected_score(alternatives: Sequence[tuple[str, float]]) -> float | None:
    """Expected value over the number tokens among ``(token, logprob)`` alternatives; None if
    none of them is a number in 0-100."""
    weights: dict[int, float] = {}
    for token, logprob in alternatives:
        value = _token_number(token)
        if value is not None and math.isfinite(logprob):
            weights[value] = weights.get(value, 0.0) + math.exp(logprob)
    total = sum(weights.values())
    if total <= 0.0:
        return None
    return sum(value * weight for value, weight in weights.items()) / total


def read_score(text: str,
               token_alternatives: Sequence[tuple[str, Sequence[tuple[str, float]]]] | None = None,
               ) -> Reading:
    """Read an answer: from ``token_alternatives`` (per generated token, its text and its top
    ``(token, logprob)`` alternatives) when they hold the answer's number as one token, else by
    parsing ``text``."""
    parsed = parse_score(text)
    if token_alternatives and parsed.ok:
        for token, alternatives in token_alternatives:
            value = _token_number(token)
            if value is None:
                if any(c.isdigit() for c in token):
                    break  # the number is split over tokens: parse instead
                continue
            if value == parsed.score:
                expected = expected_score(alternatives)
                if expected is not None:
                    return Reading(expected, method="logprobs")
            break
    return parsed
