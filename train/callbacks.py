"""Callbacks of a training run."""

from __future__ import annotations

from typing import Any

import lightning as L


class ProbeLossCallback(L.Callback):
    """Evaluates the probe losses every ``every_n_steps`` optimizer steps (and at step 0 and the
    end) and logs them as ``probe_loss/<behavior>``."""

    def __init__(self, every_n_steps: int = 25) -> None:
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.last: dict[str, float] = {}

    def _log(self, trainer: L.Trainer, pl_module: Any) -> None:
        self.last = pl_module.probe_losses()
        pl_module.latest_probe_losses = {f"probe_loss/{b}": v for b, v in self.last.items()}
        # Straight to the loggers at the exact step: self.log would hold the value until the next
        # log_every_n_steps flush and repeat it on every later row.
        metrics = {f"probe_loss/{behavior}": loss for behavior, loss in self.last.items()}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any,
                             batch_idx: int) -> None:
        """Log the untrained model's probe losses with the first batch."""
        if trainer.global_step == 0 and batch_idx == 0 and pl_module.probe_batches:
            self._log(trainer, pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        """Every ``every_n_steps`` steps, and on the last step."""
        step = trainer.global_step
        last_step = trainer.max_steps > 0 and step >= trainer.max_steps
        if pl_module.probe_batches and (step % self.every_n_steps == 0 or last_step):
            self._log(trainer, pl_module)
