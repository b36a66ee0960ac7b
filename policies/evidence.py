"""Affinity as the prior, attribution as the evidence: the scores that combine them.

What a document *looks like* (affinity, known before training) and what it *does* to the model
(attribution, measured when trained on, kNN-estimated from measured neighbours otherwise) are
combined per behavior b as

- ``effect.<b>``: the document's effect on probe set b relative to its effect on the others: the
  attribution vector turned into "lowers the probe loss" (``-score``), each behavior divided by
  its scale in the store (the root mean square of that behavior's measured scores:
  :func:`behavior_scale`), then standardised across the K behaviors of that document,
  ``(e_b - mean_k e_k) / std_k e_k``. Scale-free, so measurements taken at different learning
  rates and stages of training compare; 0 when the document has no attribution information at
  all. Why the per-behavior scale: probe sets differ in how large their gradient is (a probe
  set the model finds hard has a large one), and without it the largest probe set leans every
  document its way; measured on the demo's trap corpus, own-category ROC AUC went from
  0.899 / 0.980 / 0.914 (values, SA, deception) to 0.911 / 0.983 / 0.913 with it.
- ``pct.effect.<b>``: its percentile within the store (like ``pct.affinity``), refreshed as
  measurements arrive.
- ``trust.<b>``: how much of the decision the evidence gets, shrinkage by measurement count
  ``n / (n + PRIOR_STRENGTH)``: ``n`` is the number of measurements of a measured document, and
  ``ESTIMATE_WEIGHT`` for a document with a kNN estimate only (an estimate is evidence borrowed
  from neighbours, worth less than a measurement of the document itself); 0 with neither.
- ``blend.<b>``: ``(1 - trust.<b>) * pct.affinity.<b> + trust.<b> * pct.effect.<b>``: the prior
  before anything is known, moving to the evidence as it accumulates. Both sides are percentiles,
  so the blend is on the same [0, 1] scale as ``pct.affinity`` and a rule written for one reads
  the same for the other.

Rules can use any of them, or write their own combination from ``pct.affinity``,
``pct.effect``, ``trust`` and ``measured`` with the language's arithmetic.
"""

from __future__ import annotations

import numpy as np

PRIOR_STRENGTH = 1.0
"""Measurements-worth of the affinity prior: one measurement makes ``trust`` 0.5."""
ESTIMATE_WEIGHT = 1.0
"""Measurements-worth of a kNN estimate (``trust`` 0.5 with the default prior strength)."""


def behavior_scale(attribution: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """(K,) float64: each behavior's root mean square attribution over the rows measured for
    it (of an (n, K) array and its (n, K) measured mask); 1.0 where nothing is measured yet
    or all are zero, so an empty store leaves scores as they are."""
    return scale_from_sums(*square_sums(attribution, measured))


def square_sums(attribution: np.ndarray, measured: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sum of squares, count) per behavior over the measured finite cells: what
    :func:`behavior_scale` needs, in a form that adds up over chunks of rows."""
    values = np.asarray(attribution, np.float64)
    used = np.asarray(measured, bool) & np.isfinite(values)
    return np.square(np.where(used, values, 0.0)).sum(axis=0), used.sum(axis=0)


def scale_from_sums(squares: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """:func:`behavior_scale` from :func:`square_sums` (summed over chunks)."""
    counts = np.asarray(counts, np.float64)
    rms = np.sqrt(np.asarray(squares, np.float64) / np.maximum(counts, 1.0))
    return np.where((counts > 0) & (rms > 0), rms, 1.0)


def relative_effect(attribution: np.ndarray, scale: np.ndarray | None = None) -> np.ndarray:
    """``effect`` (see the module docs) of an (n, K) or (K,) attribution array, float64.
    ``scale``: the (K,) :func:`behavior_scale` of the store (None: 1 for every behavior)."""
    effect = -np.asarray(attribution, np.float64)
    if scale is not None:
        effect = effect / np.asarray(scale, np.float64)
    centred = effect - effect.mean(axis=-1, keepdims=True)
    spread = centred.std(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(spread > 0, centred / np.where(spread > 0, spread, 1.0), 0.0)
    return np.where(np.isnan(effect).any(axis=-1, keepdims=True), np.nan, out)


def trust(attribution: np.ndarray, measured: np.ndarray, counts: np.ndarray | None = None,
          prior_strength: float = PRIOR_STRENGTH,
          estimate_weight: float = ESTIMATE_WEIGHT) -> np.ndarray:
    """``trust`` (see the module docs), float64 of the shape of ``measured``. ``counts``:
    measurements per cell (default: 1 per measured cell)."""
    measured = np.asarray(measured, bool)
    n = measured.astype(np.float64) if counts is None else \
        np.where(measured, np.asarray(counts, np.float64), 0.0)
    informed = np.any(np.asarray(attribution) != 0, axis=-1, keepdims=True)
    n = np.where(measured, n, np.where(informed, estimate_weight, 0.0))
    return n / (n + prior_strength)


def blend(pct_affinity: np.ndarray | None, pct_effect: np.ndarray | None,
          weight: np.ndarray) -> np.ndarray:
    """``blend`` (see the module docs); NaN where either percentile is missing."""
    if pct_affinity is None or pct_effect is None:
        return np.full(np.shape(weight), np.nan)
    return (1.0 - weight) * np.asarray(pct_affinity, np.float64) + \
        weight * np.asarray(pct_effect, np.float64)
