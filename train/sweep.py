"""A branch sweep: branch a run at several steps onto the same data, train each branch the same
number of steps, and compare probe losses with the unbranched run at the same total step.

``sweep.csv`` has one row per (branch step, behavior): the probe loss at the branch point, at
the branch's end, and the parent's at the same total step (``branch_step + steps``) when the
parent logged it (empty otherwise; nothing is interpolated). ``sweep.png`` draws, per behavior,
the branch-end loss against the branch step, with the unbranched reference dashed.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from curriculum.synthetic_sources import SyntheticOptions, resolve_data_spec
from train.branch import BranchConfig, find_checkpoint, read_lineage, run_branch
from train.fit import read_probe_losses

SWEEP_TABLE = "sweep.csv"
SWEEP_PLOT = "sweep.png"
COLUMNS = ("branch_step", "behavior", "end_step", "probe_loss_at_branch", "branch_probe_loss",
           "unbranched_probe_loss", "difference")


@dataclass
class SweepRow:
    """One (branch step, behavior) of a sweep."""

    branch_step: int
    """Parent step the branch started from."""
    behavior: str
    """Probe set."""
    end_step: int
    """Total step at the branch's end (``branch_step + steps``)."""
    probe_loss_at_branch: float | None
    """The parent's probe loss at the branch point (the branch's step-0 value)."""
    branch_probe_loss: float
    """The branch's probe loss at its last step."""
    unbranched_probe_loss: float | None
    """The parent's probe loss at ``end_step``; ``None`` when the parent did not log that step."""

    @property
    def difference(self) -> float | None:
        """Branch minus unbranched (negative: the branch ends with a lower probe loss)."""
        if self.unbranched_probe_loss is None:
            return None
        return self.branch_probe_loss - self.unbranched_probe_loss


@dataclass
class SweepResult:
    """What a sweep produced."""

    out_dir: Path
    rows: list[SweepRow]
    branch_dirs: dict[int, Path] = field(default_factory=dict)
    table_path: Path | None = None
    plot_path: Path | None = None


def _at_step(points: list[tuple[int, float]], step: int) -> float | None:
    values = [loss for s, loss in points if s == step]
    return values[-1] if values else None


def collect_rows(parent_run: str | Path, branch_dirs: dict[int, Path]) -> list[SweepRow]:
    """Sweep rows from finished branch runs (read from their ``metrics.csv`` and lineage)."""
    parent = read_probe_losses(parent_run)
    rows = []
    for branch_step, branch_dir in sorted(branch_dirs.items()):
        lineage = read_lineage(branch_dir)
        series = read_probe_losses(branch_dir)
        for behavior in sorted(series):
            points = series[behavior]
            last_step, last_loss = points[-1]
            end_step = branch_step + last_step
            at_branch = _at_step(points, 0)
            if at_branch is None and lineage.get("parent_probe_losses_at_branch"):
                at_branch = lineage["parent_probe_losses_at_branch"].get(behavior)
            rows.append(SweepRow(branch_step, behavior, end_step, at_branch, last_loss,
                                 _at_step(parent.get(behavior, []), end_step)))
    return rows


def write_table(rows: Sequence[SweepRow], path: str | Path) -> Path:
    """``sweep.csv`` (columns :data:`COLUMNS`; empty cells where a value is unknown)."""
    path = Path(path)

    def cell(value: float | None) -> str:
        return "" if value is None else f"{value:.6f}"

    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow([row.branch_step, row.behavior, row.end_step,
                             cell(row.probe_loss_at_branch), cell(row.branch_probe_loss),
                             cell(row.unbranched_probe_loss), cell(row.difference)])
    return path


