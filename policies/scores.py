"""The scores a rule can read for a document, and where they come from.

Names a rule may use (``<b>`` is a behavior of the store):

- ``affinity.<b>``: similarity of the document to behavior b's probe set (known before training);
- ``attribution.<b>``: online attribution score (measured mean, or the store's kNN estimate);
- ``measured.<b>``: 1 if the attribution was measured on this document, else 0;
- ``pct.affinity.<b>``, ``pct.attribution.<b>``: the same scores rank-normalised to [0, 1]
  within the store (the fraction of documents scoring lower, ties counted half), which stays
  comparable while raw attribution scales drift during training;
- ``effect.<b>``, ``pct.effect.<b>``, ``trust.<b>``, ``blend.<b>``: attribution as evidence
  against the affinity prior (see :mod:`policies.evidence`);
- ``step``, ``stage``, ``tokens``: the curriculum state;
- ``assess.<p>``: the 0-100 score a curation judge gave the document for principle p
  (``curriculum curate --store``), **NaN when the document was not assessed**, so every
  comparison on it is false (``assess.deception >= 80`` drops only assessed documents);
  ``pct.assess.<p>``: its percentile among the assessed documents (NaN stays NaN). ``<p>`` is a
  principle the store holds assessments of (``store.assessed_principles``).

The store is read through :class:`ScoreSource` (the behavior store satisfies it); percentile
tables are sorted copies of whole columns, built once and searched with ``np.searchsorted``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from policies.evidence import blend, relative_effect, scale_from_sums, square_sums, trust
from policies.percentiles import PercentileTable
from policies.state import CurriculumState

#: Per-behavior score families, in slot order.
FAMILIES: tuple[str, ...] = ("affinity", "attribution", "measured", "pct.affinity",
                             "pct.attribution", "effect", "trust", "pct.effect", "blend")
#: Curriculum-state names a rule may read.
STATE_NAMES: tuple[str, ...] = ("step", "stage", "tokens")
#: Families whose values come from a percentile table.
PERCENTILE_FAMILIES: tuple[str, ...] = ("pct.affinity", "pct.attribution", "pct.effect",
                                        "pct.assess")
#: Percentile families a family needs (``blend`` combines two of them).
NEEDS_PERCENTILES: dict[str, tuple[str, ...]] = {
    "pct.affinity": ("pct.affinity",), "pct.attribution": ("pct.attribution",),
    "pct.effect": ("pct.effect",), "blend": ("pct.affinity", "pct.effect"),
    # effect itself is scaled by the store's behavior scale, refreshed with the effect table.
    "effect": ("pct.effect",),
    "pct.assess": ("pct.assess",),
}
#: Families that change as attribution arrives (their tables need refreshing).
LIVE_PERCENTILE_FAMILIES: tuple[str, ...] = ("pct.attribution", "pct.effect")
#: Per-principle score families (curation assessments), in slot order after the state names.
ASSESS_FAMILIES: tuple[str, ...] = ("assess", "pct.assess")


@runtime_checkable
class AssessmentSource(Protocol):
    """A store that also holds curation assessments (``curriculum.BehaviorStore`` is one)."""

    @property
    def assessed_principles(self) -> tuple[str, ...]: ...

    def assessment(self, rows: np.ndarray, principles: Sequence[str] | None = None
                   ) -> np.ndarray: ...


def assessed_principles(store: object) -> tuple[str, ...]:
    """The principles a store holds assessments of (none for a plain ScoreSource)."""
    return tuple(getattr(store, "assessed_principles", ()) or ())


@runtime_checkable
class ScoreSource(Protocol):
    """What a policy reads from a behavior store (``curriculum.BehaviorStore`` satisfies it)."""

    @property
    def behaviors(self) -> tuple[str, ...]: ...

    @property
    def num_rows(self) -> int: ...

    def affinity(self, rows: np.ndarray) -> np.ndarray: ...

    def attribution(self, rows: np.ndarray) -> np.ndarray: ...

    def is_measured(self, rows: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class DocumentScores:
    """The scores of one document (each array has one entry per behavior, in store order)."""

    row: int
    affinity: np.ndarray
    attribution: np.ndarray
    measured: np.ndarray
    pct_affinity: np.ndarray | Sequence[float] | None = None
    """Percentile of ``affinity`` within the store; needed only by policies that read it."""
    pct_attribution: np.ndarray | Sequence[float] | None = None
    """Percentile of ``attribution`` within the store; needed only by policies that read it."""
    pct_effect: np.ndarray | Sequence[float] | None = None
    """Percentile of ``effect`` within the store; needed only by policies that read it."""
    counts: np.ndarray | None = None
    """Measurements per behavior (default: 1 where measured)."""
    assess: np.ndarray | Sequence[float] | None = None
    """Curation scores, one per principle of the layout (NaN = not assessed)."""
    pct_assess: np.ndarray | Sequence[float] | None = None
    """Percentiles of ``assess`` among assessed documents; needed only by policies reading it."""
    effect: np.ndarray | None = None
    """``effect`` under the store's behavior scale (None: computed with scale 1)."""


