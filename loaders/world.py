"""The process layout (rank, DataLoader worker), computed once and passed down."""

from __future__ import annotations

from dataclasses import dataclass

import torch.utils.data


@dataclass(frozen=True)
class World:
    """Where this reader sits: distributed rank and DataLoader worker."""

    rank: int = 0
    world_size: int = 1
    worker: int = 0
    num_workers: int = 1

    @property
    def global_worker(self) -> int:
        """Index of this reader among all readers of all ranks."""
        return self.rank * self.num_workers + self.worker

    @property
    def num_readers(self) -> int:
        """Readers over all ranks and workers."""
        return self.world_size * self.num_workers

    @classmethod
    def detect(cls, rank: int = 0, world_size: int = 1) -> World:
        """This process's layout: the given rank, plus the DataLoader worker if inside one."""
        info = torch.utils.data.get_worker_info()
        if info is None:
            return cls(rank, world_size, 0, 1)
        return cls(rank, world_size, info.id, info.num_workers)


def assign_shards(num_shards: int, world: World) -> tuple[list[int], bool]:
    """Shards this reader opens, and whether rows must also be split inside shards.

    With at least as many shards as readers, shards are dealt round-robin over readers (split by
    node, then by worker). With fewer, every reader opens every shard and keeps the rows with
    ``row % num_readers == global_worker``, so small corpora still split cleanly.
    """
    if num_shards >= world.num_readers:
        return list(range(world.global_worker, num_shards, world.num_readers)), False
    return list(range(num_shards)), True
