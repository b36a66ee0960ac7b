"""Simulate a policy over a store without training: what would it emit, defer, drop, and when?

The simulation streams the store's rows in order, ``docs_per_step`` emitted documents per
optimizer step, and drives the stages from steps and tokens (``tokens_per_doc`` per emitted
document) exactly as the trainer would, except that no metrics exist: stage conditions on
metrics never hold, so such stages run until their ``max_steps``, and adaptive policies keep their
prior. Deferred documents wait in a spool and are decided again once due (before new rows),
like the loader's defer spool; a row still waiting is not read again in a later pass. When the
rows run out the stream starts another pass over the store, as training epochs would.

Documents are grouped by behavior: the label from a ``labels.csv`` (``key,row,behavior``) when
given, else the behavior of highest affinity.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from policies.policy import Policy, PolicyRunner
from policies.preview_simulation import PreviewSimulation, PreviewSpool
from policies.scores import ScoreSource

#: Counters kept per stage and behavior.
COUNTERS: tuple[str, ...] = ("emitted", "deferred", "dropped", "released")
#: Steps simulated at most when no ``steps`` are given.
DEFAULT_MAX_STEPS = 100_000


@dataclass
class StageReport:
    """What happened while one stage was current."""

    index: int
    name: str
    start_step: int
    end_step: int | None = None
    """Step at which the next stage began; None if the stage was still running at the end."""
    exit_reason: str = ""
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    """``counts[behavior][counter]`` for counters in :data:`COUNTERS` (``emitted`` counts new
    documents, ``released`` counts deferred documents that came back and were emitted)."""
    weight_sum: dict[str, float] = field(default_factory=dict)
    """Sum of loss weights of emitted (new and released) documents, per behavior."""
    wait_steps_sum: dict[str, int] = field(default_factory=dict)
    """Sum over released documents of the steps they waited, per behavior."""
    first_release_step: int | None = None
    last_release_step: int | None = None

    def mean_weight(self, group: str) -> float:
        """Mean loss weight of the behavior's emitted documents (NaN if none)."""
        emitted = self.counts[group]["emitted"] + self.counts[group]["released"]
        return self.weight_sum[group] / emitted if emitted else float("nan")


@dataclass
class PreviewResult:
    """Everything the preview measured, with a text report (:meth:`format`)."""

    policy_name: str
    policy_type: str
    groups: tuple[str, ...]
    group_source: str
    num_rows: int
    docs_per_step: int
    tokens_per_doc: int
    steps: int
    passes: int
    stages: list[StageReport]
    emitted_per_step: np.ndarray
    """(steps, groups) documents emitted at each step."""
    weight_per_step: np.ndarray
    """(steps, groups) summed loss weight emitted at each step."""
    pending_per_step: np.ndarray
    """(steps, groups) documents waiting in the defer spool after each step."""
    released_per_step: np.ndarray
    """(steps, groups) deferred documents that came back at each step."""
    pending_at_end: dict[str, int]
    rule_counts: dict[str, int]
    """Documents decided per rule label, over the whole simulation."""
    notes: list[str]

    def format(self) -> str:
        """The report as text."""
        lines = [
            f"policy {self.policy_name} ({self.policy_type}) on {self.num_rows:,} documents; "
            f"{self.steps:,} steps x {self.docs_per_step} documents/step "
            f"({self.tokens_per_doc} tokens/document assumed); {self.passes} pass(es) over "
            f"the store",
            f"behavior of a document: {self.group_source}",
        ]
        width = max(12, *(len(g) for g in self.groups))
        for stage in self.stages:
            end = f"{stage.end_step:,}" if stage.end_step is not None else f"{self.steps:,}"
            how = f"ended: {stage.exit_reason}" if stage.end_step is not None else \
                "still running at the end"
            lines.append("")
            lines.append(f"stage {stage.index} '{stage.name}': steps {stage.start_step:,}-{end} "
                         f"({how})")
            lines.append(f"  {'behavior':<{width}} {'emitted':>9} {'deferred':>9} "
                         f"{'dropped':>9} {'released':>9} {'mean weight':>12} {'mean wait':>10}")
            for group in self.groups:
                c = stage.counts[group]
                released = c["released"]
                wait = f"{stage.wait_steps_sum[group] / released:,.0f}" if released else "-"
                mean = stage.mean_weight(group)
                mean_text = f"{mean:.3f}" if mean == mean else "-"
                lines.append(f"  {group:<{width}} {c['emitted']:>9,} {c['deferred']:>9,} "
                             f"{c['dropped']:>9,} {released:>9,} {mean_text:>12} {wait:>10}")
            if stage.first_release_step is not None:
                lines.append(f"  deferred documents came back from step "
                             f"{stage.first_release_step:,} to {stage.last_release_step:,}")
        pending = sum(self.pending_at_end.values())
        lines.append("")
        lines.append(f"still deferred at the end: {pending:,}" + (
            " (" + ", ".join(f"{g} {n:,}" for g, n in self.pending_at_end.items() if n) + ")"
            if pending else ""))
        lines.append("decisions by rule:")
        for rule, count in sorted(self.rule_counts.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {count:>9,}  {rule}")
        lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines)