@dataclass(frozen=True)
class ScoreBatch:
    """The scores of ``n`` documents: arrays of shape (n, K), rows in the same order."""

    rows: np.ndarray
    affinity: np.ndarray
    attribution: np.ndarray
    measured: np.ndarray
    pct_affinity: np.ndarray | None = None
    pct_attribution: np.ndarray | None = None
    pct_effect: np.ndarray | None = None
    counts: np.ndarray | None = None
    assess: np.ndarray | None = None
    """(n, P) curation scores (NaN = not assessed), when the policy reads principles."""
    pct_assess: np.ndarray | None = None
    effect: np.ndarray | None = None
    """(n, K) ``effect`` under the store's behavior scale (None: computed with scale 1)."""

    def __len__(self) -> int:
        return len(self.rows)

    def document(self, index: int) -> DocumentScores:
        """The scores of the ``index``-th document of the batch."""
        return DocumentScores(
            int(self.rows[index]), self.affinity[index], self.attribution[index],
            self.measured[index],
            None if self.pct_affinity is None else self.pct_affinity[index],
            None if self.pct_attribution is None else self.pct_attribution[index],
            None if self.pct_effect is None else self.pct_effect[index],
            None if self.counts is None else self.counts[index],
            None if self.assess is None else self.assess[index],
            None if self.pct_assess is None else self.pct_assess[index],
            None if self.effect is None else self.effect[index],
        )


