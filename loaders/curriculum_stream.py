"""The curriculum stream: the policy stage between reading and packing.

Per reader (rank x DataLoader worker), documents flow

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

import hashlib
import math
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from curriculum.ledger import FateRecorder
from curriculum.shards.documents import Document, Skipped, decode_text, read_sample, usable_text
from curriculum.shards.manifest import ShardManifest
from loaders.checkpointable import to_checkpointable
from loaders.packing import Packer
from loaders.policy_stage import CurriculumStreamConfig, PolicyStage
from loaders.spool import DeferSpool
from loaders.stream import EpochEnd, PackedTextStream, StreamConfig, encode
from loaders.tokenize import make_tokenizer
from loaders.window import PriorityWindow, WindowItem
from loaders.world import World
from policies.decisions import DEFER, EMIT, DecisionBatch
from policies.state import CurriculumState


def repeat_count(weight: float, seed: int, epoch: int, row: int) -> int:
    """Copies of a document under repetition upweighting: floor(w), plus one with probability
    w - floor(w) (a seeded hash of the row, so the count is reproducible); E[count] = w."""
    whole = math.floor(weight)
    fraction = weight - whole
    if fraction <= 0:
        return int(whole)
    digest = hashlib.blake2b(f"repeat:{seed}:{epoch}:{row}".encode(), digest_size=8).digest()
    return int(whole) + int(int.from_bytes(digest, "little") / 2**64 < fraction)


class CurriculumStream(PackedTextStream):
    """A :class:`PackedTextStream` whose documents pass through a curriculum policy."""

    def __init__(self, manifest: ShardManifest, config: StreamConfig | None = None,
                 curriculum: CurriculumStreamConfig | None = None, rank: int = 0,
                 world_size: int = 1) -> None:
        super().__init__(manifest, config, rank, world_size)
        self.curriculum = curriculum or CurriculumStreamConfig()
        if self.curriculum.upweight_mode not in ("loss_weight", "repeat"):
            raise ValueError(f"upweight_mode must be 'loss_weight' or 'repeat', "
                             f"got {self.curriculum.upweight_mode!r}")
        self.stage = PolicyStage(self.curriculum)
        # Paths of this process's shared state and spool may differ on resume; the rest may not.
        runtime = ("state_path", "spool_dir")
        self._config_record = {**asdict(self.config),
                               **{k: v for k, v in asdict(self.curriculum).items()
                                  if k not in runtime}}
        self._shard_rank: np.ndarray | None = None
        self._live: dict[str, Any] = {}

    # -- shard order from the store's per-shard summaries -----------------------------------
    def shard_order(self, epoch: int) -> list[int]:
        """Seeded shuffle, or descending mean affinity when ``shard_order_by`` is set."""
        by = self.curriculum.shard_order_by
        if not by:
            return super().shard_order(epoch)
        if self._shard_rank is None:
            from curriculum.store import StoreReader

            family, _, behavior = by.partition(".")
            if family != "affinity" or not behavior:
                raise ValueError(f"shard_order_by must look like 'affinity.<behavior>', got {by!r}")
            self._shard_rank = StoreReader(self.curriculum.store).shard_summaries().order(behavior)
        return [int(s) for s in self._shard_rank]

    # -- the reader ---------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict[str, Any]]:
        world = World.detect(self.rank, self.world_size)
        resume = self._resume or {}
        tokenizer = make_tokenizer(self.config.tokenizer)
        packer = Packer(self.config.batch_size, self.config.seq_len, tokenizer.eos_id,
                        self.config.packing)
        window = PriorityWindow(self.curriculum.window_size_docs, self.curriculum.max_age_docs,
                                self.config.seed)
        spool_path = (Path(self.curriculum.spool_dir) / f"rank-{world.rank:05d}-worker-"
                      f"{world.worker:02d}.bin") if self.curriculum.spool_dir else None
        spool = DeferSpool(spool_path)
        fates = FateRecorder(world.worker)
        # A worker checkpointed before its first batch has a position but nothing else yet.
        if "packer" in resume:
            packer.load_state_dict(resume["packer"])
        def tokens_of(row: int) -> np.ndarray:
            sample = read_sample(self.manifest, row)
            text = decode_text(sample.members if sample else {}, self.config.text_field)
            return encode(tokenizer, text if isinstance(text, str) else "")

        if "window" in resume:
            window.load_state_dict(resume["window"], tokens_of)
            spool.load_state_dict(resume["spool"])
        live = {"batches": int(resume.get("batches", 0)),
                "chunk_state": resume.get("chunk_state"),
                "chunk_left": int(resume.get("chunk_left", 0))}
        self._live = live
        self._packer, self._window, self._spool = packer, window, spool
        self._position = {k: int(resume.get(k, 0)) for k in ("epoch", "cursor", "ordinal")}

        def step_of_next_batch() -> int:
            return live["batches"] * world.num_workers + world.worker

        repeat = self.curriculum.upweight_mode == "repeat"

        def to_packer(row: int, epoch: int, tokens: np.ndarray, weight: float) -> None:
            fates.emit(row, epoch, weight)
            if repeat:
                for _ in range(repeat_count(weight, self.config.seed, epoch, row)):
                    packer.add(tokens, row, 1.0)
            else:
                packer.add(tokens, row, weight)

        def emit(row: int, epoch: int, tokens: np.ndarray, weight: float, priority: float) -> None:
            if window.size == 0:
                to_packer(row, epoch, tokens, weight)
                return
            out = window.push(WindowItem(row, epoch, tokens, weight, priority))
            if out is not None:
                to_packer(out.row, out.epoch, out.tokens, out.weight)

        def route(decisions: DecisionBatch, index: int, epoch: int, tokens: np.ndarray) -> None:
            row, kind = int(decisions.rows[index]), int(decisions.kind[index])
            if kind == EMIT:
                emit(row, epoch, tokens, float(decisions.weight[index]),
                     float(decisions.priority[index]))
            elif kind == DEFER:
                stage, step = int(decisions.until_stage[index]), int(decisions.until_step[index])
                spool.add(row, epoch, stage if stage >= 0 else None, step if step >= 0 else None)
                fates.defer(row, epoch)
            else:
                fates.drop(row, epoch, decisions.reason[index] or decisions.rule[index])

        def ready_batches() -> Iterator[dict[str, Any]]:
            while packer.ready():
                batch = packer.pop()
                batch["fates"] = fates.take()
                live["batches"] += 1
                yield batch
                # A checkpoint may be taken here; on resume execution continues from here too.
                yield from releases()

        def releases() -> Iterator[dict[str, Any]]:
            state = self.stage.state_for_step(step_of_next_batch())
            for row, epoch in spool.take_due(state.stage, state.step):
                fates.release(row, epoch)
                sample = read_sample(self.manifest, row)
                text = usable_text(sample.members if sample else None, self.config.text_field)
                if text is None:
                    fates.skip(row, epoch, "unreadable on release")
                    continue
                route(self.stage.decide([row], state), 0, epoch, encode(tokenizer, text))
            yield from ready_batches()

        def decide_chunk(chunk: list[tuple[int, dict[str, int], Document]],
                         state: CurriculumState) -> Iterator[dict[str, Any]]:
            decisions = self.stage.decide([doc.row for _, _, doc in chunk], state)
            live["chunk_state"] = _state_record(state)
            # Emitted documents (most of them) take a short path on Python values: reading numpy
            # scalars one by one costs more than the work they feed.
            rows, kinds = decisions.rows.tolist(), decisions.kind.tolist()
            weights, priorities = decisions.weight.tolist(), decisions.priority.tolist()
            left = len(chunk)
            for index, (epoch, after, doc) in enumerate(chunk):
                self._position = after
                left -= 1
                live["chunk_left"] = left
                if kinds[index] == EMIT:
                    emit(rows[index], epoch, encode(tokenizer, doc.text), weights[index],
                         priorities[index])
                else:
                    route(decisions, index, epoch, None)
                if packer.ready():
                    yield from ready_batches()
            live["chunk_state"], live["chunk_left"] = None, 0

        if resume:
            yield from releases()  # the original run checked the spool right after its yield
        chunk: list[tuple[int, dict[str, int], Document]] = []
        chunk_size = max(1, self.curriculum.decide_chunk_docs)
        # A chunk a checkpoint interrupted is finished first, under its saved state.
        resumed_chunk_left, resumed_state = live["chunk_left"], live["chunk_state"]
        for epoch, after, item in self.iter_items(world):
            if isinstance(item, Document):
                chunk.append((epoch, after, item))
                limit = resumed_chunk_left or chunk_size
                if len(chunk) >= limit:
                    state = (_state_from_record(resumed_state) if resumed_chunk_left
                             else self.stage.state_for_step(step_of_next_batch()))
                    resumed_chunk_left = 0
                    yield from decide_chunk(chunk, state)
                    chunk = []
                continue
            if chunk:  # epoch ends and skips close the chunk first (deterministic boundaries)
                state = (_state_from_record(resumed_state) if resumed_chunk_left
                         else self.stage.state_for_step(step_of_next_batch()))
                resumed_chunk_left = 0
                yield from decide_chunk(chunk, state)
                chunk = []
            self._position = after
            if isinstance(item, Skipped):
                fates.skip(item.row, epoch, item.reason)
            elif isinstance(item, EpochEnd):
                for out in window.drain():  # reordering stays within an epoch
                    to_packer(out.row, out.epoch, out.tokens, out.weight)
                fates.epoch_end(item.epoch)
                yield from ready_batches()
        if packer.has_tokens() or len(fates):
            batch = packer.pop_partial()
            batch["fates"] = fates.take()
            live["batches"] += 1
            yield batch

    # -- checkpointing ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Position, packer, window, spool, batch count and the interrupted chunk's state."""
        state = super().state_dict()
        if self._live:
            state.update(to_checkpointable({
                "window": self._window.state_dict(), "spool": self._spool.state_dict(),
                "batches": self._live["batches"], "chunk_state": self._live["chunk_state"],
                "chunk_left": self._live["chunk_left"]}))
        return state


def _state_record(state: CurriculumState) -> dict[str, Any]:
    return {"step": state.step, "tokens": state.tokens, "stage": state.stage,
            "metrics": dict(state.metrics)}


def _state_from_record(record: dict[str, Any]) -> CurriculumState:
    return CurriculumState(record["step"], record["tokens"], record["stage"], record["metrics"])
