"""The report's short terminal summary, and ``report.json``: the numbers behind the page."""

from __future__ import annotations

from typing import Any

from curriculum.ledger import Fate
from curriculum.report.collect import RunData
from curriculum.report.plotting import Figure
from curriculum.report.store_stats import StoreStats


def _final_losses(run: RunData) -> dict[str, float]:
    return {b: float(s.values[-1]) for b, s in run.metrics.probe_losses().items() if len(s.values)}


def run_record(run: RunData) -> dict[str, Any]:
    """What ``report.json`` holds for one run."""
    record: dict[str, Any] = {"name": run.info.name, "path": str(run.info.path),
                              "last_step": run.metrics.last_step(),
                              "final_probe_loss": _final_losses(run), "missing": dict(run.notes)}
    if run.check is not None:
        record["ledger_check"] = {"ok": run.check.ok, "summary": run.check.summary_line(),
                                  "problems": run.check.num_problems}
    if run.ledger is not None:
        stats = run.ledger
        record["behavior_source"] = run.behavior_source
        record["emitted_by_behavior"] = stats.emitted_by_behavior()
        record["ledger_records"] = stats.num_records
        record["counts"] = [
            {"stage": stage, "behavior": behavior,
             **{fate.name.lower(): int(stats.cells[s, b, fate]) for fate in
                (Fate.EMIT, Fate.DEFER, Fate.RELEASE, Fate.DROP, Fate.SKIP)},
             "emitted_weight": float(stats.emitted_weight[s, b])}
            for s, stage in enumerate(stats.stages) for b, behavior in enumerate(stats.behaviors)
            if stats.cells[s, b].any()]
        record["dropped_by_reason"] = {r: int(c.sum()) for r, c in stats.dropped.items()}
        record["skipped_by_reason"] = dict(stats.skip_reasons)
    if run.store is not None:
        record["store"] = str(run.store.path)
    return record


def store_record(stats: StoreStats, users: list[str]) -> dict[str, Any]:
    """What ``report.json`` holds for one store."""
    return {"path": str(stats.path), "runs": users, "num_rows": stats.num_rows,
            "measured_rows": stats.measured_rows, "measured_by_behavior": stats.measured_cells,
            "estimated_by_behavior": stats.estimated_cells,
            "top": {b: [vars(d) for d in docs] for b, docs in stats.top.items()},
            "bottom": {b: [vars(d) for d in docs] for b, docs in stats.bottom.items()}}


def terminal_summary(runs: list[RunData], stores: list[tuple[StoreStats, list[str]]],
                     figures: dict[str, Figure]) -> str:
    """A few lines per run: steps, final probe losses, ledger check, mix, what is missing."""
    lines = []
    for run in runs:
        lines.append(f"{run.info.name}: {run.metrics.last_step()} steps ({run.info.path})")
        losses = _final_losses(run)
        if losses:
            lines.append("  final probe loss: " + ", ".join(f"{b} {v:.3f}" for b, v in losses.items()))
        if run.check is not None:
            lines.append(f"  ledger --check: {run.check.summary_line()[:160]}")
        if run.ledger is not None:
            emitted = run.ledger.emitted_by_behavior()
            lines.append("  emitted: " + ", ".join(f"{b} {n:,}" for b, n in emitted.items() if n)
                         + f"  (behavior = {run.behavior_source})")
        lines.extend(f"  missing: {note}" for note in run.notes.values())
    for stats, users in stores:
        if not stats.measured_rows:
            continue
        lines.append(f"store {stats.path} ({', '.join(users)}): {stats.measured_rows:,} of "
                     f"{stats.num_rows:,} documents measured ({stats.measured_fraction:.1%})")
        for behavior in stats.behaviors:
            best = stats.top[behavior][:1]
            if best:
                lines.append(f"  most toward {behavior}: row {best[0].row} ({best[0].key}) score "
                             f"{best[0].score_sum:+.2e}: {best[0].text[:70]}")
    empty = [f.title for f in figures.values() if f.image is None]
    if empty:
        lines.append("figures with nothing to draw: " + ", ".join(empty))
    return "\n".join(lines)
