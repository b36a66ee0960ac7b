"""Settings of the in-run attributor."""

from __future__ import annotations

from dataclasses import dataclass

from curriculum.attribution.ghost import EXACT_FORMS

MODES: tuple[str, ...] = ("exact", "sketched")


@dataclass
class AttributionConfig:
    """How :class:`~curriculum.attribution.attributor.InRunAttributor` computes scores."""

    mode: str = "exact"
    """``exact`` (true gradient dot products) or ``sketched`` (probe gradients at rank
    ``sketch_rank``; cheaper for wide layers, approximate)."""
    exact_forms: tuple[str, ...] = EXACT_FORMS
    """Exact forms the per-layer cost choice may pick from (``aggregated``, ``per_example``,
    ``gram``); see :mod:`curriculum.attribution.ghost`."""
    sketch_rank: int = 16
    """Rank r of each weight's sketched probe gradients (per side, shared by the K behaviors).
    Per-token cost grows linearly with r. At the demo's size (width 128) r=16 ranks documents
    like exact scores (Spearman 0.999); wider models may need more: ``bench/attribution_overhead.py
    --ranks`` measures it."""
    sketch_power_iterations: int = 1
    """Power iterations of the randomized range finder (more: better subspace, slower refresh)."""
    precondition: bool | None = None
    """Divide probe gradients by ``sqrt(v_hat) + eps`` from the Adam state. None: on when an
    Adam/AdamW optimizer is given, off otherwise."""
    probe_micro_batch_size: int = 32
    """Probe documents per forward/backward when computing probe gradients."""
    max_chunk_bytes: int = 64 * 2**20
    """Bound on the transient memory of one layer's dot products (examples are chunked)."""
    check_coverage: bool = True
    """On the first probe refresh, rebuild each covered gradient from the hooks' pieces and
    exclude (with a warning) parameters whose gradient the hooks do not fully see."""
    coverage_check_rows: int = 4
    """Probe rows used by the coverage check."""
    expand_shared_lookups: bool = True
    """Expand embedding lookups shared by the batch (position embeddings) to the batch while
    scoring, so their per-example gradients can be split (see :mod:`~.hooks`)."""
    warn_uncovered: bool = True
    """Warn once, at construction, about trainable layers the hooks do not cover."""
    seed: int = 0
    """Seed of the sketch's random test matrices."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        unknown = [form for form in self.exact_forms if form not in EXACT_FORMS]
        if unknown or not self.exact_forms:
            raise ValueError(
                f"exact_forms must be a non-empty subset of {', '.join(EXACT_FORMS)}, "
                f"got {self.exact_forms!r}"
            )
        for name in ("sketch_rank", "probe_micro_batch_size", "max_chunk_bytes",
                     "coverage_check_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.sketch_power_iterations < 0:
            raise ValueError(
                f"sketch_power_iterations must be >= 0, got {self.sketch_power_iterations}"
            )
