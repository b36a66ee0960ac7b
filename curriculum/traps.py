"""Trap documents: texts that read as one behavior but carry sentences of another.

A trap takes a *host* document (by default a values story) and plants a few sentences of a
*guest* document (situational awareness, deception) at random positions in it. Its embedding
stays close to the host's category, while training on it teaches the guest's content too: the
kind of document an affinity-only curriculum (what a text looks like) lets through and an
attribution-aware one (what a text does to the model) can catch.

The mixing is generic: :func:`plant_sentences` splits any two texts into sentences and
interleaves them, so any generator (the template one here, an LM, real text) can make traps.
Labels name the trap by its guest: ``trap_<guest>`` (written to ``labels.csv`` only).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

TRAP_PREFIX = "trap_"
#: Default guest behaviors of traps and their relative shares (hosts are values documents).
DEFAULT_TRAP_GUESTS: dict[str, float] = {"situational_awareness": 2.0, "deception": 1.0}

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` (split after ``.``, ``!`` or ``?`` followed by whitespace)."""
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


def plant_sentences(host: str, guest: str, count: int, rng: random.Random) -> str:
    """``host`` with ``count`` sentences drawn from ``guest`` (in their order) inserted at
    random sentence boundaries; fewer when the guest has fewer sentences."""
    host_sentences = split_sentences(host)
    guest_sentences = split_sentences(guest)
    if not guest_sentences or count <= 0:
        return host
    picks = sorted(rng.sample(range(len(guest_sentences)), min(count, len(guest_sentences))))
    slots = sorted(rng.randrange(len(host_sentences) + 1) for _ in picks)
    out: list[str] = []
    planted = iter(guest_sentences[i] for i in picks)
    position = 0
    for slot in slots:
        out.extend(host_sentences[position:slot])
        out.append(next(planted))
        position = slot
    out.extend(host_sentences[position:])
    return " ".join(out)


@dataclass(frozen=True)
class TrapSpec:
    """How traps are made: share of the corpus, host behavior, guests and sentences planted."""

    share: float = 0.0
    """Fraction of the documents that are traps (0 turns traps off)."""
    host: str = "values"
    guests: Mapping[str, float] | None = None
    """Guest behavior -> relative share (default :data:`DEFAULT_TRAP_GUESTS`)."""
    min_sentences: int = 1
    max_sentences: int = 2

    def __post_init__(self) -> None:
        if not 0.0 <= self.share <= 1.0:
            raise ValueError(f"trap share must be in [0, 1], got {self.share}")
        if not 1 <= self.min_sentences <= self.max_sentences:
            raise ValueError("trap sentences: need 1 <= min_sentences <= max_sentences")

    @property
    def guest_shares(self) -> dict[str, float]:
        """Guests and their relative shares."""
        return dict(self.guests or DEFAULT_TRAP_GUESTS)


def make_trap(spec: TrapSpec, generate: Callable[[str, random.Random], str],
              rng: random.Random) -> tuple[str, str]:
    """One trap: ``(text, label)``, host and guest texts drawn with ``generate(behavior, rng)``."""
    guests = spec.guest_shares
    guest = rng.choices(list(guests), weights=list(guests.values()))[0]
    host_text, guest_text = generate(spec.host, rng), generate(guest, rng)
    count = rng.randint(spec.min_sentences, spec.max_sentences)
    return plant_sentences(host_text, guest_text, count, rng), TRAP_PREFIX + guest


def parse_trap_guests(text: str) -> dict[str, float]:
    """``"situational_awareness:2,deception:1"`` -> ``{...: 2.0, ...: 1.0}`` (share 1 if omitted)."""
    guests: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, _, weight = part.partition(":")
        try:
            guests[name.strip()] = float(weight) if weight else 1.0
        except ValueError:
            raise ValueError(f"trap guest {part!r}: expected NAME or NAME:SHARE") from None
    if not guests:
        raise ValueError("no trap guest named")
    return guests
