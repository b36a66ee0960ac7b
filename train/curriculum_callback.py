"""The trainer's side of the curriculum: ledger writing, stage decisions, shared state.

On every step boundary the callback appends the fates that travelled with the consumed batch to
this rank's ledger, advances the policy's stages (on rank 0, broadcast to the others so every
rank agrees) and publishes the new :class:`CurriculumState` for the DataLoader workers. Its
checkpointed state holds the driver, the ledger length and the recent published snapshots, so a
resumed run (also after a hard kill) cuts the ledger back to the checkpoint and republishes what
the workers will ask for.
"""

from __future__ import annotations

from typing import Any

import lightning as L

from curriculum.ledger import FateBatch, LedgerWriter, write_ledger_meta
from loaders.elastic import gather_objects
from loaders.shared_state import SharedCurriculumState
from policies import CurriculumDriver, CurriculumState


class CurriculumCallback(L.Callback):
    """Drives a :class:`loaders.datamodule.CurriculumDataModule` that has a policy."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir
        self.driver: CurriculumDriver | None = None
        self.writer: LedgerWriter | None = None
        self.shared: SharedCurriculumState | None = None
        self.state = CurriculumState()
        self._restored: dict[str, Any] | None = None
        self._tokens_per_step = 0
        self._lag_steps = 0
        self._decided: dict[int, int] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Open the ledger and load the policy (the layout record is written in on_fit_start,
        when a resume knows its step)."""
        datamodule = trainer.datamodule
        if datamodule is None or getattr(datamodule, "curriculum", None) is None:
            raise ValueError("CurriculumCallback needs a CurriculumDataModule with a policy")
        if self.writer is not None:
            return
        datamodule.setup(stage)
        # The policy the data module loaded once (from the run's policy.yaml): the driver and
        # the workers can never read two different versions of the file.
        self.driver = CurriculumDriver(datamodule.policy)
        self.shared = datamodule.shared_state
        self._lag_steps = datamodule.wiring.lag_steps
        self.writer = LedgerWriter(self.run_dir, trainer.global_rank)
        stream = datamodule.stream_config
        self._tokens_per_step = stream.batch_size * stream.seq_len * trainer.world_size

    def _write_meta(self, trainer: L.Trainer, since_step: int | None = None) -> None:
        datamodule = trainer.datamodule
        write_ledger_meta(self.run_dir, world_size=trainer.world_size,
                          num_workers=max(1, datamodule.num_workers),
                          num_rows=datamodule.manifest.num_rows,
                          manifest=datamodule.manifest.content_hash(),
                          num_epochs=datamodule.stream_config.num_epochs, since_step=since_step)

    def _restore_ledger(self, trainer: L.Trainer) -> None:
        """Cut every rank's ledger back to the checkpoint; on rank 0 also the files of ranks
        the new layout no longer has, and record the layout from the resumed step on."""
        by_rank = self._restored.get("ledger_records_by_rank")
        if by_rank is None:  # a checkpoint from before per-rank counts
            self.writer.truncate(int(self._restored["ledger_records"]))
            return
        rank = trainer.global_rank
        self.writer.truncate(int(by_rank[rank]) if rank < len(by_rank) else 0)
        if rank == 0:
            for gone in range(trainer.world_size, len(by_rank)):
                with LedgerWriter(self.run_dir, gone) as writer:
                    writer.truncate(int(by_rank[gone]))
            # on_fit_start runs before the loops are restored: the step is the last published.
            self._write_meta(trainer, since_step=int(self._restored["snapshots"][-1]["step"]))

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Publish the starting state (or, on resume, the checkpoint's recent snapshots).

        Runs after a checkpoint's callback state is restored and before the first batch is
        fetched (the fetcher prefetches before ``on_train_start``, and workers wait for this)."""
        if self._restored is not None:
            self.driver.load_state_dict(self._restored["driver"])
            self._restore_ledger(trainer)
            for record in self._restored["snapshots"]:
                self.shared.publish(CurriculumState(**record))
                self._decided[record["step"]] = record["stage"]
            self.state = CurriculumState(**self._restored["snapshots"][-1])
            self._restored = None
        else:
            if trainer.global_rank == 0:
                self._write_meta(trainer)
            self.state = self.driver.advance(trainer.global_step,
                                             trainer.global_step * self._tokens_per_step, {})
            self.shared.publish(self.state)
            self._decided[self.state.step] = self.state.stage

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        """Ledger the consumed batch's fates, advance stages, publish the new state."""
        fates = batch.get("fates") if isinstance(batch, dict) else None
        if isinstance(fates, FateBatch):
            self.writer.append(fates, trainer.global_step - 1)
        step = trainer.global_step
        metrics = dict(getattr(pl_module, "latest_probe_losses", {}) or {})
        state = None
        if trainer.global_rank == 0:
            state = self.driver.advance(step, step * self._tokens_per_step, metrics)
        # Rank 0 decides, every rank follows: stage changes are identical across ranks.
        state = trainer.strategy.broadcast(state, src=0)
        if trainer.global_rank != 0:
            self.driver.advance(step, step * self._tokens_per_step, state.metrics)
        self.state = state
        self.shared.publish(state)
        # Log the stage the consumed batch was decided under (published lag_steps earlier), so
        # metrics.csv and the ledger summary show when a stage really shaped the data.
        self._decided[step] = state.stage
        in_effect = self._decided.get(step - 1 - self._lag_steps, 0)
        self._decided.pop(step - 1 - 2 * self._lag_steps, None)
        pl_module.log("stage", float(in_effect), on_step=True, on_epoch=False, reduce_fx="max")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Flush the ledger to disk."""
        if self.writer is not None:
            self.writer.flush(fsync=True)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Close the ledger."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def state_dict(self) -> dict[str, Any]:
        """Driver, ledger length and the snapshots workers may still ask for."""
        if self.writer is None:
            return {}
        self.writer.flush(fsync=True)
        snapshots = [{"step": s.step, "tokens": s.tokens, "stage": s.stage,
                      "metrics": dict(s.metrics)} for s in self.shared.snapshots()]
        # Every rank's ledger length (a collective: checkpoints are dumped on every rank), so
        # each rank, and on another layout rank 0 for ranks that are gone, cuts its own file.
        by_rank = gather_objects(self.writer.num_records)
        return {"driver": self.driver.state_dict(), "ledger_records": self.writer.num_records,
                "ledger_records_by_rank": by_rank, "snapshots": snapshots}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Applied in ``on_fit_start``, once the ledger and shared state are open."""
        if state_dict:
            self._restored = state_dict
