"""``curriculum fit``: train a model as a YAML config says."""

from __future__ import annotations

import argparse

from train.config import load_fit_config
from train.fit import read_probe_losses, run_fit

HELP = "Train a model on a shard stream from a YAML config (trainer/model/data/optim sections)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``curriculum fit``."""
    parser.add_argument("--config", default=None, help="YAML config, e.g. configs/demo.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config value, e.g. "
                        "--set trainer.max_steps=100 (repeatable)")
    parser.add_argument("--ckpt", default=None, help="resume from this checkpoint")


def run(args: argparse.Namespace) -> int:
    """Fit and print the run directory and the probe losses at the first and last step."""
    config = load_fit_config(args.config, args.overrides)
    run_dir = run_fit(config, ckpt_path=args.ckpt)
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
