"""Figures of what the curriculum did: probe losses with stages, the stream's mix, drops, the
defer spool and loss weights. Each writes ``NAME.png`` and ``NAME.csv`` (the numbers drawn)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from curriculum.report.collect import RunData
from curriculum.report.metrics import stage_changes
from curriculum.report.plotting import Figure, run_color, save, shade_stages, subplots, write_csv


def _missing(name: str, title: str, caption: str, why: str) -> Figure:
    return Figure(name, title, caption, None, None, why)


def probe_loss_figure(runs: list[RunData], out: Path) -> Figure:
    """Probe loss per behavior over steps, one line per run, the first run's stages shaded."""
    name, title = "probe_loss", "Probe loss per behavior"
    caption = ("Loss of the model on each behavior's held-out probe set (lower = the behavior is "
               "learned); shaded bands are the stages of the first run, dashed lines each run's "
               "stage changes, in its colour.")
    behaviors = sorted({b for run in runs for b in run.metrics.probe_losses()})
    if not behaviors:
        return _missing(name, title, caption, "no probe_loss/<behavior> column in any metrics.csv")
    figure, axes = subplots(len(behaviors))
    rows = []
    for ax, behavior in zip(axes, behaviors, strict=True):
        for index, run in enumerate(runs):
            series = run.metrics.probe_losses().get(behavior)
            changes = stage_changes(run.metrics.stage())
            shade_stages(ax, changes, run.metrics.last_step(), run.info.stage_names(),
                         run_color(index), label_stages=index == 0)
            if series is None:
                continue
            ax.plot(series.steps, series.values, color=run_color(index), lw=1.5, label=run.info.name)
            rows += [(run.info.name, behavior, int(s), float(v))
                     for s, v in zip(series.steps.tolist(), series.values.tolist(), strict=True)]
        ax.set_title(behavior, fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel("probe loss (nats/token)")
        ax.legend(fontsize=8)
    return Figure(name, title, caption, save(figure, out, name),
                  write_csv(out, name, ("run", "behavior", "step", "probe_loss"), rows))


def _bin_centers(edges: np.ndarray) -> np.ndarray:
    return (edges[:-1] + edges[1:]) / 2


def mix_figure(runs: list[RunData], out: Path) -> Figure:
    """Documents per step emitted per behavior, deferred, released, dropped, skipped."""
    name, title = "stream_mix", "The stream's mix over steps"
    with_ledger = [run for run in runs if run.ledger is not None]
    sources = sorted({run.behavior_source for run in with_ledger})
    caption = ("Documents per training step (averaged over bins of steps): emitted per behavior, "
               "then deferred to the spool, released from it, dropped and skipped; one line per "
               f"run. Behavior of a row: {'; '.join(sources) or '-'}.")
    if not with_ledger:
        return _missing(name, title, caption, "no run has a ledger (none trained under a policy)")
    behaviors = list(dict.fromkeys(b for run in with_ledger for b in run.ledger.behaviors
                                   if run.ledger.emitted[:, run.ledger.behaviors.index(b)].any()))
    panels = [f"emitted: {b}" for b in behaviors] + ["deferred", "released", "dropped", "skipped"]
    figure, axes = subplots(len(panels), columns=3, width=4.6, height=2.8)
    rows = []
    for index, run in enumerate(runs):
        stats = run.ledger
        if stats is None:
            continue
        widths = np.diff(stats.bin_edges).astype(np.float64)
        dropped = sum(stats.dropped.values(), np.zeros(len(widths), np.int64))
        series = {f"emitted: {b}": stats.emitted[:, stats.behaviors.index(b)]
                  for b in behaviors if b in stats.behaviors}
        series.update({"deferred": stats.deferred, "released": stats.released,
                       "dropped": dropped, "skipped": stats.skipped})
        for ax, panel in zip(axes, panels, strict=True):
            if panel not in series:
                continue
            ax.plot(_bin_centers(stats.bin_edges), series[panel] / widths, color=run_color(index),
                    lw=1.2, label=run.info.name)
            rows += [(run.info.name, panel, int(lo), int(hi), int(n)) for lo, hi, n in
                     zip(stats.bin_edges[:-1].tolist(), stats.bin_edges[1:].tolist(),
                         series[panel].tolist(), strict=True)]
    for ax, panel in zip(axes, panels, strict=True):
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel("documents / step", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=7)
    return Figure(name, title, caption, save(figure, out, name),
                  write_csv(out, name, ("run", "series", "step_from", "step_to", "documents"), rows))


def drops_figure(runs: list[RunData], out: Path, max_reasons: int = 8) -> Figure:
    """Dropped documents per step by reason, one panel per run."""
    name, title = "drops", "Dropped documents by reason"
    caption = ("Documents the policy dropped per step, one line per reason (the most frequent "
               f"{max_reasons}); skipped (bad input) documents are counted in the table below.")
    with_drops = [(i, run) for i, run in enumerate(runs) if run.ledger is not None and run.ledger.dropped]
    if not with_drops:
        why = ("no ledger" if all(run.ledger is None for run in runs)
               else "no document was dropped in any run")
        return _missing(name, title, caption, why)
    figure, axes = subplots(len(with_drops), columns=2, width=6.0, height=3.0)
    rows = []
    for ax, (_, run) in zip(axes, with_drops, strict=True):
        stats = run.ledger
        widths = np.diff(stats.bin_edges).astype(np.float64)
        for reason, counts in list(stats.dropped.items())[:max_reasons]:
            ax.plot(_bin_centers(stats.bin_edges), counts / widths, lw=1.2, label=reason[:60])
        for reason, counts in stats.dropped.items():
            rows += [(run.info.name, reason, int(lo), int(hi), int(n)) for lo, hi, n in
                     zip(stats.bin_edges[:-1].tolist(), stats.bin_edges[1:].tolist(),
                         counts.tolist(), strict=True)]
        ax.set_title(run.info.name, fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel("dropped / step")
        ax.legend(fontsize=7)
    return Figure(name, title, caption, save(figure, out, name),
                  write_csv(out, name, ("run", "reason", "step_from", "step_to", "dropped"), rows))


def spool_figure(runs: list[RunData], out: Path) -> Figure:
    """Documents waiting in the defer spool over steps."""
    name, title = "spool", "Defer spool size"
    caption = ("Documents waiting in the defer spool at the end of each bin of steps (deferred "
               "minus released so far); it empties when a stage releases what it held back.")
    with_ledger = [(i, run) for i, run in enumerate(runs) if run.ledger is not None]
    if not with_ledger:
        return _missing(name, title, caption, "no run has a ledger")
    figure, (ax,) = subplots(1, width=7.0, height=3.0)
    rows = []
    for index, run in with_ledger:
        stats = run.ledger
        size = stats.spool_size
        ax.step(stats.bin_edges[1:], size, where="pre", color=run_color(index), label=run.info.name)
        rows += [(run.info.name, int(step), int(n))
                 for step, n in zip(stats.bin_edges[1:].tolist(), size.tolist(), strict=True)]
    ax.set_xlabel("step")
    ax.set_ylabel("documents in the spool")
    ax.legend(fontsize=8)
    return Figure(name, title, caption, save(figure, out, name),
                  write_csv(out, name, ("run", "step_end", "documents_waiting"), rows))


def _weight_classes(values: np.ndarray, most: int = 12) -> tuple[np.ndarray, list[str]]:
    """Left edges and labels of the bars: one per distinct weight, or ``most`` equal ranges when
    the weights are continuous (a policy that sets weights from a score)."""
    if len(values) <= most:
        return values, [f"{v:g}" for v in values.tolist()]
    edges = np.linspace(values[0], values[-1], most + 1)[:-1]
    step = edges[1] - edges[0]
    return edges, [f"{lo:.2g}-{lo + step:.2g}" for lo in edges.tolist()]


def loss_weight_figure(runs: list[RunData], out: Path) -> Figure:
    """Distribution of the emitted documents' loss weights, per stage."""
    name, title = "loss_weights", "Loss weights per stage"
    caption = ("Share of the emitted documents trained with each loss weight, per stage (1.0 = "
               "unchanged; above 1 upweighted by a rule); one bar group per run.")
    with_ledger = [(i, run) for i, run in enumerate(runs) if run.ledger is not None]
    if not with_ledger:
        return _missing(name, title, caption, "no run has a ledger")
    stages = list(dict.fromkeys(s for _, run in with_ledger for s in run.ledger.weights))
    if not stages:
        return _missing(name, title, caption, "no document was emitted")
    figure, axes = subplots(len(stages), columns=3, width=4.2, height=2.8)
    rows = []
    width = 0.8 / len(with_ledger)
    for ax, stage in zip(axes, stages, strict=True):
        empty = (np.zeros(0), np.zeros(0, np.int64))
        values = np.unique(np.concatenate([run.ledger.weights.get(stage, empty)[0]
                                           for _, run in with_ledger]))
        edges, labels = _weight_classes(values)
        for slot, (index, run) in enumerate(with_ledger):
            weights, counts = run.ledger.weights.get(stage, empty)
            per_class = np.bincount(np.searchsorted(edges, weights, side="right") - 1,
                                    weights=counts, minlength=len(labels))[:len(labels)]
            shares = per_class / max(1, int(counts.sum()))
            ax.bar(np.arange(len(labels)) + slot * width, shares, width, color=run_color(index),
                   label=run.info.name)
            rows += [(run.info.name, stage, label, int(n))
                     for label, n in zip(labels, per_class.tolist(), strict=True)]
        names = with_ledger[0][1].info.stage_names()
        label = names.get(int(stage), stage) if stage.isdigit() else stage
        ax.set_title(f"stage {stage}: {label}" if label != stage else f"stage {stage}", fontsize=9)
        ax.set_xticks(np.arange(len(labels)) + width * (len(with_ledger) - 1) / 2, labels, fontsize=7)
        ax.set_xlabel("loss weight", fontsize=8)
        ax.set_ylabel("share of emitted", fontsize=8)
    axes[0].legend(fontsize=7)
    return Figure(name, title, caption, save(figure, out, name),
                  write_csv(out, name, ("run", "stage", "loss_weight", "emitted"), rows))
