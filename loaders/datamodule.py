"""The ``LightningDataModule`` around the streaming dataset, with a resumable DataLoader."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
from torchdata.stateful_dataloader import StatefulDataLoader

from loaders.manifest import ShardManifest, manifest_for
from loaders.packing import batch_to_tensors, keep_as_is
from loaders.stream import PackedTextStream, StreamConfig


def stream_loader(dataset: PackedTextStream, num_workers: int = 1, prefetch_batches: int = 2,
                  snapshot_every_n_steps: int = 1) -> StatefulDataLoader:
    """A resumable DataLoader over a packed stream: no re-batching, numpy out of the workers."""
    extra: dict[str, Any] = {}
    if num_workers > 0:
        extra = {"prefetch_factor": prefetch_batches, "persistent_workers": False}
    return StatefulDataLoader(dataset, batch_size=None, num_workers=num_workers,
                              collate_fn=keep_as_is,
                              snapshot_every_n_steps=snapshot_every_n_steps, **extra)


class CurriculumDataModule(L.LightningDataModule):
    """Streams packed batches from tar shards into a Lightning ``Trainer``.

    The DataLoader is torchdata's ``StatefulDataLoader``, whose state (each worker's position
    and packer buffer) Lightning stores in checkpoints, so a resumed fit continues mid-epoch.
    Rank and world size are taken from the trainer in :meth:`setup`.
    """

    def __init__(self, shards: str | Sequence[str], stream: StreamConfig | None = None,
                 num_workers: int = 1, prefetch_batches: int = 2) -> None:
        super().__init__()
        self.shards = shards
        self.stream_config = stream or StreamConfig()
        self.num_workers = num_workers
        self.prefetch_batches = prefetch_batches
        self.manifest: ShardManifest | None = None
        self.dataset: PackedTextStream | None = None

    def setup(self, stage: str | None = None) -> None:
        """Read the manifest and place this rank."""
        if self.manifest is None:
            self.manifest = manifest_for(self.shards)
        trainer = self.trainer
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        self.dataset = PackedTextStream(self.manifest, self.stream_config, rank, world_size)

    def train_dataloader(self) -> StatefulDataLoader:
        """Batches come packed from the dataset, so the loader does no batching itself."""
        if self.dataset is None:
            self.setup("fit")
        return stream_loader(self.dataset, self.num_workers, self.prefetch_batches)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Workers hand over numpy arrays; tensors are made here, in the training process."""
        return batch_to_tensors(batch)
