"""Shared plumbing of the figures: the Agg backend, one colour per run, saving a PNG together
with the numbers behind it (CSV), and the record the page shows for each figure."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: never a window, never a display server

import matplotlib.pyplot as plt  # noqa: E402

RUN_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")
STAGE_SHADES = ("#f2f2f2", "#dde8f3", "#f6e8d8", "#e3f1e0", "#efe2f2")
DPI = 110


@dataclass
class Figure:
    """One figure of the report, as the page and the tests see it."""

    name: str
    """File stem: ``NAME.png`` and ``NAME.csv`` in the report directory."""
    title: str
    caption: str
    """One line on how to read it."""
    image: str | None
    """PNG file name, or None when there was nothing to draw."""
    data: str | None
    """CSV file with the numbers drawn."""
    missing: str = ""
    """What was missing, when something was (shown instead of or beside the image)."""


def run_color(index: int) -> str:
    """The colour of the ``index``-th run in every figure."""
    return RUN_COLORS[index % len(RUN_COLORS)]


def subplots(count: int, columns: int = 2, width: float = 6.0,
             height: float = 3.2) -> tuple[Any, list[Any]]:
    """A grid with at least ``count`` axes; extra axes are hidden."""
    columns = max(1, min(columns, count))
    rows = (count + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(width * columns, height * rows),
                                squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[count:]:
        ax.set_visible(False)
    return figure, flat[:count]


def save(figure: Any, out_dir: Path, name: str) -> str:
    """Write ``NAME.png`` and close the figure."""
    figure.tight_layout()
    figure.savefig(out_dir / f"{name}.png", dpi=DPI)
    plt.close(figure)
    return f"{name}.png"


def write_csv(out_dir: Path, name: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Write ``NAME.csv`` (floats with full precision) and return its file name."""
    with (out_dir / f"{name}.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return f"{name}.csv"


def shade_stages(ax: Any, changes: list[tuple[int, int]], last_step: int, names: dict[int, str],
                 color: str, label_stages: bool) -> None:
    """Shade each stage's step range and mark every stage change with a dashed line."""
    for i, (start, stage) in enumerate(changes):
        stop = changes[i + 1][0] if i + 1 < len(changes) else last_step
        if label_stages:
            ax.axvspan(start, max(stop, start + 0.5), color=STAGE_SHADES[stage % len(STAGE_SHADES)],
                       zorder=0, lw=0)
            ax.text(start, 1.0, f" {names.get(stage, stage)}", transform=ax.get_xaxis_transform(),
                    va="top", ha="left", fontsize=7, color="#555555")
        if i > 0:
            ax.axvline(start, color=color, ls="--", lw=1, alpha=0.8, zorder=1)
