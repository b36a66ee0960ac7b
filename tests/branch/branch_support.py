"""Helpers of the branching tests: a tiny fit config and a file-tree hash."""

from __future__ import annotations

import hashlib
from pathlib import Path

from train.config import FitConfig, load_fit_config

BATCH_SIZE, SEQ_LEN = 4, 32
PARENT_STEPS = 16
EARLY = "{dense_every_n_steps: 4, dense_until_step: 8, sparse_every_n_steps: 8}"


def tiny_config(shards: Path | str, run_dir: Path, *extra: str) -> FitConfig:
    """A one-layer, 32-wide GPT on 4 x 32-token batches: seconds per fit on a CPU."""
    return load_fit_config("configs/demo.yaml", [
        f"data.shards={shards}", f"run_dir={run_dir}", f"trainer.max_steps={PARENT_STEPS}",
        "trainer.probe_every_n_steps=4", "trainer.checkpoint_every_n_steps=8",
        "data.num_workers=1", "data.probe_docs=8", "model.gpt.n_layer=1",
        "model.gpt.n_embd=32", "model.gpt.n_head=2", f"data.stream.seq_len={SEQ_LEN}",
        f"data.stream.batch_size={BATCH_SIZE}", "optim.warmup_steps=4", *extra])


def hash_tree(directory: Path) -> dict[str, str]:
    """sha256 of every file under ``directory`` (relative path -> digest)."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}

