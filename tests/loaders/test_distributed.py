"""Two real gloo processes read the same corpus and see disjoint documents."""

from __future__ import annotations

import os
import socket

import numpy as np
import torch.distributed as dist
import torch.multiprocessing as mp

from curriculum.shards.manifest import ShardManifest
from loaders.stream import PackedTextStream, StreamConfig


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, corpus: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        manifest = ShardManifest.load(corpus)
        stream = PackedTextStream(manifest, StreamConfig(batch_size=2, seq_len=64, num_epochs=1),
                                  rank=rank, world_size=world_size)
        from loaders.world import World

        rows = [d.row for d in stream.iter_documents(World(rank, world_size))]
        gathered: list = [None] * world_size
        dist.all_gather_object(gathered, rows)
        if rank == 0:
            np.save(out, np.array([np.asarray(g) for g in gathered], dtype=object),
                    allow_pickle=True)
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_see_disjoint_documents(small_corpus, tmp_path) -> None:
    out = str(tmp_path / "rows.npy")
    mp.spawn(_worker, args=(2, _free_port(), str(small_corpus.out_dir), out), nprocs=2)
    rank0, rank1 = np.load(out, allow_pickle=True)
    assert len(rank0) > 0 and len(rank1) > 0
    assert not set(rank0.tolist()) & set(rank1.tolist())
    manifest = ShardManifest.load(small_corpus.out_dir)
    assert len(rank0) + len(rank1) == manifest.num_rows