class ScoreLayout:
    """Where each readable name lives in a flat score vector (one slot per name).

    Compiled expressions read slots by index: a Python list for one document, a column of an
    (n, slots) float64 matrix for a batch. Both paths hold the same float64 values, so a rule
    decides a document the same way in either.
    """

    def __init__(self, behaviors: Sequence[str], principles: Sequence[str] = ()) -> None:
        self.behaviors = tuple(behaviors)
        self.principles = tuple(principles)
        k = len(self.behaviors)
        self.slots: dict[str, int] = {}
        for f, family in enumerate(FAMILIES):
            for b, behavior in enumerate(self.behaviors):
                self.slots[f"{family}.{behavior}"] = f * k + b
        for i, name in enumerate(STATE_NAMES):
            self.slots[name] = len(FAMILIES) * k + i
        # Assessment slots come after the state names, so behavior slot numbers never move.
        self._assess_start = len(FAMILIES) * k + len(STATE_NAMES)
        p = len(self.principles)
        for f, family in enumerate(ASSESS_FAMILIES):
            for j, principle in enumerate(self.principles):
                self.slots[f"{family}.{principle}"] = self._assess_start + f * p + j
        self.size = len(self.slots)
        self._nan = np.full(k, np.nan)
        self._nan_principles = np.full(p, np.nan)

    def family_of(self, name: str) -> str | None:
        """The score family of a per-behavior name (``pct.affinity``), or None for state names."""
        for family in sorted((*FAMILIES, *ASSESS_FAMILIES), key=len, reverse=True):
            if name.startswith(family + "."):
                return family
        return None

    def vector(self, scores: DocumentScores, state: CurriculumState) -> list[float]:
        """The flat slot values of one document (unneeded percentile slots are NaN)."""
        nan = self._nan
        effect = relative_effect(scores.attribution) if scores.effect is None else scores.effect
        weight = trust(scores.attribution, scores.measured, scores.counts)
        values = np.concatenate(
            (scores.affinity, scores.attribution, scores.measured,
             nan if scores.pct_affinity is None else scores.pct_affinity,
             nan if scores.pct_attribution is None else scores.pct_attribution,
             effect, weight,
             nan if scores.pct_effect is None else scores.pct_effect,
             blend(scores.pct_affinity, scores.pct_effect, weight)),
            dtype=np.float64).tolist()
        values += (float(state.step), float(state.stage), float(state.tokens))
        if self.principles:
            nan = self._nan_principles
            values += np.concatenate(
                (nan if scores.assess is None else scores.assess,
                 nan if scores.pct_assess is None else scores.pct_assess),
                dtype=np.float64).tolist()
        return values

    def matrix(self, scores: ScoreBatch, state: CurriculumState) -> np.ndarray:
        """The (n, slots) float64 matrix of a batch (unneeded percentile slots are NaN)."""
        n, k = len(scores), len(self.behaviors)
        out = np.empty((n, self.size), np.float64)
        out[:, 0:k] = scores.affinity
        out[:, k:2 * k] = scores.attribution
        out[:, 2 * k:3 * k] = scores.measured
        for f, values in ((3, scores.pct_affinity), (4, scores.pct_attribution),
                          (7, scores.pct_effect)):
            out[:, f * k:(f + 1) * k] = np.nan if values is None else values
        weight = trust(scores.attribution, scores.measured, scores.counts)
        out[:, 5 * k:6 * k] = relative_effect(scores.attribution) if scores.effect is None \
            else scores.effect
        out[:, 6 * k:7 * k] = weight
        out[:, 8 * k:9 * k] = blend(scores.pct_affinity, scores.pct_effect, weight)
        start = self._assess_start
        out[:, len(FAMILIES) * k:start] = (state.step, state.stage, state.tokens)
        p = len(self.principles)
        for f, values in ((0, scores.assess), (1, scores.pct_assess)):
            out[:, start + f * p:start + (f + 1) * p] = np.nan if values is None else values
        return out


