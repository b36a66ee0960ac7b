"""``metrics.csv`` as columns: probe losses, the stage in effect, attribution summaries.

Lightning's CSV logger writes one row per logging call, with empty cells for the metrics not
logged in it, so every series is read as the (step, value) pairs where it has a value.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from curriculum.report.errors import ReportError

PROBE_PREFIX = "probe_loss/"
MEASURED_FRACTION = "attribution/measured_fraction"


@dataclass
class Series:
    """One metric: steps (int64) and values (float64), sorted by step."""

    steps: np.ndarray
    values: np.ndarray


class Metrics:
    """The series of one ``metrics.csv``."""

    def __init__(self, series: dict[str, Series]) -> None:
        self.series = series

    @classmethod
    def read(cls, path: str | Path) -> Metrics:
        """Read ``path``; an absent file gives no series, a damaged one a :class:`ReportError`."""
        path = Path(path)
        if not path.is_file():
            return cls({})
        columns: dict[str, tuple[list[int], list[float]]] = {}
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or "step" not in reader.fieldnames:
                raise ReportError(f"{path}: no 'step' column (not a metrics.csv of a fit)")
            for number, record in enumerate(reader, start=2):
                step_text = record.get("step")
                if step_text in ("", None):
                    continue
                try:
                    step = int(float(step_text))
                    for column, value in record.items():
                        if column != "step" and column is not None and value not in ("", None):
                            pair = columns.setdefault(column, ([], []))
                            pair[0].append(step)
                            pair[1].append(float(value))
                except ValueError:
                    raise ReportError(f"{path}: line {number} holds a value that is not a number"
                                      ) from None
        series = {}
        for column, (steps, values) in columns.items():
            step_array, value_array = np.asarray(steps, np.int64), np.asarray(values, np.float64)
            order = np.argsort(step_array, kind="stable")
            series[column] = Series(step_array[order], value_array[order])
        return cls(series)

    def probe_losses(self) -> dict[str, Series]:
        """``{behavior: series}`` of the ``probe_loss/<behavior>`` columns."""
        return {name[len(PROBE_PREFIX):]: s for name, s in sorted(self.series.items())
                if name.startswith(PROBE_PREFIX)}

    def stage(self) -> Series | None:
        """The stage in effect per logged step (``stage`` column), or None."""
        return self.series.get("stage")

    def last_step(self) -> int:
        """The largest step any series reached (0 for none)."""
        return max((int(s.steps[-1]) for s in self.series.values() if len(s.steps)), default=0)


def stage_changes(stage: Series | None) -> list[tuple[int, int]]:
    """``[(step, stage), ...]``: the first step of each stage run, in order (a stage can come
    back, e.g. under a bandit policy)."""
    if stage is None or not len(stage.steps):
        return []
    values = stage.values.astype(np.int64)
    starts = np.flatnonzero(np.concatenate([[True], values[1:] != values[:-1]]))
    return [(int(stage.steps[i]), int(values[i])) for i in starts.tolist()]
