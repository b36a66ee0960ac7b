"""Helpers for the curriculum-loader tests: a tiny fit config and a batch recorder."""

from __future__ import annotations

import hashlib
from pathlib import Path

import lightning as L

from train.config import FitConfig, load_fit_config

POLICY = str(Path(__file__).resolve().parents[1] / "fixtures" / "short_values_first.yaml")
DEMO_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"


def tiny_config(corpus: Path, store: Path, run_dir: Path, *extra: str,
                policy: str = POLICY) -> FitConfig:
    """A 1-layer GPT on 4 x 64-token batches, 2 workers, the short values-first policy."""
    return load_fit_config(DEMO_CONFIG, [
        f"data.shards={corpus}", f"run_dir={run_dir}", "trainer.max_steps=40",
        "trainer.probe_every_n_steps=10", "trainer.checkpoint_every_n_steps=0",
        "trainer.log_every_n_steps=1", "data.num_workers=2", "data.probe_docs=8",
        "model.gpt.n_layer=1", "model.gpt.n_embd=32", "model.gpt.n_head=2",
        "data.stream.seq_len=64", "data.stream.batch_size=4",
        f"data.curriculum={{policy: {policy}, store: {store}, window_size_docs: 16}}", *extra])


class BatchRecorder(L.Callback):
    """Records a digest of every consumed batch's rows and tokens, by step."""

    def __init__(self) -> None:
        self.digests: dict[int, str] = {}
        self.sizes: dict[int, int] = {}
        """Rows of each batch as the loader delivered it."""

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: dict,
                             batch_idx: int) -> None:
        digest = hashlib.sha256(batch["input_ids"].numpy().tobytes())
        digest.update(batch["token_rows"].numpy().tobytes())
        digest.update(batch["loss_weight"].numpy().tobytes())
        self.digests[trainer.global_step] = digest.hexdigest()
        self.sizes[trainer.global_step] = int(batch["input_ids"].shape[0])
