"""The streaming dataset: shards -> documents -> tokens -> packed batches, resumable.

Each DataLoader worker reads the shards assigned to it (split by rank, then by worker; see
:func:`loaders.world.assign_shards`), decodes documents with their stable rows, tokenizes and
packs them, and yields whole batches. The worker's position (epoch, shard, sample ordinal) and the
packer's buffer form its state, which torchdata's ``StatefulDataLoader`` checkpoints; on restore
the reader seeks to the sample's byte offset from the manifest instead of re-reading the shard.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from torch.utils.data import IterableDataset

from curriculum.batch import StreamBatch
from curriculum.shards.documents import Document, SkipCounter, Skipped
from curriculum.shards.manifest import ShardManifest
from curriculum.shards.member_index import iter_shard_documents
from curriculum.shards.remote import local_shard
from loaders.checkpointable import from_checkpointable, to_checkpointable
from loaders.packing import Packer, pack_batches
from loaders.tokenize import ByteTokenizer, Tokenizer, make_tokenizer
from loaders.world import World, assign_shards


@dataclass(frozen=True)
class EpochEnd:
    """Marker: the reader has read its whole share of ``epoch``."""

    epoch: int


@dataclass
class StreamConfig:
    """How documents become batches."""

    batch_size: int = 16
    """Sequences per batch (per rank)."""
    seq_len: int = 128
    """Tokens per sequence."""
    packing: Literal["concat", "pad"] = "concat"
    """``concat`` (documents joined into one stream) or ``pad`` (one document per sequence)."""
    tokenizer: str = "bytes"
    """``bytes`` or a local Hugging Face tokenizer directory."""
    text_field: str = "text"
    """Field holding the text in ``.json`` members (``.txt`` members are used first)."""
    shuffle_shards: bool = True
    """Reorder shards each epoch, with the same order on every rank (seeded by seed, epoch)."""
    seed: int = 0
    """Seed of the shard order."""
    num_epochs: int | None = None
    """Passes over the data; ``None`` streams forever (training stops at ``max_steps``)."""


class PackedTextStream(IterableDataset):
    """Yields packed batches (see :mod:`loaders.packing`) from WebDataset tar shards."""

    #: Settings recorded with the state that may differ on resume (paths, spelled relative to
    #: another directory or moved); everything else must match.
    relocatable_keys: tuple[str, ...] = ()

    def __init__(self, manifest: ShardManifest, config: StreamConfig | None = None,
                 rank: int = 0, world_size: int = 1) -> None:
        super().__init__()
        self.manifest = manifest
        self.config = config or StreamConfig()
        self.rank = rank
        self.world_size = world_size
        self._resume: dict[str, Any] | None = None
        self._position: dict[str, Any] = {}
        self._packer: Packer | None = None
        self.skips = SkipCounter()
        self._config_record = asdict(self.config)

    # -- layout -------------------------------------------------------------------------------
    def shard_order(self, epoch: int) -> list[int]:
        """Global shard order for ``epoch`` (identical on every rank)."""
        order = list(range(self.manifest.num_shards))
        if self.config.shuffle_shards:
            random.Random(f"{self.config.seed}:{epoch}").shuffle(order)
        return order

    def _reader_shards(self, world: World, epoch: int) -> tuple[list[int], bool]:
        order = self.shard_order(epoch)
        picks, split_rows = assign_shards(len(order), world)
        return [order[i] for i in picks], split_rows

    # -- iteration ----------------------------------------------------------------------------
    def iter_items(self, world: World) -> Iterator[tuple[int, dict[str, int], Document | Skipped | EpochEnd]]:
        """This reader's rows in stream order as ``(epoch, position after the item, item)``.

        Items are documents, skipped rows, and an :class:`EpochEnd` marker when the reader has
        read its whole share of an epoch. The position is what a checkpoint taken right after
        the item must hold to continue with the next one.
        """
        start = self._resume or {"epoch": 0, "cursor": 0, "ordinal": 0}
        self._resume = None
        epoch = start["epoch"]
        while self.config.num_epochs is None or epoch < self.config.num_epochs:
            shards, split_rows = self._reader_shards(world, epoch)
            cursor = start["cursor"] if epoch == start["epoch"] else 0
            for position in range(cursor, len(shards)):
                shard = shards[position]
                ordinal = start["ordinal"] if (epoch, position) == (start["epoch"], cursor) else 0
                first_row = int(self.manifest.first_rows[shard])
                count = int(self.manifest.counts[shard])
                if ordinal >= count:
                    continue
                offset = int(self.manifest.offsets_bytes[first_row + ordinal])
                path = self.manifest.shard_paths[shard]
                upcoming = (self.manifest.shard_paths[shards[i]]
                            for i in range(position + 1, len(shards)))
                # Through the shard's member index when it has one (no tar headers parsed).
                rows = slice(first_row, first_row + count)
                for item in iter_shard_documents(local_shard(path, upcoming), first_row, count,
                                                 ordinal, offset, self.manifest.offsets_bytes[rows],
                                                 self.config.text_field):
                    if split_rows and item.row % world.num_readers != world.global_worker:
                        continue
                    after = {"epoch": epoch, "cursor": position, "ordinal": item.row - first_row + 1}
                    if isinstance(item, Skipped):
                        self.skips.add(item, path)
                    yield epoch, after, item
            epoch += 1
            yield epoch - 1, {"epoch": epoch, "cursor": 0, "ordinal": 0}, EpochEnd(epoch - 1)

    def iter_documents(self, world: World) -> Iterator[Document]:
        """This reader's documents in stream order, tracking the position for checkpoints."""
        for _, after, item in self.iter_items(world):
            self._position = after
            if isinstance(item, Document):
                yield item

    def __iter__(self) -> Iterator[StreamBatch]:
        world = World.detect(self.rank, self.world_size)
        tokenizer = make_tokenizer(self.config.tokenizer)
        packer = Packer(self.config.batch_size, self.config.seq_len, tokenizer.eos_id,
                        self.config.packing)
        if self._resume is not None and "packer" in self._resume:
            packer.load_state_dict(self._resume["packer"])
        self._packer = packer
        stamp = SkippedRowsStamp(lambda: self.skips.total)
        feed = feed_documents(packer, tokenizer, (
            (d.row, d.text) for d in self.iter_documents(world)))
        yield from pack_batches(packer, feed, stamp)

    # -- checkpointing (torchdata Stateful protocol) ------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Position of this reader and its packer buffer."""
        position = dict(self._position or {"epoch": 0, "cursor": 0, "ordinal": 0})
        if self._packer is not None:
            position["packer"] = self._packer.state_dict()
        position["config"] = self._config_record
        return to_checkpointable(position)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict` at the next ``__iter__``."""
        saved = state.get("config")
        if saved is not None:
            changed = sorted(k for k, v in self._config_record.items()
                             if saved.get(k, v) != v and k not in self.relocatable_keys)
            if changed:
                raise ValueError(f"loader state was saved with a different stream config ({changed})")
        self._resume = from_checkpointable({k: v for k, v in state.items() if k != "config"})


class SkippedRowsStamp:
    """Stamps each batch with ``skipped_rows``: rows skipped as bad input since the last batch."""

    def __init__(self, total: Callable[[], int]) -> None:
        self.total = total
        self.before = total()

    def __call__(self, batch: StreamBatch) -> None:
        now = self.total()
        batch["skipped_rows"] = now - self.before
        self.before = now


def feed_documents(packer: Packer, tokenizer: Tokenizer,
                   documents: Iterable[tuple[int, str]]) -> Iterator[None]:
    """Tokenize ``(row, text)`` documents into the packer, yielding after each one (the feed of
    :func:`loaders.packing.pack_batches` for streams without a policy)."""
    for row, text in documents:
        packer.add(encode(tokenizer, text), row)
        yield


def encode(tokenizer: Tokenizer, text: str) -> np.ndarray:
    """Token ids as an int64 array (a fast path for bytes, which need no Python loop)."""
    if isinstance(tokenizer, ByteTokenizer):
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)
    return np.asarray(tokenizer.encode(text), dtype=np.int64)
