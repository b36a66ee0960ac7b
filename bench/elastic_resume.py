"""Time to the first batch after resuming on a new layout, against resuming on the same layout.

    python bench/elastic_resume.py [--docs 4000] [--cut 40] [--repeats 3]

Writes a synthetic corpus and its behavior store, trains a tiny model on 1 rank x 2 DataLoader
workers with the ``values_first``-style test policy to a checkpoint at step ``--cut`` (documents
in the window and the spool; torchdata snapshots every 16 steps, so the loader state is replayed
forward from the last snapshot either way), then resumes from it, alternating: on 2 workers (same
layout: exact resume), on 1 worker and on 4 workers (another layout: re-partitioned). The time is
measured from the trainer's ``setup`` (before the checkpoint is restored) to the first training
batch, so it holds restoring, re-partitioning, the replay, starting the workers and the first
batch; it prints medians and the ratios to the same-layout resume (target: within 2x).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curriculum.store import build_store  # noqa: E402
from curriculum.synth import write_synthetic_corpus  # noqa: E402
from train.config import load_fit_config  # noqa: E402
from train.fit import run_fit  # noqa: E402

POLICY = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "short_values_first.yaml"


class FirstBatchTimer(L.Callback):
    """Seconds from ``setup`` to the first ``on_train_batch_start``."""

    def __init__(self) -> None:
        self.started = 0.0
        self.seconds: float | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.started = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.seconds is None:
            self.seconds = time.perf_counter() - self.started
            trainer.should_stop = True  # one batch is all this measures


def fit(corpus: Path, store: Path, run: Path, steps: int, workers: int, cut: int,
        ckpt: Path | None = None, callbacks: tuple[L.Callback, ...] = ()) -> None:
    """A tiny fit (1 layer, 32-dim) on ``workers`` workers, checkpointing every ``cut`` steps."""
    config = load_fit_config("configs/demo.yaml", [
        f"data.shards={corpus}", f"run_dir={run}", f"trainer.max_steps={steps}",
        "trainer.probe_every_n_steps=100000", f"trainer.checkpoint_every_n_steps={cut}",
        "trainer.log_every_n_steps=50", f"data.num_workers={workers}", "data.probe_docs=4",
        "model.gpt.n_layer=1", "model.gpt.n_embd=32", "model.gpt.n_head=2",
        "data.stream.seq_len=64", "data.stream.batch_size=8",
        f"data.curriculum={{policy: {POLICY}, store: {store}, window_size_docs: 64}}"])
    run_fit(config, ckpt_path=str(ckpt) if ckpt else None, callbacks=list(callbacks))


def main() -> None:
    """Build, cut, resume alternately on each layout, print medians and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=4000)
    parser.add_argument("--cut", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    layouts = {"same layout (2 workers)": 2, "2 -> 1 worker": 1, "2 -> 4 workers": 4}
    seconds: dict[str, list[float]] = {name: [] for name in layouts}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        corpus, store = root / "corpus", root / "store"
        write_synthetic_corpus(corpus, num_docs=args.docs, num_shards=8, seed=3,
                               probe_docs_per_behavior=8)
        build_store(str(corpus), corpus / "probes", store)
        fit(corpus, store, root / "cut", args.cut, 2, args.cut)
        checkpoint = root / "cut" / "checkpoints" / f"step-{args.cut:06d}.ckpt"
        for repeat in range(args.repeats):
            for name, workers in layouts.items():
                timer = FirstBatchTimer()
                # A resume continues the run's ledger: each one gets its own copy of the run.
                run = root / f"resume-{workers}-{repeat}"
                shutil.copytree(root / "cut", run)
                fit(corpus, store, run, args.cut + 10, workers, 10**6, checkpoint, (timer,))
                seconds[name].append(timer.seconds)
    baseline = statistics.median(seconds["same layout (2 workers)"])
    print(f"first batch after resuming at step {args.cut} ({args.docs} docs, 8 shards), "
          f"median of {args.repeats}:")
    for name, values in seconds.items():
        median = statistics.median(values)
        spread = ", ".join(f"{v:.2f}" for v in values)
        print(f"  {name:24s} {median:6.2f} s  ({spread})  ratio to same layout {median / baseline:.2f}")


if __name__ == "__main__":
    main()
