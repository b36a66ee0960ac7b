"""The policy protocol, the staged YAML policy, and :class:`PolicyRunner` that binds a policy
to a store.

A policy maps (a document's scores, the curriculum state) to a :data:`~policies.Decision`. It
must be deterministic: the same scores, state and seed always give the same decision, whichever
worker, rank or resumed run asks. Policies that adapt online (the bandit) do so only through
:meth:`Policy.observe`, which the trainer calls on step boundaries; what it returns is published
into :attr:`CurriculumState.metrics`, so workers see the adaptation without sharing objects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from policies.decisions import Decision, DecisionBatch
from policies.rules import compile_stages
from policies.schema import PolicySpec, StageSpec
from policies.scores import (
    NEEDS_PERCENTILES,
    PERCENTILE_FAMILIES,
    DocumentScores,
    PercentileTable,
    ScoreBatch,
    ScoreLayout,
    ScoreSource,
    StoreScores,
)
from policies.state import CurriculumState


@runtime_checkable
class Policy(Protocol):
    """What the loader and the trainer need from a curriculum policy."""

    spec: PolicySpec
    """The validated configuration (name, seed, stages, behaviors)."""

    @property
    def stages(self) -> tuple[StageSpec, ...]:
        """The stages, with their exit conditions (drive them with a StageTracker)."""
        ...

    @property
    def percentile_families(self) -> tuple[str, ...]:
        """Percentile families (``pct.affinity``, ``pct.attribution``) the policy reads."""
        ...

    def decide(self, scores: DocumentScores, state: CurriculumState) -> Decision:
        """Decide one document."""
        ...

    def decide_batch(self, scores: ScoreBatch, state: CurriculumState) -> DecisionBatch:
        """Decide many documents at once; equal to calling :meth:`decide` on each."""
        ...

    def observe(self, step: int, tokens: int, metrics: Mapping[str, float]) -> dict[str, float]:
        """Learn from logged metrics at a step boundary (trainer, rank 0); returns values to
        publish into ``CurriculumState.metrics`` for the workers."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """What :meth:`observe` learned, for checkpoints."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        ...


class BasePolicy:
    """Defaults for Python policies: one endless stage, a batch path that loops over
    :meth:`decide`, nothing to observe. Subclass it and implement :meth:`decide`."""

    def __init__(self, spec: PolicySpec) -> None:
        self.spec = spec
        self.layout = ScoreLayout(spec.behaviors, spec.principles)

    @property
    def stages(self) -> tuple[StageSpec, ...]:
        return self.spec.stages or (StageSpec("main", 0),)

    @property
    def percentile_families(self) -> tuple[str, ...]:
        return ()

    @property
    def reads_assessments(self) -> bool:
        """Whether a rule reads ``assess.*`` or ``pct.assess.*`` (else they are not loaded)."""
        return False

    @property
    def behaviors(self) -> tuple[str, ...]:
        return self.spec.behaviors

    def decide(self, scores: DocumentScores, state: CurriculumState) -> Decision:
        raise NotImplementedError

    def decide_batch(self, scores: ScoreBatch, state: CurriculumState) -> DecisionBatch:
        decisions = [self.decide(scores.document(i), state) for i in range(len(scores))]
        return DecisionBatch.from_decisions(scores.rows, decisions)

    def observe(self, step: int, tokens: int, metrics: Mapping[str, float]) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.spec.name!r}, type={self.spec.type!r})"


class StagedPolicy(BasePolicy):
    """The rule-based policy of a YAML file with ``stages``: each stage's rules, compiled once."""

    def __init__(self, spec: PolicySpec) -> None:
        super().__init__(spec)
        self.compiled = compile_stages(spec.stages, self.layout, spec.seed, spec.min_weight,
                                       spec.max_weight)
        used: set[str] = set()
        for stage in spec.stages:
            for rule in stage.rules:
                for expression in (rule.when, getattr(rule, "priority", None)):
                    if expression is not None:
                        used.update(self.layout.family_of(n) for n in expression.names)
        needed = {p for family in used for p in NEEDS_PERCENTILES.get(family, ())}
        self._percentiles = tuple(f for f in PERCENTILE_FAMILIES if f in needed)
        self._reads_assessments = bool(used & {"assess", "pct.assess"})

    @property
    def percentile_families(self) -> tuple[str, ...]:
        return self._percentiles

    @property
    def reads_assessments(self) -> bool:
        return self._reads_assessments

    def __reduce__(self) -> tuple[type, tuple[PolicySpec]]:
        # Compiled closures do not pickle; the spec does, and compiling again is cheap. This
        # lets a policy travel to DataLoader workers started with "spawn".
        return (type(self), (self.spec,))

    def _stage(self, state: CurriculumState):
        # A stage index past the end (a stale or foreign tracker) means the last stage.
        return self.compiled[min(state.stage, len(self.compiled) - 1)]

    def decide(self, scores: DocumentScores, state: CurriculumState) -> Decision:
        self._check_percentiles(scores)
        env = self.layout.vector(scores, state)
        return self._stage(state).decide(env, scores.row, state)

    def decide_batch(self, scores: ScoreBatch, state: CurriculumState) -> DecisionBatch:
        self._check_percentiles(scores)
        matrix = self.layout.matrix(scores, state)
        return self._stage(state).decide_batch(matrix, np.asarray(scores.rows, np.int64), state)

    def _check_percentiles(self, scores: DocumentScores | ScoreBatch) -> None:
        for family in self._percentiles:
            if getattr(scores, family.replace(".", "_")) is None:
                raise ValueError(f"policy {self.spec.name!r} reads {family}.*, but the scores "
                                 f"carry no percentiles; read them with PolicyRunner or "
                                 f"StoreScores(store, policy.percentile_families)")


class PolicyRunner:
    """A policy bound to a store: reads scores for rows and decides (the loader's entry point).

    Build it once per worker (or once before forking, then share ``tables``): percentile tables
    for the families the policy reads are computed here. Call :meth:`refresh` after the
    attribution table changed a lot, so attribution percentiles follow.
    """

    def __init__(self, policy: Policy, store: ScoreSource,
                 tables: dict[str, PercentileTable] | None = None) -> None:
        if tuple(store.behaviors) != tuple(policy.spec.behaviors):
            raise ValueError(f"policy {policy.spec.name!r} was loaded for behaviors "
                             f"{policy.spec.behaviors}, but the store has {tuple(store.behaviors)}")
        self.policy = policy
        reads = getattr(policy, "reads_assessments", False)
        self.scores = StoreScores(store, policy.percentile_families, tables,
                                  principles=policy.spec.principles if reads else ())

    @property
    def tables(self) -> dict[str, PercentileTable]:
        """The percentile tables in use (pass them to other runners to share the work)."""
        return self.scores.tables

    def refresh(self) -> None:
        """Rebuild the attribution percentiles from the store's current attribution."""
        self.scores.refresh()

    def decide_rows(self, rows: Sequence[int] | np.ndarray,
                    state: CurriculumState) -> DecisionBatch:
        """Decisions for ``rows`` (vectorised; the fast path)."""
        return self.policy.decide_batch(self.scores.batch(rows), state)

    def decide_row(self, row: int, state: CurriculumState) -> Decision:
        """The decision for one row."""
        return self.policy.decide(self.scores.document(row), state)