def read_row_labels(path: str | Path, num_rows: int) -> np.ndarray:
    """Behavior label per row from a ``labels.csv`` with ``row`` and ``behavior`` columns
    (rows it does not list are ``unlabelled``)."""
    labels = np.full(num_rows, "unlabelled", dtype=object)
    with Path(path).open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"row", "behavior"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: expected a CSV with 'row' and 'behavior' columns")
        for record in reader:
            try:
                row = int(record["row"])
            except (TypeError, ValueError):
                raise ValueError(f"{path}: bad row {record['row']!r}") from None
            if 0 <= row < num_rows:
                labels[row] = record["behavior"]
    return labels


def argmax_labels(store: ScoreSource, chunk_rows: int = 1 << 18) -> np.ndarray:
    """Behavior of highest affinity per row."""
    behaviors = np.array(store.behaviors, dtype=object)
    labels = np.empty(store.num_rows, dtype=object)
    for start in range(0, store.num_rows, chunk_rows):
        rows = np.arange(start, min(store.num_rows, start + chunk_rows), dtype=np.int64)
        affinity = np.asarray(store.affinity(rows), np.float64)
        affinity = np.where(np.isnan(affinity), -np.inf, affinity)
        labels[start:start + len(rows)] = behaviors[np.argmax(affinity, axis=1)]
    return labels


#: Stores up to this many rows x behaviors are read into memory once for a preview.
CACHE_MAX_VALUES = 50_000_000


class _InMemoryScores:
    """The store's scores read once (a preview never writes, so they cannot change under it)."""

    def __init__(self, store: ScoreSource, chunk_rows: int = 1 << 18) -> None:
        self.behaviors = tuple(store.behaviors)
        self.num_rows = int(store.num_rows)
        k = len(self.behaviors)
        self._affinity = np.empty((self.num_rows, k), np.float32)
        self._attribution = np.empty((self.num_rows, k), np.float32)
        self._measured = np.empty((self.num_rows, k), bool)
        for start in range(0, self.num_rows, chunk_rows):
            rows = np.arange(start, min(self.num_rows, start + chunk_rows), dtype=np.int64)
            self._affinity[rows] = store.affinity(rows)
            self._attribution[rows] = store.attribution(rows)
            self._measured[rows] = store.is_measured(rows)

    def affinity(self, rows: np.ndarray) -> np.ndarray:
        return self._affinity[rows]

    def attribution(self, rows: np.ndarray) -> np.ndarray:
        return self._attribution[rows]

    def is_measured(self, rows: np.ndarray) -> np.ndarray:
        return self._measured[rows]


def preview_policy(policy: Policy, store: ScoreSource, steps: int | None = None,
                   docs_per_step: int = 32, tokens_per_doc: int = 512,
                   labels: str | Path | None = None, chunk_rows: int = 4096) -> PreviewResult:
    """Simulate ``policy`` over ``store`` (see the module docstring).

    ``steps`` None runs until one pass over the store is complete and every deferred document
    has come back, at most :data:`DEFAULT_MAX_STEPS` steps.
    """
    if docs_per_step < 1:
        raise ValueError(f"docs_per_step must be >= 1, got {docs_per_step}")
    if steps is not None and steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if tokens_per_doc < 1:
        raise ValueError(f"tokens_per_doc must be >= 1, got {tokens_per_doc}")
    num_rows = int(store.num_rows)
    if num_rows == 0:
        raise ValueError("the store has no documents")
    if num_rows * len(store.behaviors) <= CACHE_MAX_VALUES:
        store = _InMemoryScores(store)
    if labels is not None:
        row_groups = read_row_labels(labels, num_rows)
        group_source = f"label from {labels}"
    else:
        row_groups = argmax_labels(store)
        group_source = "behavior of highest affinity"
    groups = tuple(sorted(set(row_groups.tolist()),
                          key=lambda g: (store.behaviors.index(g) if g in store.behaviors
                                         else len(store.behaviors), g)))
    group_index = {g: i for i, g in enumerate(groups)}
    row_group = np.array([group_index[g] for g in row_groups.tolist()], np.int64)

    def new_stage_report(index: int, start: int) -> StageReport:
        return StageReport(index, policy.stages[index].name, start,
                           counts={g: dict.fromkeys(COUNTERS, 0) for g in groups},
                           weight_sum=dict.fromkeys(groups, 0.0),
                           wait_steps_sum=dict.fromkeys(groups, 0))

    run = PreviewSimulation(policy, PolicyRunner(policy, store), row_group, groups,
                            new_stage_report, docs_per_step, tokens_per_doc, chunk_rows, steps,
                            steps if steps is not None else DEFAULT_MAX_STEPS).run()
    step, spool = run.step, run.spool
    pending_at_end = np.bincount(row_group[spool.rows], minlength=len(groups))
    return PreviewResult(
        policy_name=policy.spec.name, policy_type=policy.spec.type, groups=groups,
        group_source=group_source, num_rows=num_rows, docs_per_step=docs_per_step,
        tokens_per_doc=tokens_per_doc, steps=step, passes=run.passes, stages=run.reports,
        emitted_per_step=run.emitted[:step], weight_per_step=run.weights[:step],
        pending_per_step=run.pending[:step], released_per_step=run.released[:step],
        pending_at_end={g: int(n) for g, n in zip(groups, pending_at_end, strict=True)},
        rule_counts=run.rule_counts, notes=_notes(policy, run.reports, step, steps, spool))


