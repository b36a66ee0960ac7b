"""One curriculum reader (rank x DataLoader worker) as explicit steps over one state object.

    read (shards, in stream order) -> decide (policy, in chunks) -> route -> pack
                                                          Emit  -> priority window -> packer
                                                          Defer -> defer spool (row refs)
                                                          Drop  -> ledger only

:class:`ReaderState` is everything a reader holds between two documents — what a checkpoint of
the reader saves — and :class:`CurriculumReader` holds the steps, each a small method over that
state: :meth:`~CurriculumReader.decide_chunk`, :meth:`~CurriculumReader.route`,
:meth:`~CurriculumReader.pack`, :meth:`~CurriculumReader.release_due`. The batches themselves are
cut by the packing loop every stream shares (:func:`loaders.packing.pack_batches`), which calls
:meth:`~CurriculumReader.after_batch` right after each yield: a checkpoint may be taken at the
yield, and a resumed reader continues from that point too, so the spool is checked there.

Exactness (see :mod:`loaders.curriculum_stream`): a chunk's curriculum state and how much of it
is left are part of the state, so a chunk a checkpoint interrupted is finished on resume under
the state it was decided under.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from curriculum.batch import StreamBatch
from curriculum.ledger import FateRecorder
from curriculum.shards.documents import Document, Skipped, decode_text, read_sample, usable_text
from loaders.packing import Packer
from loaders.spool import DeferSpool
from loaders.window import PriorityWindow, WindowItem
from loaders.world import World
from policies.decisions import DEFER, EMIT, DecisionBatch
from policies.state import CurriculumState

if TYPE_CHECKING:
    from loaders.curriculum_stream import CurriculumStream
    from loaders.stream import EpochEnd

#: One item of the reader's input: (epoch, position after the item, the item).
Item = tuple[int, dict[str, int], "Document | Skipped | EpochEnd"]


def repeat_count(weight: float, seed: int, epoch: int, row: int) -> int:
    """Copies of a document under repetition upweighting: floor(w), plus one with probability
    w - floor(w) (a seeded hash of the row, so the count is reproducible); E[count] = w."""
    whole = math.floor(weight)
    fraction = weight - whole
    if fraction <= 0:
        return int(whole)
    digest = hashlib.blake2b(f"repeat:{seed}:{epoch}:{row}".encode(), digest_size=8).digest()
    return int(whole) + int(int.from_bytes(digest, "little") / 2**64 < fraction)


@dataclass
class ReaderState:
    """What one curriculum reader holds between two documents (all of it checkpointed)."""

    packer: Packer
    """Tokens waiting for the next batch."""
    window: PriorityWindow
    """Emitted documents held for reordering."""
    spool: DeferSpool
    """Deferred rows, waiting for their stage or step."""
    fates: FateRecorder
    """Fates recorded since the last batch (they travel with the next one)."""
    position: dict[str, int] = field(default_factory=lambda: {"epoch": 0, "cursor": 0, "ordinal": 0})
    """Where the reader stands in its shards: continuing from here reads the next document."""
    batches: int = 0
    """Batches this reader has yielded (the next one is consumed at step
    ``batches * num_workers + worker``)."""
    chunk_state: dict[str, Any] | None = None
    """The curriculum state the chunk being routed was decided under (``None`` between chunks)."""
    chunk_left: int = 0
    """Documents of that chunk not routed yet."""
    step_offset: int = 0
    """Loader step of this reader's first batch round (non-zero after an elastic resume, where
    the data loader starts afresh at the checkpoint's step)."""

    def checkpoint(self) -> dict[str, Any]:
        """The parts of the state beyond position and packer, as a checkpoint holds them."""
        return {"window": self.window.state_dict(), "spool": self.spool.state_dict(),
                "batches": self.batches, "chunk_state": self.chunk_state,
                "chunk_left": self.chunk_left, "step_offset": self.step_offset}


def state_record(state: CurriculumState) -> dict[str, Any]:
    """A curriculum state as plain values (checkpointable)."""
    return {"step": state.step, "tokens": state.tokens, "stage": state.stage,
            "metrics": dict(state.metrics)}