def plot_sweep(rows: Sequence[SweepRow], path: str | Path, title: str = "") -> Path:
    """One panel per behavior: branch-end probe loss vs branch step (solid), the unbranched run
    at the same total step (dashed), and the loss at the branch point (dotted)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    behaviors = sorted({r.behavior for r in rows})
    columns = min(2, len(behaviors)) or 1
    lines = -(-len(behaviors) // columns) or 1
    figure = Figure(figsize=(5.2 * columns, 3.6 * lines), layout="constrained")
    FigureCanvasAgg(figure)  # Agg without touching pyplot's global backend
    axes = figure.subplots(lines, columns, squeeze=False).ravel()
    for ax, behavior in zip(axes, behaviors, strict=False):
        mine = sorted((r for r in rows if r.behavior == behavior), key=lambda r: r.branch_step)
        steps = [r.branch_step for r in mine]
        ax.plot(steps, [r.branch_probe_loss for r in mine], "o-", color="C0",
                label="branch, at its end")
        reference = [(r.branch_step, r.unbranched_probe_loss) for r in mine
                     if r.unbranched_probe_loss is not None]
        if reference:
            ax.plot(*zip(*reference, strict=True), "s--", color="C3",
                    label="unbranched, same total step")
        start = [(r.branch_step, r.probe_loss_at_branch) for r in mine
                 if r.probe_loss_at_branch is not None]
        if start:
            ax.plot(*zip(*start, strict=True), ":", color="0.5", label="at branch point")
        ax.set_title(behavior)
        ax.set_xlabel("branch step")
        ax.set_ylabel("probe loss (nats/token)")
        ax.grid(alpha=0.3)
    for ax in axes[len(behaviors):]:
        ax.set_visible(False)
    if behaviors:
        axes[0].legend(fontsize=8)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.savefig(path, dpi=120)
    return Path(path)


def run_sweep(parent_run: str | Path, branch_steps: Sequence[int], data: str, steps: int,
              out_dir: str | Path, overwrite: bool = False,
              synthetic: SyntheticOptions | None = None,
              on_branch: Callable[[int, Path], None] | None = None,
              **branch_options: object) -> SweepResult:
    """Branch ``parent_run`` at each of ``branch_steps`` onto ``data`` for ``steps`` steps.

    ``data`` is a shard spec, or ``synth:PROFILE`` / ``lm:MODEL_DIR``, generated once (as
    ``synthetic`` says) into ``out_dir/data`` and shared by all branches. ``branch_options`` are
    further :class:`BranchConfig` fields (``mix``, ``lr_schedule``, ``with_optimizer``,
    ``policy``, ``seed``, ``overrides``). Branch ``s`` goes to ``out_dir/branch-<s>``;
    ``on_branch(step, run_dir)`` is called after each.
    """
    parent_run = Path(parent_run)
    if not (parent_run / "metrics.csv").is_file():
        raise FileNotFoundError(f"{parent_run}: not a finished run (no metrics.csv)")
    if not branch_steps:
        raise ValueError("a sweep needs at least one branch step")
    checkpoints = {step: find_checkpoint(parent_run, step) for step in sorted(set(branch_steps))}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shards = resolve_data_spec(data, out / "data", synthetic, show_progress=True)
    branch_dirs: dict[int, Path] = {}
    for step, checkpoint in checkpoints.items():
        branch = BranchConfig(parent_checkpoint=str(checkpoint), data=shards, steps=steps,
                              run_dir=str(out / f"branch-{step:06d}"), overwrite=overwrite,
                              **branch_options)  # type: ignore[arg-type]
        branch_dirs[step] = run_branch(branch)
        if on_branch is not None:
            on_branch(step, branch_dirs[step])
    rows = collect_rows(parent_run, branch_dirs)
    table = write_table(rows, out / SWEEP_TABLE)
    plot = plot_sweep(rows, out / SWEEP_PLOT,
                      title=f"{parent_run.name}: branches onto {data}, {steps} steps each")
    return SweepResult(out, rows, branch_dirs, table, plot)


def format_sweep(rows: Sequence[SweepRow]) -> str:
    """The table as aligned text, for the terminal."""
    header = ["branch_step", "behavior", "end_step", "at_branch", "branch", "unbranched", "diff"]

    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    body = [[str(r.branch_step), r.behavior, str(r.end_step), number(r.probe_loss_at_branch),
             number(r.branch_probe_loss), number(r.unbranched_probe_loss), number(r.difference)]
            for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h)
              for i, h in enumerate(header)]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(line, widths, strict=True))
                     for line in [header, *body])
