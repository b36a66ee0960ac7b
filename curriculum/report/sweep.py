"""A sweep directory (``curriculum sweep`` output): its table and plot, for the report."""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path

from curriculum.report.errors import ReportError

SWEEP_TABLE = "sweep.csv"
SWEEP_PLOT = "sweep.png"


@dataclass
class SweepInfo:
    """One sweep: ``sweep.csv`` rows as text, and the plot copied into the report."""

    path: Path
    header: list[str]
    rows: list[list[str]]
    plot: str | None = None
    """File name of the copied plot in the report directory."""


def is_sweep(path: str | Path) -> bool:
    """``path`` is a directory holding a ``sweep.csv``."""
    return (Path(path) / SWEEP_TABLE).is_file()


def read_sweep(path: str | Path, out_dir: Path, index: int) -> SweepInfo:
    """Read ``sweep.csv`` and copy ``sweep.png`` (if any) to ``out_dir/sweep-<index>.png``."""
    path = Path(path).resolve()
    with (path / SWEEP_TABLE).open(newline="") as handle:
        table = list(csv.reader(handle))
    if not table or "branch_step" not in table[0]:
        raise ReportError(f"{path / SWEEP_TABLE}: not a sweep table (no branch_step column)")
    info = SweepInfo(path, table[0], table[1:])
    if (path / SWEEP_PLOT).is_file():
        info.plot = f"sweep-{index}.png"
        shutil.copyfile(path / SWEEP_PLOT, out_dir / info.plot)
    return info