def state_from_record(record: dict[str, Any]) -> CurriculumState:
    """The inverse of :func:`state_record`."""
    return CurriculumState(record["step"], record["tokens"], record["stage"], record["metrics"])


class CurriculumReader:
    """The steps of one reader of a :class:`~loaders.curriculum_stream.CurriculumStream`."""

    def __init__(self, stream: CurriculumStream, world: World, tokenizer: Any,
                 resume: dict[str, Any]) -> None:
        self.stream = stream
        self.world = world
        self.tokenizer = tokenizer
        self.repeat = stream.curriculum.upweight_mode == "repeat"
        config, curriculum = stream.config, stream.curriculum
        spool_dir = stream.wiring.spool_dir
        spool_path = (Path(spool_dir) / f"rank-{world.rank:05d}-worker-"
                      f"{world.worker:02d}.bin") if spool_dir else None
        self.state = ReaderState(
            Packer(config.batch_size, config.seq_len, tokenizer.eos_id, config.packing),
            PriorityWindow(curriculum.window_size_docs, curriculum.max_age_docs, config.seed),
            DeferSpool(spool_path), FateRecorder(world.worker),
            {k: int(resume.get(k, 0)) for k in ("epoch", "cursor", "ordinal")}
            | ({"plan": 1} if resume.get("plan") else {}),
            int(resume.get("batches", 0)), resume.get("chunk_state"),
            int(resume.get("chunk_left", 0)), int(resume.get("step_offset", 0)))
        # A worker checkpointed before its first batch has a position but nothing else yet.
        if "packer" in resume:
            self.state.packer.load_state_dict(resume["packer"])
        if "window" in resume:
            self.state.window.load_state_dict(resume["window"], self.tokens_at)
            self.state.spool.load_state_dict(resume["spool"])

    # -- helpers ------------------------------------------------------------------------------
    def encode(self, text: str) -> np.ndarray:
        """Token ids of a text."""
        from loaders.stream import encode

        return encode(self.tokenizer, text)

    def tokens_at(self, row: int) -> np.ndarray:
        """Tokens of the document at ``row``, re-read from its shard (a window restored)."""
        sample = read_sample(self.stream.manifest, row)
        text = decode_text(sample.members if sample else {}, self.stream.config.text_field)
        return self.encode(text if isinstance(text, str) else "")

    def step_of_next_batch(self) -> int:
        """The loader step that will consume the batch this reader is filling."""
        return (self.state.step_offset + self.state.batches * self.world.num_workers
                + self.world.worker)

    def state_for_next_batch(self) -> CurriculumState:
        """The curriculum state documents are decided under now."""
        return self.stream.stage.state_for_step(self.step_of_next_batch())

    # -- pack ---------------------------------------------------------------------------------
    def pack(self, row: int, epoch: int, tokens: np.ndarray, weight: float) -> None:
        """Hand an emitted document to the packer: weighted, or repeated under ``repeat``."""
        state = self.state
        state.fates.emit(row, epoch, weight)
        if self.repeat:
            for _ in range(repeat_count(weight, self.stream.config.seed, epoch, row)):
                state.packer.add(tokens, row, 1.0)
        else:
            state.packer.add(tokens, row, weight)

    def stamp(self, batch: StreamBatch) -> None:
        """Attach the fates recorded since the last batch and count the batch."""
        batch["fates"] = self.state.fates.take()
        self.state.batches += 1

    # -- route --------------------------------------------------------------------------------
    def emit(self, row: int, epoch: int, tokens: np.ndarray, weight: float, priority: float) -> None:
        """An emitted document enters the priority window (or the packer, without one)."""
        window = self.state.window
        if window.size == 0:
            self.pack(row, epoch, tokens, weight)
            return
        out = window.push(WindowItem(row, epoch, tokens, weight, priority))
        if out is not None:
            self.pack(out.row, out.epoch, out.tokens, out.weight)

    def route(self, decisions: DecisionBatch, index: int, epoch: int,
              tokens: np.ndarray | None) -> None:
        """Send decision ``index`` where it says: window, spool, or (a drop) the ledger only."""
        row, kind = int(decisions.rows[index]), int(decisions.kind[index])
        fates = self.state.fates
        if kind == EMIT:
            self.emit(row, epoch, tokens, float(decisions.weight[index]),
                      float(decisions.priority[index]))
        elif kind == DEFER:
            stage, step = int(decisions.until_stage[index]), int(decisions.until_step[index])
            self.state.spool.add(row, epoch, stage if stage >= 0 else None,
                                 step if step >= 0 else None)
            fates.defer(row, epoch)
        else:
            fates.drop(row, epoch, decisions.reason[index] or decisions.rule[index])

    def release_due(self) -> None:
        """Re-read and decide again the spooled rows whose stage or step has come."""
        state = self.state_for_next_batch()
        for row, epoch in self.state.spool.take_due(state.stage, state.step):
            self.state.fates.release(row, epoch)
            sample = read_sample(self.stream.manifest, row)
            text = usable_text(sample.members if sample else None, self.stream.config.text_field)
            if text is None:
                self.state.fates.skip(row, epoch, "unreadable on release")
                continue
            self.route(self.stream.stage.decide([row], state), 0, epoch, self.encode(text))

    def after_batch(self) -> None:
        """Right after a batch is yielded (where a checkpoint may be taken): releases."""
        self.release_due()

    # -- decide -------------------------------------------------------------------------------
    def decide_chunk(self, chunk: list[tuple[int, dict[str, int], Document]],
                     state: CurriculumState) -> Iterator[None]:
        """Decide a chunk of documents at once and route them one by one, yielding after each
        (where the packing loop cuts the batches that became ready)."""
        decisions = self.stream.stage.decide([doc.row for _, _, doc in chunk], state)
        reader = self.state
        reader.chunk_state = state_record(state)
        # Emitted documents (most of them) take a short path on Python values: reading numpy
        # scalars one by one costs more than the work they feed.
        rows, kinds = decisions.rows.tolist(), decisions.kind.tolist()
        weights, priorities = decisions.weight.tolist(), decisions.priority.tolist()
        left = len(chunk)
        for index, (epoch, after, doc) in enumerate(chunk):
            reader.position = after
            left -= 1
            reader.chunk_left = left
            if kinds[index] == EMIT:
                self.emit(rows[index], epoch, self.encode(doc.text), weights[index],
                          priorities[index])
            else:
                self.route(decisions, index, epoch, None)
            yield
        reader.chunk_state, reader.chunk_left = None, 0

    def close_item(self, epoch: int, after: dict[str, int], item: Skipped | EpochEnd) -> None:
        """A skipped row is recorded; at an epoch's end the window drains (reordering stays
        within an epoch) and the epoch end is recorded after every row of it."""
        self.state.position = after
        if isinstance(item, Skipped):
            self.state.fates.skip(item.row, epoch, item.reason)
            return
        for out in self.state.window.drain():
            self.pack(out.row, out.epoch, out.tokens, out.weight)
        self.state.fates.epoch_end(item.epoch)

    def feed(self, items: Iterable[Item], resumed: bool) -> Iterator[None]:
        """Read -> decide -> route -> pack, yielding whenever the packer may have a batch.

        Documents are decided in chunks of ``decide_chunk_docs``; an epoch end or a skipped row
        closes the chunk first, so chunk boundaries do not depend on timing.
        """
        if resumed:
            self.release_due()  # the original run checked the spool right after its yield
            yield
        chunk: list[tuple[int, dict[str, int], Document]] = []
        chunk_size = max(1, self.stream.curriculum.decide_chunk_docs)
        # A chunk a checkpoint interrupted is finished first, under its saved state.
        resumed_left, resumed_state = self.state.chunk_left, self.state.chunk_state
        for epoch, after, item in items:
            if isinstance(item, Document):
                chunk.append((epoch, after, item))
                if len(chunk) < (resumed_left or chunk_size):
                    continue
            if chunk:
                state = (state_from_record(resumed_state) if resumed_left
                         else self.state_for_next_batch())
                resumed_left = 0
                yield from self.decide_chunk(chunk, state)
                chunk = []
            if not isinstance(item, Document):
                self.close_item(epoch, after, item)
                yield
