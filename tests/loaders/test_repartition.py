"""Re-partitioning pending shard ranges: the new readers read exactly the rows the old readers
had left, once each, per epoch — also when rows are split inside shards and readers stand in
different epochs — and the window and spool entries are dealt without loss."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from curriculum.shards.writer import write_shards
from loaders.repartition import iter_plan_items, repartition
from loaders.stream import EpochEnd, PackedTextStream, StreamConfig
from loaders.world import World

LAST_EPOCH = 3


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """44 documents in 6 shards (five of 8, one of 4)."""
    samples = [{"__key__": f"doc-{i:03d}", "txt": f"document number {i}"} for i in range(44)]
    _, manifest = write_shards(samples, tmp_path_factory.mktemp("repartition"),
                               max_docs_per_shard=8)
    return manifest


def rows_until(stream: PackedTextStream, items, last_epoch: int) -> Counter:
    """(epoch, row) of every document item through ``last_epoch``."""
    seen: Counter = Counter()
    for epoch, _, item in items:
        if epoch > last_epoch:
            break
        if not isinstance(item, EpochEnd):
            seen[(epoch, item.row)] += 1
    return seen


def old_reader_items(stream: PackedTextStream, world: World, position: dict):
    stream._resume = dict(position)
    return stream.iter_items(world)


@pytest.mark.parametrize(("old", "new"), [((1, 3), (1, 2)), ((2, 2), (1, 3)), ((1, 2), (2, 4)),
                                          ((3, 2), (1, 1))])
def test_new_readers_read_what_the_old_ones_left_exactly_once(manifest, old, new) -> None:
    stream = PackedTextStream(manifest, StreamConfig(seed=4))
    old_world, new_world = World(0, old[0], 0, old[1]), World(0, new[0], 0, new[1])
    rng = np.random.default_rng(sum(old) + sum(new))
    states, expected = [], Counter()
    for g in range(old_world.num_readers):
        world = World(g // old[1], old[0], g % old[1], old[1])
        # Readers stand at different places: some epochs ahead, some mid-shard.
        shards, _ = stream._reader_shards(world, 0)
        epoch = int(rng.integers(0, 2))
        cursor = int(rng.integers(0, max(1, len(shards))))
        position = {"epoch": epoch, "cursor": cursor, "ordinal": int(rng.integers(0, 5))}
        expected += rows_until(stream, old_reader_items(stream, world, position), LAST_EPOCH)
        states.append({**position,
                       "window": {"next_seq": 2, "rows": np.array([g, g + 100]),
                                  "epochs": np.array([0, 0]), "weights": np.array([1.0, 2.0]),
                                  "priorities": np.array([0.5, 0.1]), "seqs": np.array([0, 1])}})
    # Beyond the last open epoch every reader reads its ordinary share: compare through LAST_EPOCH.
    new_states = repartition(stream, old_world, states, new_world, step=17)
    got = Counter()
    for g, state in enumerate(new_states):
        world = World(g // new[1], new[0], g % new[1], new[1])
        assert state["step_offset"] == 17 and state["batches"] == 0
        items = (iter_plan_items(stream, world, state["elastic_plan"], state) if state.get("plan")
                 else old_reader_items(stream, world, state))
        got += rows_until(stream, items, LAST_EPOCH)
    assert got == expected
    assert max(got.values()) == 1
    windows = sorted(r for s in new_states for r in s["window"]["rows"].tolist())
    assert windows == sorted([g for g in range(len(states))] + [g + 100 for g in range(len(states))])


def test_a_plan_resumed_mid_range_continues_where_it_stopped(manifest) -> None:
    stream = PackedTextStream(manifest, StreamConfig(seed=1, num_epochs=2))  # a finite stream
    old_world = World(0, 2, 0, 1)
    states = [{"epoch": 0, "cursor": 1, "ordinal": 3}, {"epoch": 0, "cursor": 0, "ordinal": 0}]
    [state] = repartition(stream, old_world, states, World(0, 1, 0, 1), step=5)
    world = World(0, 1, 0, 1)
    whole = list(iter_plan_items(stream, world, state["elastic_plan"], state))
    cut = 6
    _, after, _ = whole[cut - 1]
    rest = list(iter_plan_items(stream, world, state["elastic_plan"], after))
    assert len(whole) > 2 * cut
    assert [(e, getattr(i, "row", None)) for e, _, i in whole[:cut] + rest] == \
        [(e, getattr(i, "row", None)) for e, _, i in whole]
