"""``curriculum sweep``: branch a run at several early checkpoints and compare probe losses."""

from __future__ import annotations

import argparse
from pathlib import Path

from curriculum.commands.resume import (
    add_branch_arguments,
    add_synthetic_arguments,
    mix_entries,
    synthetic_options,
)

HELP = ("Branch a run at several checkpoints onto the same data, train each branch N steps, and "
        "write sweep.csv and sweep.png (probe loss per behavior vs branch point).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``curriculum sweep``."""
    parser.add_argument("--run", required=True, help="the parent run directory")
    parser.add_argument("--branch-at", required=True, metavar="STEPS",
                        help="comma-separated steps with checkpoints, e.g. 50,100,200")
    add_branch_arguments(parser)
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="sweep directory (default: <run>-sweep beside the run)")
    add_synthetic_arguments(parser)


def parse_steps(text: str) -> list[int]:
    """``"50,100, 200"`` -> ``[50, 100, 200]``."""
    try:
        steps = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--branch-at {text!r}: expected comma-separated integers") from None
    if not steps or any(s < 1 for s in steps):
        raise ValueError(f"--branch-at {text!r}: expected steps >= 1")
    return steps


def run(args: argparse.Namespace) -> int:
    """Run the sweep and print the table and where the plot went."""
    from curriculum.cli import UserError
    from train.sweep import format_sweep, run_sweep

    if not args.data:
        raise UserError("--data is required")
    run_dir = Path(args.run)
    out = Path(args.out) if args.out else run_dir.parent / f"{run_dir.name}-sweep"
    steps = parse_steps(args.branch_at)

    def report(step: int, branch_dir: Path) -> None:
        print(f"branch at step {step} done: {branch_dir}")

    result = run_sweep(
        run_dir, steps, args.data, args.steps, out, overwrite=args.overwrite,
        synthetic=synthetic_options(args), on_branch=report, mix=mix_entries(args.mix),
        policy=args.policy, lr_schedule=args.lr_schedule, with_optimizer=args.with_optimizer,
        seed=args.seed, overrides=args.overrides,
    )
    print(format_sweep(result.rows))
    print(f"table: {result.table_path}  plot: {result.plot_path}")
    return 0
