"""What a policy decides for one document: emit it (with a weight and a priority), defer it, or
drop it — always together with the rule that decided, so the ledger and logs can say why.

:class:`DecisionBatch` is the same information for many documents as arrays, which is what the
vectorised path (:meth:`Policy.decide_batch`) returns; ``batch[i]`` gives the single decision.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from curriculum.ledger.records import Fate

#: Codes of :attr:`DecisionBatch.kind`: the ledger's fate codes, one numbering for both.
EMIT, DEFER, DROP = int(Fate.EMIT), int(Fate.DEFER), int(Fate.DROP)
KIND_NAMES: dict[int, str] = {EMIT: "emit", DEFER: "defer", DROP: "drop"}


@dataclass(frozen=True)
class Emit:
    """Train on the document now."""

    weight: float = 1.0
    """Loss-weight factor for the document's tokens (1.0 = unchanged)."""

    priority: float = 0.0
    """Order key for the loader's reorder window: higher leaves the window first."""

    rule: str = "default"
    """The rule(s) that shaped this decision, e.g. ``stages[0].rules[0] (upweight)``."""

    tags: tuple[str, ...] = ()
    """Labels attached by ``tag`` rules (e.g. ``revise``), for routing and counting."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.weight) and self.weight >= 0):
            raise ValueError(f"Emit.weight must be finite and >= 0, got {self.weight}")
        if math.isnan(self.priority):
            raise ValueError("Emit.priority must not be NaN")


@dataclass(frozen=True)
class Defer:
    """Hold the document back until a later stage or step, then decide again.

    Exactly one of ``until_stage`` and ``until_step`` is set.
    """

    until_stage: int | None = None
    """The document becomes eligible again when the curriculum reaches this stage index."""

    until_step: int | None = None
    """The document becomes eligible again at this global step."""

    rule: str = "default"
    """The rule that deferred it, e.g. ``stages[0].rules[1] (delay)``."""

    def __post_init__(self) -> None:
        if (self.until_stage is None) == (self.until_step is None):
            raise ValueError("Defer needs exactly one of until_stage and until_step")
        target = self.until_stage if self.until_stage is not None else self.until_step
        if target < 0:
            raise ValueError(f"Defer target must be >= 0, got {target}")

    def is_due(self, stage: int, step: int) -> bool:
        """Whether the document may come back at this stage and step."""
        if self.until_stage is not None:
            return stage >= self.until_stage
        return step >= self.until_step  # type: ignore[operator]


@dataclass(frozen=True)
class Drop:
    """Never train on the document this epoch."""

    reason: str
    """Why, in words that can be counted (``filter: deception``)."""

    rule: str = "default"
    """The rule that dropped it, e.g. ``stages[0].rules[2] (drop)``."""


Decision = Emit | Defer | Drop
"""One of :class:`Emit`, :class:`Defer`, :class:`Drop`."""


@dataclass(frozen=True)
class DecisionBatch:
    """Decisions for ``n`` documents as parallel arrays (the vectorised form of :data:`Decision`).

    Fields that do not apply to a document's kind hold neutral values (weight 0 and priority 0
    for deferred and dropped documents, -1 for unused defer targets, "" for no reason).
    """

    rows: np.ndarray
    """int64 (n,): the store rows decided."""

    kind: np.ndarray
    """uint8 (n,): :data:`EMIT`, :data:`DEFER` or :data:`DROP`."""

    weight: np.ndarray
    """float64 (n,): loss weight of emitted documents."""

    priority: np.ndarray
    """float64 (n,): reorder priority of emitted documents."""

    until_stage: np.ndarray
    """int64 (n,): stage a deferred document waits for, or -1."""

    until_step: np.ndarray
    """int64 (n,): step a deferred document waits for, or -1."""

    rule: Sequence[str]
    """The deciding rule of each document."""

    reason: Sequence[str]
    """Drop reason of each document ("" unless dropped)."""

    tags: Sequence[tuple[str, ...]]
    """Tags of each document (``()`` unless emitted with tags)."""

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Decision:
        kind = int(self.kind[index])
        if kind == EMIT:
            return Emit(float(self.weight[index]), float(self.priority[index]),
                        self.rule[index], tuple(self.tags[index]))
        if kind == DEFER:
            stage, step = int(self.until_stage[index]), int(self.until_step[index])
            return Defer(stage if stage >= 0 else None, step if step >= 0 else None,
                         self.rule[index])
        return Drop(self.reason[index], self.rule[index])

    def __iter__(self) -> Iterator[Decision]:
        return (self[i] for i in range(len(self)))

    def counts(self) -> dict[str, int]:
        """Number of documents per kind: ``{"emit": ..., "defer": ..., "drop": ...}``."""
        binned = np.bincount(self.kind, minlength=max(KIND_NAMES) + 1)
        return {name: int(binned[code]) for code, name in KIND_NAMES.items()}

    def rule_counts(self) -> Counter[str]:
        """How many documents each rule decided (for logs: why did the curriculum do this)."""
        return Counter(self.rule)

    @staticmethod
    def from_decisions(rows: Sequence[int] | np.ndarray,
                       decisions: Sequence[Decision]) -> DecisionBatch:
        """Pack single decisions into a batch (used by policies without a vectorised path)."""
        n = len(decisions)
        kind = np.full(n, EMIT, np.uint8)
        weight = np.zeros(n, np.float64)
        priority = np.zeros(n, np.float64)
        until_stage = np.full(n, -1, np.int64)
        until_step = np.full(n, -1, np.int64)
        rule, reason, tags = [], [], []
        for i, decision in enumerate(decisions):
            rule.append(decision.rule)
            if isinstance(decision, Emit):
                weight[i], priority[i] = decision.weight, decision.priority
                reason.append("")
                tags.append(decision.tags)
                continue
            tags.append(())
            if isinstance(decision, Defer):
                kind[i] = DEFER
                if decision.until_stage is not None:
                    until_stage[i] = decision.until_stage
                else:
                    until_step[i] = decision.until_step
                reason.append("")
            else:
                kind[i] = DROP
                reason.append(decision.reason)
        return DecisionBatch(np.asarray(rows, np.int64), kind, weight, priority, until_stage,
                             until_step, rule, reason, tags)
