"""``curriculum resume``: branch a run from a checkpoint onto new (e.g. synthetic) data."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = ("Branch from a checkpoint: a new run with the parent's weights (and optimizer state) on new "
        "data, optionally mixed with the parent's stream.")


def add_synthetic_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``synth:PROFILE`` and ``lm:MODEL_DIR`` data specs (shared with ``sweep``)."""
    group = parser.add_argument_group("synthetic data (--data synth:PROFILE or lm:MODEL_DIR)")
    group.add_argument("--synth-docs", type=int, default=2000, help="documents to generate")
    group.add_argument("--synth-seed", type=int, default=1, help="generator seed")
    group.add_argument("--prompts", default=None,
                       help="YAML/JSON file: behavior -> list of prompts (lm: sources)")
    group.add_argument("--max-new-tokens", type=int, default=96,
                       help="tokens sampled per document (lm: sources)")


def synthetic_options(args: argparse.Namespace) -> object:
    """The :class:`SyntheticOptions` the arguments ask for."""
    from curriculum.synthetic_sources import SyntheticOptions

    return SyntheticOptions(num_docs=args.synth_docs, seed=args.synth_seed,
                            prompts_path=args.prompts, max_new_tokens=args.max_new_tokens)


def add_branch_arguments(parser: argparse.ArgumentParser) -> None:
    """How a branch trains (shared with ``sweep``)."""
    from train.branch import DEFAULT_LR_SCHEDULE, LR_SCHEDULES

    parser.add_argument("--data", required=False,
                        help="the branch's data: shard spec (directory, glob, brace pattern, list), "
                             "synth:PROFILE (e.g. synth:aligned) or lm:MODEL_DIR")
    parser.add_argument("--mix", action="append", default=[], metavar="SOURCE=SHARE[,...]",
                        help="mix other sources in, e.g. --mix parent=0.3 (the parent run's own "
                             "data, continued from the checkpoint); --data gets the rest")
    parser.add_argument("--policy", default=None,
                        help="curriculum policy to record in the branch config (recorded only: "
                             "branches stream their data without a policy for now)")
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps to train")
    parser.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=DEFAULT_LR_SCHEDULE,
                        help="continue: follow the parent's schedule from the branch step "
                             "(default; the branch then differs from the parent in data only); "
                             "restart-warmup: new warmup and decay over --steps")
    parser.add_argument("--with-optimizer", dest="with_optimizer", action="store_true",
                        default=True, help="restore the parent's optimizer state (default)")
    parser.add_argument("--no-optimizer", dest="with_optimizer", action="store_false",
                        help="start with fresh optimizer state (weights only)")
    parser.add_argument("--seed", type=int, default=None, help="branch seed (default: the parent's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a value of the branch's fit config (repeatable)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing branch")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``curriculum resume``."""
    parser.add_argument("--from", dest="source", default=None, metavar="CKPT",
                        help="parent checkpoint (.ckpt), or a run directory with --step")
    parser.add_argument("--step", type=int, default=None,
                        help="with a run directory in --from: the checkpoint at this step")
    parser.add_argument("--list", dest="list_run", default=None, metavar="RUN",
                        help="list RUN's early checkpoints (step, tokens, stage, probe losses) "
                             "and exit")
    add_branch_arguments(parser)
    parser.add_argument("--out", default=None, metavar="RUN",
                        help="branch run directory (default: <parent>-branch-<step> beside it)")
    add_synthetic_arguments(parser)


def mix_entries(values: list[str]) -> list[tuple[str, float]]:
    """``--mix`` values (repeatable, each comma-separated) as (source, share) pairs."""
    from train.branch import parse_mix

    return [entry for value in values for entry in parse_mix(value)]


def run(args: argparse.Namespace) -> int:
    """List checkpoints, or make and train a branch and print its lineage and probe losses."""
    from curriculum.cli import UserError
    from curriculum.commands.fit import print_probe_summary
    from curriculum.synthetic_sources import resolve_data_spec
    from train.branch import (
        BranchConfig,
        find_checkpoint,
        find_run_dir,
        lineage_summary,
        read_lineage,
        run_branch,
    )
    from train.early_checkpoints import format_early_checkpoints, list_early_checkpoints

    if args.list_run:
        print(format_early_checkpoints(list_early_checkpoints(args.list_run)))
        return 0
    if not args.source or not args.data:
        raise UserError("--from and --data are required (or --list RUN)")
    source = Path(args.source)
    if source.is_dir():
        if args.step is None:
            raise UserError(f"{source} is a run directory: give --step N (see --list {source})")
        checkpoint = find_checkpoint(source, args.step)
    elif args.step is not None:
        raise UserError("--step goes with a run directory in --from, not a checkpoint file")
    else:
        checkpoint = source
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: checkpoint not found")
    # Generated data goes beside the branches, where later branches reuse it.
    cache = Path(args.out).parent if args.out else find_run_dir(checkpoint).parent
    data = resolve_data_spec(args.data, cache / "synthetic-data", synthetic_options(args),
                             show_progress=True)
    branch = BranchConfig(
        parent_checkpoint=str(checkpoint), data=data, steps=args.steps, run_dir=args.out,
        mix=mix_entries(args.mix), policy=args.policy, lr_schedule=args.lr_schedule,
        with_optimizer=args.with_optimizer, seed=args.seed, overrides=args.overrides,
        overwrite=args.overwrite,
    )
    run_dir = run_branch(branch)
    print(lineage_summary(read_lineage(run_dir)))
    print_probe_summary(run_dir)
    print(f"branch run directory: {run_dir.resolve()}  (lineage.json, metrics.csv, checkpoints/)")
    return 0
