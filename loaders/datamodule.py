"""The ``LightningDataModule`` around the streaming dataset, with a resumable DataLoader."""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from torchdata.stateful_dataloader import StatefulDataLoader

from curriculum.shards.manifest import ShardManifest, manifest_for
from loaders.curriculum_stream import CurriculumStream
from loaders.packing import batch_to_tensors, keep_as_is
from loaders.policy_stage import CurriculumStreamConfig
from loaders.shared_state import SharedCurriculumState, default_state_path
from loaders.stream import PackedTextStream, StreamConfig


def stream_loader(dataset: PackedTextStream, num_workers: int = 1, prefetch_batches: int = 2,
                  snapshot_every_n_steps: int = 16) -> StatefulDataLoader:
    """A resumable DataLoader over a packed stream: no re-batching, numpy out of the workers.

    Workers send their state with one batch in ``snapshot_every_n_steps``; a checkpoint taken in
    between is restored by replaying the few batches since the last snapshot (the stream is
    deterministic), which keeps the per-batch cost of resumability low."""
    extra: dict[str, Any] = {}
    if num_workers > 0:
        extra = {"prefetch_factor": prefetch_batches, "persistent_workers": False}
    return StatefulDataLoader(dataset, batch_size=None, num_workers=num_workers,
                              collate_fn=keep_as_is,
                              snapshot_every_n_steps=snapshot_every_n_steps, **extra)


class CurriculumDataModule(L.LightningDataModule):
    """Streams packed batches from tar shards into a Lightning ``Trainer``, optionally through a
    curriculum policy.

    Without a policy it is a plain resumable text stream. With ``policy`` and ``store`` (or a
    :class:`CurriculumStreamConfig`), every document is decided by the policy in the DataLoader
    workers, and :class:`train.curriculum_callback.CurriculumCallback` must be among the trainer's
    callbacks (it writes the ledger and publishes stages). The DataLoader is torchdata's
    ``StatefulDataLoader``, whose state Lightning stores in checkpoints, so a resumed fit continues
    mid-epoch. Rank and world size are taken from the trainer in :meth:`setup`.
    """

    def __init__(self, shards: str | Sequence[str], stream: StreamConfig | None = None, *,
                 store: str | None = None, policy: str | None = None,
                 curriculum: CurriculumStreamConfig | None = None, num_workers: int = 1,
                 prefetch_batches: int = 2, run_dir: str | None = None,
                 snapshot_every_n_steps: int = 16) -> None:
        super().__init__()
        self.shards = shards
        self.stream_config = stream or StreamConfig()
        if curriculum is None and (policy or store):
            if not (policy and store):
                raise ValueError("a curriculum needs both policy= and store=")
            curriculum = CurriculumStreamConfig(policy=policy, store=store)
        self.curriculum = curriculum
        self.num_workers = num_workers
        self.prefetch_batches = prefetch_batches
        self.run_dir = run_dir
        self.snapshot_every_n_steps = snapshot_every_n_steps
        self.manifest: ShardManifest | None = None
        self.dataset: PackedTextStream | None = None
        self.shared_state: SharedCurriculumState | None = None

    def setup(self, stage: str | None = None) -> None:
        """Read the manifest, place this rank, and create the shared curriculum state."""
        if self.dataset is not None:
            return
        if self.manifest is None:
            self.manifest = manifest_for(self.shards)
        trainer = self.trainer
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        if self.curriculum is None:
            self.dataset = PackedTextStream(self.manifest, self.stream_config, rank, world_size)
            return
        run_dir = Path(self.run_dir or (trainer.default_root_dir if trainer else tempfile.mkdtemp()))
        state_path = default_state_path(run_dir, rank)
        self.shared_state = SharedCurriculumState(state_path, create=True)
        # The loader runs at most workers x prefetch batches ahead of training: stage changes
        # must take effect later than that to be seen identically by every worker.
        lag = max(self.curriculum.lag_steps, max(1, self.num_workers) * self.prefetch_batches + 2)
        self.curriculum = dataclasses.replace(
            self.curriculum, lag_steps=lag, state_path=str(state_path),
            spool_dir=self.curriculum.spool_dir or str(run_dir / "spool"))
        self.dataset = CurriculumStream(self.manifest, self.stream_config, self.curriculum, rank,
                                        world_size)

    def train_dataloader(self) -> StatefulDataLoader:
        """Batches come packed from the dataset, so the loader does no batching itself."""
        if self.dataset is None:
            self.setup("fit")
        return stream_loader(self.dataset, self.num_workers, self.prefetch_batches,
                             self.snapshot_every_n_steps)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Workers hand over numpy arrays; tensors are made here, in the training process."""
        return batch_to_tensors(batch)

    def teardown(self, stage: str | None = None) -> None:
        """Remove the shared state file."""
        if self.shared_state is not None:
            self.shared_state.close()
            self.shared_state.path.unlink(missing_ok=True)
