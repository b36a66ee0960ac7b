"""The streaming dataset: every row once per epoch, disjoint workers, resumable state."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from curriculum.shards.manifest import ShardManifest
from loaders.datamodule import CurriculumDataModule, stream_loader
from loaders.stream import PackedTextStream, StreamConfig
from loaders.world import World, assign_shards


def test_one_epoch_covers_every_row_in_pad_mode(small_corpus) -> None:
    manifest = ShardManifest.load(small_corpus.out_dir)
    config = StreamConfig(batch_size=4, seq_len=1024, packing="pad", num_epochs=1)
    loader = stream_loader(PackedTextStream(manifest, config),
                                num_workers=2)
    # One document per sequence (all are shorter than 1024 tokens): its row is rows[:, 0].
    rows = np.concatenate([np.asarray(b["rows"])[:, 0].copy() for b in loader])
    rows = rows[rows >= 0]
    # The last partial batch of each worker is padded, so every row arrives exactly once.
    assert sorted(rows.tolist()) == list(range(manifest.num_rows))


@pytest.mark.parametrize(("num_shards", "readers"), [(8, 4), (3, 4), (5, 2)])
def test_readers_partition_rows(num_shards: int, readers: int) -> None:
    owned: list[set] = []
    for g in range(readers):
        world = World(rank=g // 2, world_size=max(1, readers // 2), worker=g % 2,
                      num_workers=min(2, readers))
        shards, split_rows = assign_shards(num_shards, world)
        rows = {(s, r) for s in shards for r in range(10)
                if not split_rows or (s * 10 + r) % world.num_readers == world.global_worker}
        owned.append(rows)
    union = set().union(*owned)
    assert len(union) == num_shards * 10 == sum(len(o) for o in owned)


def _fingerprint(batch: dict) -> str:
    # Hash at once: holding many worker tensors keeps one shared-memory file open per tensor.
    digest = hashlib.sha256(np.asarray(batch["input_ids"]).tobytes())
    digest.update(np.asarray(batch["token_rows"]).tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize("snapshot_every_n_steps", [1, 16])
def test_mid_epoch_resume_with_two_workers_is_exact(small_corpus, snapshot_every_n_steps) -> None:
    manifest = ShardManifest.load(small_corpus.out_dir)
    config = StreamConfig(batch_size=2, seq_len=64, num_epochs=1, seed=3)

    def loader():
        return stream_loader(PackedTextStream(manifest, config),
                             num_workers=2, snapshot_every_n_steps=snapshot_every_n_steps)

    reference = [_fingerprint(b) for b in loader()]
    first = loader()
    iterator = iter(first)
    head = [_fingerprint(next(iterator)) for _ in range(37)]
    state = first.state_dict()
    del iterator, first
    resumed = loader()
    resumed.load_state_dict(state)
    tail = [_fingerprint(b) for b in resumed]
    assert len(reference) > 60
    assert head + tail == reference


def test_datamodule_without_trainer_yields_batches(small_corpus) -> None:
    module = CurriculumDataModule(str(small_corpus.out_dir), StreamConfig(batch_size=2, seq_len=32),
                                  num_workers=0)
    module.setup("fit")
    batch = next(iter(module.train_dataloader()))
    assert batch["input_ids"].shape == (2, 32)
    assert set(batch) >= {"input_ids", "labels", "loss_weight", "rows", "token_rows"}
    assert (batch["loss_weight"] == 1).all()
