"""The split-step API inside a real Lightning Trainer, which runs backward itself: scores equal
an offline computation at the same weights, and training is bitwise unchanged."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch
from attribution_support import small_byte_gpt, synthetic_probe_sets, synthetic_training_data
from torch.utils.data import DataLoader

from curriculum.attribution import InRunAttributor, per_example_token_loss

pytestmark = pytest.mark.filterwarnings(
    "ignore::curriculum.attribution.UncoveredParametersWarning",
    "ignore::UserWarning",  # Lightning's notes about workers, loggers and the like
    "ignore:.*LeafSpec.*",
)

SEQ_LEN = 32
STEPS = 6


class TinyLM(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.model = small_byte_gpt(SEQ_LEN, width=32, layers=1)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return per_example_token_loss(self.model, batch).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.model.parameters(), lr=1e-2)


class AttributionSketch(L.Callback):
    """How a callback drives the attributor: begin before the forward, finish after backward."""

    def __init__(self, probes: dict, every_n_steps: int = 2) -> None:
        self.probes, self.every_n_steps = probes, every_n_steps
        self.scores: dict[int, torch.Tensor] = {}
        self.snapshots: dict[int, tuple] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: TinyLM) -> None:
        self.attributor = InRunAttributor(pl_module.model, optimizer=trainer.optimizers[0])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        step = trainer.global_step
        if step % self.every_n_steps:
            return
        self.attributor.refresh_probe_gradients(self.probes)
        self.snapshots[step] = (copy.deepcopy(pl_module.model.state_dict()),
                                copy.deepcopy(trainer.optimizers[0].state_dict()), batch)
        self.attributor.begin(batch)

    def on_after_backward(self, trainer: L.Trainer, pl_module: TinyLM) -> None:
        if self.attributor.armed:
            lr = trainer.optimizers[0].param_groups[0]["lr"]
            self.scores[trainer.global_step] = self.attributor.finish(lr=lr)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        if self.attributor.armed:  # a step whose backward was skipped
            self.attributor.cancel()


def fit(callbacks: list[L.Callback]) -> TinyLM:
    batches, _ = synthetic_training_data(8 * STEPS, SEQ_LEN, 8)
    L.seed_everything(0, verbose=False)
    module = TinyLM()
    trainer = L.Trainer(max_steps=STEPS, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=callbacks)
    trainer.fit(module, DataLoader(batches, batch_size=None))
    return module


def test_scores_inside_lightning_training() -> None:
    probes = {k: v for k, v in synthetic_probe_sets(4, SEQ_LEN).items() if k in ("values", "neutral")}
    callback = AttributionSketch(probes)
    attributed = fit([callback])
    plain = fit([])
    for (name, a), b in zip(attributed.named_parameters(), plain.parameters(), strict=True):
        assert torch.equal(a, b), name
    assert sorted(callback.scores) == [0, 2, 4]
    for step, scores in callback.scores.items():
        weights, optimizer_state, batch = callback.snapshots[step]
        model = small_byte_gpt(SEQ_LEN, width=32, layers=1)
        model.load_state_dict(weights)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        optimizer.load_state_dict(optimizer_state)
        offline = InRunAttributor(model, optimizer=optimizer)
        offline.refresh_probe_gradients(probes)
        # A training step's backward: the preconditioner is that of the update about to happen.
        expected = offline.score(batch, lr=1e-2, accumulate_grad=True)
        assert scores.shape == (8, 2)
        assert torch.allclose(scores, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