class StoreScores:
    """Reads :class:`ScoreBatch` and :class:`DocumentScores` for rows of a store.

    Percentile tables are built only for the families in ``percentile_families``; pass prebuilt
    ``tables`` to share them (build once in the parent process before DataLoader workers fork).
    Attribution percentiles drift as measurements arrive: call :meth:`refresh` now and then.
    """

    def __init__(self, store: ScoreSource, percentile_families: Iterable[str] = (),
                 tables: dict[str, PercentileTable] | None = None,
                 principles: Sequence[str] = ()) -> None:
        self.store = store
        self.behaviors = tuple(store.behaviors)
        self.principles = tuple(principles)
        """Principles whose assessments are read (``assess.<p>``), in layout order."""
        self.percentile_families = tuple(percentile_families)
        unknown = set(self.percentile_families) - set(PERCENTILE_FAMILIES)
        if unknown:
            raise ValueError(f"unknown percentile families: {sorted(unknown)}")
        self.tables: dict[str, PercentileTable] = dict(tables or {})
        self._effect_scale: np.ndarray | None = None
        for family in self.percentile_families:
            if family not in self.tables:
                self.tables[family] = self._table(family)

    def _table(self, family: str) -> PercentileTable:
        if family == "pct.assess":
            return PercentileTable.from_values(self._assessment(
                np.arange(int(self.store.num_rows), dtype=np.int64)))
        return PercentileTable.from_store(self.store, family.split(".")[1],
                                          effect_scale=self.effect_scale)

    @property
    def effect_scale(self) -> np.ndarray:
        """(K,) per-behavior scale of ``effect`` (:func:`~policies.evidence.behavior_scale`)
        over the store's measured rows, as of the last :meth:`refresh` (read on first use)."""
        if self._effect_scale is None:
            self._effect_scale = self._read_effect_scale()
        return self._effect_scale

    def _effect(self, attribution: np.ndarray) -> np.ndarray | None:
        # Only policies that read effect (through pct.effect) pay for the store-wide scale.
        if "pct.effect" not in self.percentile_families:
            return None
        return relative_effect(attribution, self.effect_scale)

    def _read_effect_scale(self, chunk_rows: int = 1 << 20) -> np.ndarray:
        n, k = int(self.store.num_rows), len(self.behaviors)
        squares, counts = np.zeros(k), np.zeros(k)
        for start in range(0, n, chunk_rows):
            rows = np.arange(start, min(n, start + chunk_rows), dtype=np.int64)
            measured = np.asarray(self.store.is_measured(rows), bool)
            if measured.any():
                part_squares, part_counts = square_sums(self.store.attribution(rows), measured)
                squares += part_squares
                counts += part_counts
        return scale_from_sums(squares, counts)

    def _assessment(self, rows: np.ndarray) -> np.ndarray | None:
        if not self.principles:
            return None
        if not isinstance(self.store, AssessmentSource):  # nothing assessed: NaN everywhere
            return np.full((len(rows), len(self.principles)), np.nan)
        return np.asarray(self.store.assessment(rows, self.principles), np.float64)

    def refresh(self) -> None:
        """Rebuild the behavior scale of ``effect`` and the percentile tables that follow
        attribution from the store's current state."""
        if "pct.effect" in self.percentile_families:
            self._effect_scale = self._read_effect_scale()
        for family in LIVE_PERCENTILE_FAMILIES:
            if family in self.percentile_families:
                self.tables[family] = PercentileTable.from_store(
                    self.store, family.split(".")[1], effect_scale=self.effect_scale)

    def _counts(self, rows: np.ndarray) -> np.ndarray | None:
        counts = getattr(self.store, "attribution_counts", None)
        return None if counts is None else np.asarray(counts(rows))

    def batch(self, rows: Sequence[int] | np.ndarray) -> ScoreBatch:
        """The scores of ``rows``."""
        rows = np.asarray(rows, np.int64)
        affinity = np.asarray(self.store.affinity(rows))
        attribution = np.asarray(self.store.attribution(rows))
        measured = np.asarray(self.store.is_measured(rows))
        pct_affinity = pct_attribution = pct_effect = None
        if "pct.affinity" in self.tables:
            pct_affinity = self.tables["pct.affinity"].percentile(affinity)
        if "pct.attribution" in self.tables:
            pct_attribution = self.tables["pct.attribution"].percentile(attribution)
        effect = self._effect(attribution)
        if effect is not None and "pct.effect" in self.tables:
            pct_effect = self.tables["pct.effect"].percentile(effect)
        assess = self._assessment(rows)
        pct_assess = None
        if assess is not None and "pct.assess" in self.tables:
            pct_assess = self.tables["pct.assess"].percentile(assess)
        return ScoreBatch(rows, affinity, attribution, measured, pct_affinity, pct_attribution,
                          pct_effect=pct_effect, counts=self._counts(rows), assess=assess,
                          pct_assess=pct_assess, effect=effect)

    def document(self, row: int) -> DocumentScores:
        """The scores of one row."""
        rows = np.array([row], np.int64)
        affinity = np.asarray(self.store.affinity(rows))[0]
        attribution = np.asarray(self.store.attribution(rows))[0]
        measured = np.asarray(self.store.is_measured(rows))[0]
        pct_affinity = pct_attribution = pct_effect = None
        if "pct.affinity" in self.tables:
            pct_affinity = self.tables["pct.affinity"].percentile_one(affinity)
        if "pct.attribution" in self.tables:
            pct_attribution = self.tables["pct.attribution"].percentile_one(attribution)
        effect = self._effect(attribution)
        if effect is not None and "pct.effect" in self.tables:
            pct_effect = self.tables["pct.effect"].percentile_one(effect)
        counts = self._counts(rows)
        assess = self._assessment(rows)
        pct_assess = None
        if assess is not None and "pct.assess" in self.tables:
            pct_assess = self.tables["pct.assess"].percentile(assess)[0]
        return DocumentScores(int(row), affinity, attribution, measured, pct_affinity,
                              pct_attribution, pct_effect=pct_effect,
                              counts=None if counts is None else counts[0],
                              assess=None if assess is None else assess[0], pct_assess=pct_assess,
                              effect=effect)
