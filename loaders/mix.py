"""Mix several document sources in given proportions, before packing.

Each source is a corpus read exactly as :class:`~loaders.stream.PackedTextStream` reads it (same
shard order, same split by rank and worker, same stable rows); the mixed stream draws, for every
document it packs, which source the document comes from. Mixing documents rather than batches
keeps the batch format unchanged and puts documents of all sources into the same sequences.

Invariants:

- Deterministic: the source of the i-th document of a reader is a pure function of (seed, global
  reader index, i), drawn in blocks from ``numpy.random.default_rng``; nothing depends on timing.
- Proportions are honoured in expectation; document counts are binomial around them (draws are
  independent, so there is no periodic pattern in the stream).
- Rows stay unique: source ``k``'s rows are shifted by the row counts of sources ``0..k-1``
  (``row_offsets``), so source 0 keeps its own row ids.
- The stream ends when any source runs out (a finite ``num_epochs``): past that point the
  proportions could no longer be kept. The packer's remainder then goes out as one padded batch,
  as in :class:`PackedTextStream`.
- Resumable: the state holds each source's position, the number of draws and the packer buffer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from torch.utils.data import IterableDataset

from curriculum.batch import StreamBatch
from curriculum.shards.documents import Document
from curriculum.shards.manifest import ShardManifest, manifest_for
from loaders.checkpointable import from_checkpointable, to_checkpointable
from loaders.datamodule import CurriculumDataModule
from loaders.packing import Packer, pack_batches
from loaders.stream import PackedTextStream, SkippedRowsStamp, StreamConfig, feed_documents
from loaders.tokenize import make_tokenizer
from loaders.world import World

DRAW_BLOCK = 4096
"""Source draws made at once; a block is a pure function of (seed, reader, block index)."""
_MIX_SALT = 0x6D6978  # keeps the mixing draws apart from any other use of the same seed


@dataclass
class MixSource:
    """One source of a mixed stream."""

    manifest: ShardManifest
    """The corpus."""
    proportion: float
    """Share of documents drawn from this source (normalised over all sources)."""
    name: str = ""
    """Label for reports (e.g. ``parent`` or the shard spec)."""
    seed: int | None = None
    """Shard-order seed of this source (default: the mixed stream's ``seed``)."""
    start_positions: dict[int, dict[str, Any]] | None = None
    """Per global reader index, a ``PackedTextStream`` position to start from instead of the
    beginning (used to continue a parent run's stream from its checkpoint)."""


class MixedTextStream(IterableDataset):
    """Yields packed batches (same format as :class:`PackedTextStream`) mixing several sources."""

    def __init__(self, sources: Sequence[MixSource], config: StreamConfig | None = None,
                 rank: int = 0, world_size: int = 1) -> None:
        super().__init__()
        if not sources:
            raise ValueError("a mixed stream needs at least one source")
        proportions = np.asarray([s.proportion for s in sources], dtype=np.float64)
        if (proportions < 0).any() or not np.isfinite(proportions).all() or proportions.sum() <= 0:
            raise ValueError(f"mix proportions must be >= 0 with a positive sum, got "
                             f"{proportions.tolist()}")
        self.config = config or StreamConfig()
        self.mix_sources = list(sources)
        self.proportions = proportions / proportions.sum()
        self._cumulative = np.cumsum(self.proportions)
        self._cumulative[-1] = 1.0  # rounding must never leave a draw above the last bound
        self.rank = rank
        self.world_size = world_size
        self.streams = [
            PackedTextStream(s.manifest, replace(self.config, seed=self.config.seed if s.seed is None
                                                 else s.seed), rank, world_size)
            for s in sources
        ]
        counts = [s.manifest.num_rows for s in sources]
        self.row_offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self._draws = 0
        self._block: tuple[int, np.ndarray] | None = None
        self._packer: Packer | None = None
        self._resume: dict[str, Any] | None = None
        self._source_states: list[dict[str, Any] | None] = [None] * len(sources)
        self._started = [False] * len(sources)
        self._config_record = {**asdict(self.config), "proportions": self.proportions.tolist(),
                               "num_rows": counts}

    # -- draws --------------------------------------------------------------------------------
    def source_of(self, world: World, index: int) -> int:
        """Which source the ``index``-th document of this reader comes from."""
        block, position = divmod(index, DRAW_BLOCK)
        if self._block is None or self._block[0] != block:
            rng = np.random.default_rng([_MIX_SALT, self.config.seed, world.global_worker, block])
            choices = np.searchsorted(self._cumulative, rng.random(DRAW_BLOCK), side="right")
            self._block = (block, choices)
        return int(self._block[1][position])

    # -- iteration ----------------------------------------------------------------------------
    def iter_documents(self, world: World) -> Iterator[tuple[int, Document]]:
        """``(source index, Document)`` in mixed order; rows are still the source's own rows."""
        resume, self._resume = self._resume, None
        if resume is not None:
            self._draws = int(resume["draws"])
            self._source_states = list(resume["sources"])
        else:
            self._draws = 0
            self._source_states = [
                (s.start_positions or {}).get(world.global_worker) for s in self.mix_sources]
        self._started = [False] * len(self.streams)
        for stream, state in zip(self.streams, self._source_states, strict=True):
            if state is not None:
                stream.load_state_dict({k: v for k, v in state.items() if k != "config"})
        iterators = [stream.iter_documents(world) for stream in self.streams]
        while True:
            choice = self.source_of(world, self._draws)
            try:
                document = next(iterators[choice])
            except StopIteration:
                return  # one source is exhausted: its share can no longer be honoured
            self._started[choice] = True
            self._draws += 1
            yield choice, document

    def __iter__(self) -> Iterator[StreamBatch]:
        world = World.detect(self.rank, self.world_size)
        tokenizer = make_tokenizer(self.config.tokenizer)
        packer = Packer(self.config.batch_size, self.config.seq_len, tokenizer.eos_id,
                        self.config.packing)
        if self._resume is not None and self._resume.get("packer") is not None:
            packer.load_state_dict(self._resume["packer"])
        self._packer = packer
        stamp = SkippedRowsStamp(self._skipped)
        # A source that runs out ends the feed: the remainder, padded, loses nothing.
        feed = feed_documents(packer, tokenizer, (
            (d.row + int(self.row_offsets[choice]), d.text)
            for choice, d in self.iter_documents(world)))
        yield from pack_batches(packer, feed, stamp)

    def _skipped(self) -> int:
        return sum(stream.skips.total for stream in self.streams)

    # -- checkpointing (torchdata Stateful protocol) ------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Each source's position, the draw count and the packer buffer."""
        sources = []
        for stream, started, state in zip(self.streams, self._started, self._source_states,
                                          strict=True):
            # A source not read since (re)start still stands where it was restored to.
            sources.append(stream.state_dict() if started or state is None else state)
        return to_checkpointable({
            "draws": self._draws,
            "sources": sources,
            "packer": self._packer.state_dict() if self._packer is not None else None,
            "config": self._config_record,
        })

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict` at the next ``__iter__``."""
        saved = state.get("config")
        if saved is not None and saved != self._config_record:
            changed = sorted(k for k in saved if saved[k] != self._config_record.get(k))
            raise ValueError(f"mixed loader state was saved with a different config ({changed})")
        if len(state["sources"]) != len(self.streams):
            raise ValueError(f"mixed loader state has {len(state['sources'])} sources, "
                             f"the stream {len(self.streams)}")
        self._resume = from_checkpointable({k: v for k, v in state.items() if k != "config"})


class MixedDataModule(CurriculumDataModule):
    """A :class:`CurriculumDataModule` whose dataset is a :class:`MixedTextStream`.

    ``sources`` are shard specs (or ready :class:`MixSource` objects); ``proportions`` go with
    the shard specs and are ignored for ``MixSource`` entries, which carry their own.
    """

    def __init__(self, sources: Sequence[str | MixSource], proportions: Sequence[float] | None = None,
                 stream: StreamConfig | None = None, num_workers: int = 1,
                 prefetch_batches: int = 2) -> None:
        first = sources[0] if sources else ""
        super().__init__(first if isinstance(first, str) else "", stream=stream,
                         num_workers=num_workers, prefetch_batches=prefetch_batches)
        if proportions is not None and len(proportions) != len(sources):
            raise ValueError(f"{len(sources)} sources but {len(proportions)} proportions")
        self.sources = list(sources)
        self.proportions = list(proportions) if proportions is not None else [1.0] * len(sources)
        self.mix_sources: list[MixSource] | None = None

    def setup(self, stage: str | None = None) -> None:
        """Read the manifests and place this rank."""
        if self.dataset is not None:
            return
        if self.mix_sources is None:
            self.mix_sources = [
                s if isinstance(s, MixSource) else MixSource(manifest_for(s), p, name=s)
                for s, p in zip(self.sources, self.proportions, strict=True)
            ]
            self.manifest = self.mix_sources[0].manifest
        trainer = self.trainer
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        self.dataset = MixedTextStream(self.mix_sources, self.stream_config, rank, world_size)
