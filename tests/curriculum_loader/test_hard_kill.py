"""A training process killed with SIGKILL mid-epoch, then resumed: the ledger still accounts for
every row of every complete epoch exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from support import tiny_config

from curriculum.ledger import check_ledger
from train.fit import run_fit


def _fit_command(corpus: Path, store: Path, run_dir: Path, steps: int) -> list[str]:
    from support import POLICY

    return [sys.executable, "-m", "curriculum", "fit", "--config", "configs/demo.yaml",
            "--set", f"data.shards={corpus}", "--set", f"run_dir={run_dir}",
            "--set", f"trainer.max_steps={steps}", "--set", "trainer.checkpoint_every_n_steps=10",
            "--set", "trainer.probe_every_n_steps=1000", "--set", "data.num_workers=2",
            "--set", "data.probe_docs=4", "--set", "model.gpt.n_layer=1",
            "--set", "model.gpt.n_embd=32", "--set", "model.gpt.n_head=2",
            "--set", "data.stream.seq_len=32", "--set", "data.stream.batch_size=4",
            "--set", f"data.curriculum={{policy: {POLICY}, store: {store}, window_size_docs: 8}}"]


def test_sigkill_mid_epoch_then_resume_passes_the_ledger_check(uneven_corpus, tmp_path) -> None:
    corpus, store = uneven_corpus
    run_dir = tmp_path / "run"
    process = subprocess.Popen(_fit_command(corpus, store, run_dir, 10_000), cwd=os.getcwd(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not (run_dir / "checkpoints" / "step-000030.ckpt").exists():
            assert process.poll() is None, "training ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.2)
        time.sleep(1.0)  # let it run past the checkpoint: the ledger grows beyond it
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    checkpoints = sorted((run_dir / "checkpoints").glob("step-*.ckpt"))
    run_fit(tiny_config(corpus, store, run_dir, "trainer.max_steps=80",
                        "data.stream.seq_len=32", "trainer.checkpoint_every_n_steps=10",
                        "trainer.probe_every_n_steps=1000", "data.probe_docs=4",
                        "data.curriculum.window_size_docs=8"),
            ckpt_path=str(checkpoints[-1]))
    report = check_ledger(run_dir)
    assert report.ok, report.problems
    assert report.complete_epochs, "the run should have finished at least one epoch"