def _notes(policy: Policy, reports: Sequence[StageReport], steps_run: int,
           steps: int | None, spool: PreviewSpool) -> list[str]:
    notes = []
    for stage in policy.stages:
        exit_spec = stage.exit
        if exit_spec is not None and exit_spec.when is not None:
            fallback = f"its max_steps ({exit_spec.max_steps:,})" if exit_spec.max_steps else \
                "its steps/tokens limit, if any"
            notes.append(f"stage {stage.index} '{stage.name}' can end on a metric condition "
                         f"('{exit_spec.when.source}'); a preview logs no metrics, so only "
                         f"{fallback} ended it here")
    if policy.spec.type != "staged":
        notes.append(f"'{policy.spec.type}' adapts to logged metrics; a preview has none, so it "
                     f"shows the policy's starting behaviour")
    if steps is None and steps_run >= DEFAULT_MAX_STEPS and len(spool.rows):
        notes.append(f"stopped after {DEFAULT_MAX_STEPS:,} steps with documents still deferred; "
                     f"pass --steps to simulate longer")
    if reports and reports[-1].index < len(policy.stages) - 1:
        notes.append(f"the simulation ended in stage {reports[-1].index}; later stages were not "
                     f"reached (pass more --steps)")
    return notes


def plot_preview(result: PreviewResult, path: str | Path, max_points: int = 400) -> Path:
    """Draw emitted documents, deferred documents waiting, and mean weights over steps (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = result.steps
    width = max(1, -(-steps // max_points))
    edges = np.arange(0, steps + width, width)[: (steps + width - 1) // width + 1]
    edges[-1] = min(edges[-1], steps)

    def binned(values: np.ndarray, reduce: str) -> np.ndarray:
        out = []
        for start, end in zip(edges[:-1], edges[1:], strict=True):
            chunk = values[start:end]
            out.append(chunk.sum(axis=0) if reduce == "sum" else chunk[-1])
        return np.array(out).reshape(len(out), len(result.groups))

    x = edges[:-1]
    emitted = binned(result.emitted_per_step, "sum") / np.maximum(1, np.diff(edges))[:, None]
    weight = binned(result.weight_per_step, "sum")
    count = binned(result.emitted_per_step, "sum")
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_weight = np.where(count > 0, weight / np.maximum(count, 1), np.nan)
    pending = binned(result.pending_per_step, "last")

    figure, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    axes[0].stackplot(x, emitted.T, labels=result.groups, step="post")
    axes[0].set_ylabel("emitted / step")
    axes[0].legend(loc="upper right", fontsize="small")
    for g, group in enumerate(result.groups):
        axes[1].plot(x, pending[:, g], label=group, drawstyle="steps-post")
        axes[2].plot(x, mean_weight[:, g], label=group, drawstyle="steps-post")
    axes[1].set_ylabel("deferred, waiting")
    axes[2].set_ylabel("mean loss weight")
    axes[2].set_xlabel("step")
    for stage in result.stages[1:]:
        for axis in axes:
            axis.axvline(stage.start_step, color="grey", linestyle="--", linewidth=1)
        axes[0].annotate(stage.name, (stage.start_step, 1.0), xycoords=("data", "axes fraction"),
                         ha="left", va="top", fontsize="small")
    axes[0].set_title(f"policy {result.policy_name}: {result.docs_per_step} documents/step")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
