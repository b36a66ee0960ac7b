"""``curriculum fit``: train a model as a YAML config says."""

from __future__ import annotations

import argparse
from pathlib import Path

from curriculum.cli import UserError
from curriculum.typed_config import apply_overrides, from_mapping, to_mapping
from train.config import FitConfig, load_fit_config
from train.fit import latest_checkpoint, read_probe_losses, run_fit
from train.run_config import RUN_CONFIG_NAME, load_run_config

HELP = "Train a model on a shard stream from a YAML config (trainer/model/data/optim sections)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``curriculum fit``."""
    parser.add_argument("--config", default=None, help="YAML config, e.g. configs/demo.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config value, e.g. "
                        "--set trainer.max_steps=100 (repeatable)")
    parser.add_argument("--ckpt", default=None,
                        help="resume from this checkpoint, or 'last': the run's newest one")
    parser.add_argument("--resume", default=None, metavar="RUN",
                        help="continue the run in RUN from its newest checkpoint, under its "
                        "recorded config.yaml (--set still applies)")


def run(args: argparse.Namespace) -> int:
    """Fit and print the run directory and the probe losses at the first and last step."""
    ckpt = args.ckpt
    if args.resume is not None:
        if args.config is not None:
            raise UserError("--resume RUN uses the run's own config.yaml: leave out --config")
        run_dir = Path(args.resume)
        if not (run_dir / RUN_CONFIG_NAME).is_file():
            raise UserError(f"{run_dir}: not a run directory (no {RUN_CONFIG_NAME})")
        config = load_run_config(run_dir)
        if args.overrides:
            config = from_mapping(FitConfig, apply_overrides(to_mapping(config), args.overrides))
        if ckpt is None:
            if latest_checkpoint(run_dir) is None:
                raise UserError(f"{run_dir}: the run has no checkpoint to resume from")
            ckpt = "last"
    else:
        config = load_fit_config(args.config, args.overrides)
    run_dir = run_fit(config, ckpt_path=ckpt)
    print_probe_summary(run_dir)
    print(f"run directory: {run_dir.resolve()}")
    return 0


def print_probe_summary(run_dir: object) -> None:
    """One line per behavior: probe loss at the first and the last logged step."""
    series = read_probe_losses(run_dir)
    for behavior, points in sorted(series.items()):
        (first_step, first), (last_step, last) = points[0], points[-1]
        print(f"probe_loss/{behavior:<24} step {first_step:>5}: {first:.3f}   "
              f"step {last_step:>5}: {last:.3f}")
