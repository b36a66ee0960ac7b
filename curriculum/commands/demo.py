"""``curriculum demo``: the main job on the built-in default, start to finish on a CPU."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from curriculum.commands.fit import print_probe_summary
from curriculum.synth import write_synthetic_corpus
from train.config import load_fit_config
from train.fit import run_fit

HELP = "Synthesize a corpus and train the small GPT on it (CPU, a few minutes)."
DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``curriculum demo``."""
    parser.add_argument("--out", default="runs", help="where data and runs go")
    parser.add_argument("--docs", type=int, default=4000, help="documents in the corpus")
    parser.add_argument("--steps", type=int, default=300, help="training steps")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="fit config to start from")


def run(args: argparse.Namespace) -> int:
    """Synthesize, train, print where the run went."""
    started = time.perf_counter()
    out = Path(args.out)
    corpus = out / "demo-data"
    if not (corpus / "manifest.json").is_file():
        result = write_synthetic_corpus(corpus, num_docs=args.docs, num_shards=4, seed=0,
                                        show_progress=True)
        print(f"synthesized {result.num_docs} documents into {corpus}")
    config = load_fit_config(args.config, [
        f"data.shards={corpus}", f"run_dir={out / 'demo'}", f"trainer.max_steps={args.steps}",
    ])
    run_dir = run_fit(config)
    print_probe_summary(run_dir)
    print(f"demo finished in {time.perf_counter() - started:.0f} s")
    print(f"run directory: {run_dir.resolve()}  (metrics.csv, checkpoints/, config.yaml)")
    return 0
