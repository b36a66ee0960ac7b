"""The curriculum stream: the policy stage between reading and packing.

Per reader (rank x DataLoader worker), documents flow (the steps: :mod:`loaders.curriculum_reader`)

    shards -> decide (policy, in chunks) -> Emit  -> priority window -> packer -> batches
                                         -> Defer -> defer spool (row refs) -> released later
                                         -> Drop  -> ledger only

and every fate (emit, defer, release, drop, skip, epoch end) is recorded in a FateRecorder whose
events travel with the next batch; the trainer appends them to the ledger when it consumes the
batch, so ledger and checkpointed loader state always agree.

Exactness. The batch a reader yields as its k-th is consumed at loader step
``k * num_workers + worker`` (the loader takes workers round-robin, in order), so each reader
knows the step of the batch it is filling and decides under the curriculum state published
``lag_steps`` before it (see :mod:`loaders.shared_state`). A chunk of decided documents that a
checkpoint interrupts is finished on resume under the same saved state. With these, an
interrupted and resumed run makes the same decisions, in the same order, as an uninterrupted one
— for policies that read affinity, percentiles of affinity and the curriculum state. Attribution
changes while training runs; policies that read it are reproducible only up to when the store's
estimates were refreshed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import numpy as np

from curriculum.batch import StreamBatch
from curriculum.shards.manifest import ShardManifest
from loaders.checkpointable import to_checkpointable
from loaders.curriculum_reader import CurriculumReader
from loaders.packing import pack_batches
from loaders.policy_stage import CurriculumStreamConfig, PolicyStage, StageWiring
from loaders.repartition import iter_plan_items
from loaders.stream import PackedTextStream, StreamConfig
from loaders.tokenize import make_tokenizer
from loaders.world import World


class CurriculumStream(PackedTextStream):
    """A :class:`PackedTextStream` whose documents pass through a curriculum policy."""

    #: Where the store and policy are may change (a run resumed from another directory): the
    #: store checks itself against the corpus, and a resumed run trains under its own
    #: ``policy.yaml``.
    relocatable_keys = ("store", "policy")

    def __init__(self, manifest: ShardManifest, config: StreamConfig | None = None,
                 curriculum: CurriculumStreamConfig | None = None, rank: int = 0,
                 world_size: int = 1, wiring: StageWiring | None = None) -> None:
        super().__init__(manifest, config, rank, world_size)
        self.curriculum = curriculum or CurriculumStreamConfig()
        self.wiring = wiring or StageWiring()
        self.stage = PolicyStage(self.curriculum, self.wiring)
        # Paths of this process's shared state and spool may differ on resume; the user's
        # settings and the lag (it decides which state a batch is decided under) may not.
        self._config_record = {**asdict(self.config), **asdict(self.curriculum),
                               "lag_steps": self.wiring.lag_steps}
        self._shard_rank: np.ndarray | None = None
        self._reader: CurriculumReader | None = None
        self._elastic: dict[int, dict[str, Any]] | None = None
        self._plan: dict[str, Any] | None = None

    # -- shard order from the store's per-shard summaries -----------------------------------
    def shard_order(self, epoch: int) -> list[int]:
        """Seeded shuffle, or descending mean affinity when ``shard_order_by`` is set."""
        by = self.curriculum.shard_order_by
        if not by:
            return super().shard_order(epoch)
        if self._shard_rank is None:
            from curriculum.store import StoreReader

            behavior = by.partition(".")[2]  # the config checked the form 'affinity.<behavior>'
            self._shard_rank = StoreReader(self.curriculum.store).shard_summaries().order(behavior)
        return [int(s) for s in self._shard_rank]

    # -- the reader ---------------------------------------------------------------------------
    def __iter__(self) -> Iterator[StreamBatch]:
        yield from self.iterate(World.detect(self.rank, self.world_size))

    def iterate(self, world: World) -> Iterator[StreamBatch]:
        """The batches of ``world``'s reader (``__iter__`` detects the world itself)."""
        if self._elastic is not None:
            # Resuming on another layout: this worker's re-partitioned state (loaders.elastic).
            self._resume, self._elastic = self._elastic[world.worker], None
        resume = self._resume or {}
        reader = CurriculumReader(self, world, make_tokenizer(self.config.tokenizer), resume)
        self._reader = reader
        state = reader.state
        if resume.get("plan"):
            self._plan = resume["elastic_plan"]
            items = iter_plan_items(self, world, self._plan, resume)
        else:
            items = self.iter_items(world)
        for out in state.window.trim():  # windows merged beyond their size (elastic resume)
            reader.pack(out.row, out.epoch, out.tokens, out.weight)
        yield from pack_batches(state.packer, reader.feed(items, bool(resume)),
                                reader.stamp, after_batch=reader.after_batch,
                                flush=lambda: len(state.fates) > 0)

    # -- checkpointing ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Position, packer, window, spool, batch count and the interrupted chunk's state."""
        reader = self._reader
        if reader is None and self._elastic is not None:
            # Not started yet after an elastic resume: its re-partitioned state is its state.
            worker = World.detect(self.rank, self.world_size).worker
            return to_checkpointable({**self._elastic[worker], "config": self._config_record})
        if reader is not None:
            self._position, self._packer = reader.state.position, reader.state.packer
        state = super().state_dict()
        if reader is not None:
            state.update(to_checkpointable(reader.state.checkpoint()))
        if state.get("plan"):
            state["elastic_plan"] = self._plan
        return state

    def resume_elastic(self, states: dict[int, dict[str, Any]]) -> None:
        """Resume from re-partitioned reader states (by worker), made by
        :func:`loaders.elastic.resume_states`, at the next ``__iter__``."""
        self._elastic = states


