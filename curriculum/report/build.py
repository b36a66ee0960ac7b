"""``build_report``: read runs (and sweeps), draw the figures, write the page and its data."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from curriculum.report.collect import BehaviorOfRow, RunData, collect_run, labels_lookup
from curriculum.report.errors import ReportError
from curriculum.report.figures_attribution import (
    distinct_stores,
    fill_text,
    measured_fraction_figure,
    ranked_rows,
    scores_figure,
    write_top_documents,
)
from curriculum.report.figures_training import (
    drops_figure,
    loss_weight_figure,
    mix_figure,
    probe_loss_figure,
    spool_figure,
)
from curriculum.report.page import render_page
from curriculum.report.plotting import Figure
from curriculum.report.run import open_run, unique_names
from curriculum.report.snippets import read_documents
from curriculum.report.summary import run_record, store_record, terminal_summary
from curriculum.report.sweep import SweepInfo, is_sweep, read_sweep
from curriculum.store import StoreReader

INDEX_FILE = "index.html"
DATA_FILE = "report.json"


@dataclass
class ReportResult:
    """Where the report went and what it says."""

    out_dir: Path
    index: Path
    """``OUT/index.html``."""
    summary: str
    """The terminal summary."""
    figures: dict[str, Figure]
    runs: list[RunData]


def _draw(runs: list[RunData], out: Path) -> dict[str, Figure]:
    figures = [probe_loss_figure(runs, out), mix_figure(runs, out), drops_figure(runs, out),
               spool_figure(runs, out), loss_weight_figure(runs, out), scores_figure(runs, out),
               measured_fraction_figure(runs, out)]
    return {figure.name: figure for figure in figures}


def _split(paths: Sequence[str | Path]) -> tuple[list[Path], list[Path]]:
    runs, sweeps = [], []
    for path in map(Path, paths):
        (sweeps if is_sweep(path) else runs).append(path)
    return runs, sweeps


def build_report(paths: Sequence[str | Path], labels: str | Path | None = None,
                 out: str | Path | None = None, top_n: int = 8,
                 show_progress: bool = False) -> ReportResult:
    """Write a self-contained report of the runs (and sweep directories) in ``paths``.

    ``out`` defaults to ``REPORT`` inside the first run (or sweep). Raises :class:`ReportError`
    (one line) when a path is neither a run nor a sweep directory; every optional part a run
    lacks (policy, ledger, attribution, labels) is said on the page instead.
    """
    if not paths:
        raise ReportError("name at least one run directory")
    run_paths, sweep_paths = _split(paths)
    infos = [open_run(path, name) for path, name in zip(run_paths, unique_names(run_paths),
                                                      strict=True)]
    out_dir = Path(out) if out is not None else Path(paths[0]) / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    behavior: BehaviorOfRow | None = labels_lookup(labels) if labels is not None else None
    stores: dict = {}
    runs = [collect_run(info, behavior, stores, top_n, show_progress) for info in infos]
    sweeps: list[SweepInfo] = [read_sweep(path, out_dir, i) for i, path in enumerate(sweep_paths)]
    shared = distinct_stores(runs)
    for stats, _ in shared:
        fill_text(stats, read_documents(StoreReader(stats.path), ranked_rows(stats)))
    figures = _draw(runs, out_dir) if runs else {}
    top_file = write_top_documents(shared, out_dir)
    page = render_page(runs, figures, shared, sweeps, top_file) if runs else _sweep_only(sweeps)
    (out_dir / INDEX_FILE).write_text(page)
    record = {"runs": [run_record(run) for run in runs],
              "stores": [store_record(stats, users) for stats, users in shared],
              "sweeps": [str(sweep.path) for sweep in sweeps],
              "figures": {name: vars(figure) for name, figure in figures.items()}}
    (out_dir / DATA_FILE).write_text(json.dumps(record, indent=1) + "\n")
    summary = terminal_summary(runs, shared, figures)
    return ReportResult(out_dir.resolve(), (out_dir / INDEX_FILE).resolve(), summary, figures, runs)


def _sweep_only(sweeps: list[SweepInfo]) -> str:
    from curriculum.report.page import STYLE, lineage_section

    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>curriculum "
            f"report: sweeps</title><style>{STYLE}</style></head><body><h1>Curriculum report</h1>"
            f"{lineage_section([], sweeps)}</body></html>\n")
