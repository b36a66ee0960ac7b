"""Re-partition the pending state of a set of readers over a new set of readers (elastic resume).

A reader's *pending state* at a checkpoint is what it has not finished yet:

- unread **shard ranges** of the epochs it has not ended (its position in its share of the
  shards, or, for a reader that is itself resuming a re-partition, what is left of its plan);
- documents in its **packer** buffer (already emitted in the ledger), its **priority window**
  (decided, not yet emitted) and its **defer spool** (deferred, waiting for release).

:func:`repartition` turns the exact states of the old readers (in old global-reader order) into
one resume state per new reader, deterministically (a function of the states and the two
layouts only, so every new rank computes the same partition):

- every unread range is cut into ``num_new`` contiguous pieces by ordinal, and new reader ``g``
  reads piece ``g`` of every range (no row is read twice, each new reader gets ~1/n of each range);
- packer buffers move whole (old reader ``j`` to new reader ``j % num_new``: a document cut at a
  batch boundary stays in one buffer), window and spool entries are dealt round-robin;
- every new reader records EPOCH_END for every epoch some old reader had not ended, then
  continues with the new layout's ordinary share from the next epoch on.

A new reader follows its plan with :func:`iter_plan_items`; positions inside a plan carry
``"plan": 1`` and index the plan's ranges, so a checkpoint taken during a plan resumes exactly (or
is re-partitioned again).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from curriculum.shards.documents import Skipped, iter_documents
from loaders.world import World

if TYPE_CHECKING:
    from loaders.stream import PackedTextStream

#: One unread shard range: rows ``first_row(shard) + ordinal`` for ``start <= ordinal < stop``
#: whose row satisfies ``row % mod == residue`` (``mod`` 1: every row).
Range = tuple[int, int, int, int, int, int]  # epoch, shard, start, stop, mod, residue
_SPOOL_FIELDS = ("row", "epoch", "until_stage", "until_step")
_WINDOW_FIELDS = ("rows", "epochs", "weights", "priorities")


@dataclass
class ReaderPending:
    """What one old reader has not finished: explicit ranges of its open epochs."""

    world: World
    first_open_epoch: int
    """The first epoch this reader has not recorded EPOCH_END for."""
    last_explicit_epoch: int
    """Epochs after this one are still wholly unread by the reader (its ordinary share)."""
    ranges: list[Range] = field(default_factory=list)


def share_ranges(stream: PackedTextStream, world: World, epoch: int, cursor: int = 0,
                 ordinal: int = 0) -> list[Range]:
    """The ordinary share of ``world``'s reader in ``epoch``, from (cursor, ordinal) on."""
    shards, split_rows = stream._reader_shards(world, epoch)
    mod, residue = (world.num_readers, world.global_worker) if split_rows else (1, 0)
    ranges = []
    for position in range(cursor, len(shards)):
        shard = shards[position]
        start = ordinal if position == cursor else 0
        count = int(stream.manifest.counts[shard])
        if start < count:
            ranges.append((epoch, shard, start, count, mod, residue))
    return ranges


def plan_ranges(plan: dict[str, Any]) -> list[Range]:
    """A plan's ranges as tuples."""
    return [tuple(r) for r in np.asarray(plan["ranges"], np.int64).reshape(-1, 6).tolist()]


def reader_pending(stream: PackedTextStream, world: World, state: dict[str, Any]) -> ReaderPending:
    """The pending ranges of one reader from its exact checkpointed state."""
    epoch, cursor, ordinal = (int(state.get(k, 0)) for k in ("epoch", "cursor", "ordinal"))
    if state.get("plan"):
        plan = state["elastic_plan"]
        ranges = plan_ranges(plan)[cursor:]
        if ranges and ordinal:
            e, shard, start, stop, mod, residue = ranges[0]
            ranges[0] = (e, shard, max(start, ordinal), stop, mod, residue)
        return ReaderPending(world, epoch, int(plan["last_epoch"]),
                             [r for r in ranges if r[2] < r[3]])
    limit = stream.config.num_epochs
    if limit is not None and epoch >= limit:
        return ReaderPending(world, epoch, epoch - 1)
    return ReaderPending(world, epoch, epoch, share_ranges(stream, world, epoch, cursor, ordinal))


def open_epochs(pendings: list[ReaderPending], num_epochs: int | None) -> range:
    """Epochs some old reader has not ended (empty when every reader is done)."""
    opened = [p for p in pendings if p.first_open_epoch <= p.last_explicit_epoch]
    if not opened:
        return range(0)
    last = max(p.last_explicit_epoch for p in pendings)
    if num_epochs is not None:
        last = min(last, num_epochs - 1)
    return range(min(p.first_open_epoch for p in opened), last + 1)


def ranges_of_epoch(stream: PackedTextStream, pending: ReaderPending, epoch: int) -> list[Range]:
    """What ``pending``'s reader has left of ``epoch``."""
    if epoch < pending.first_open_epoch:
        return []
    if epoch > pending.last_explicit_epoch:
        return share_ranges(stream, pending.world, epoch)
    return [r for r in pending.ranges if r[0] == epoch]


def split_range(piece: Range, parts: int) -> list[Range]:
    """``piece`` cut into ``parts`` contiguous pieces by ordinal (some possibly empty)."""
    epoch, shard, start, stop, mod, residue = piece
    length = stop - start
    bounds = [start + length * g // parts for g in range(parts + 1)]
    return [(epoch, shard, bounds[g], bounds[g + 1], mod, residue) for g in range(parts)]


def deal(items: list[Any], parts: int) -> list[list[Any]]:
    """Round-robin: item ``i`` to part ``i % parts``."""
    return [items[g::parts] for g in range(parts)]


def merge_packers(packers: list[dict[str, Any]]) -> dict[str, Any]:
    """Several packer buffers as one, in order (documents stay whole and in stream order)."""
    def joined(name: str, dtype: Any) -> np.ndarray:
        arrays = [np.asarray(p[name], dtype) for p in packers]
        return np.concatenate(arrays) if arrays else np.zeros(0, dtype)

    return {"tokens": joined("tokens", np.int32), "rows": joined("rows", np.int32),
            "weights": joined("weights", np.float32),
            "pending": [entry for p in packers for entry in p.get("pending", [])]}


def window_entries(state: dict[str, Any]) -> list[tuple]:
    """(row, epoch, weight, priority) of a saved window, in arrival order."""
    window = state.get("window")
    if not window:
        return []
    return list(zip(*(np.asarray(window[k]).tolist() for k in _WINDOW_FIELDS), strict=True))


def spool_entries(state: dict[str, Any]) -> list[tuple]:
    """(row, epoch, until_stage, until_step) of a saved spool, oldest first."""
    spool = state.get("spool")
    if not spool:
        return []
    pending = spool["pending"]
    return list(zip(*(np.asarray(pending[k]).tolist() for k in _SPOOL_FIELDS), strict=True))


def window_state(entries: list[tuple]) -> dict[str, Any]:
    """A window state dict holding ``entries`` in arrival order."""
    columns = list(zip(*entries, strict=True)) if entries else [[]] * 4
    return {"next_seq": len(entries),
            "rows": np.array(columns[0], np.int64), "epochs": np.array(columns[1], np.int64),
            "weights": np.array(columns[2], np.float64),
            "priorities": np.array(columns[3], np.float64),
            "seqs": np.arange(len(entries), dtype=np.int64)}


def spool_state(entries: list[tuple]) -> dict[str, Any]:
    """A spool state dict holding ``entries``."""
    columns = list(zip(*entries, strict=True)) if entries else [[]] * 4
    dtypes = (np.int64, np.uint32, np.int32, np.int64)
    return {"pending": {name: np.array(column, dtype)
                        for name, column, dtype in zip(_SPOOL_FIELDS, columns, dtypes, strict=True)}}


def repartition(stream: PackedTextStream, old_world: World, old_states: list[dict[str, Any]],
                new_world: World, step: int) -> list[dict[str, Any]]:
    """One resume state per reader of ``new_world``'s layout, from the exact states of every
    reader of ``old_world``'s layout (index: global reader), taken at loader step ``step``.

    ``old_world`` and ``new_world`` give the layouts (their rank and worker are ignored)."""
    old_readers = [World(g // old_world.num_workers, old_world.world_size,
                         g % old_world.num_workers, old_world.num_workers)
                   for g in range(old_world.num_readers)]
    if len(old_states) != len(old_readers):
        raise ValueError(f"loader state holds {len(old_states)} reader states, its layout "
                         f"({old_world.world_size} rank(s) x {old_world.num_workers} worker(s)) "
                         f"has {len(old_readers)}")
    parts = new_world.num_readers
    pendings = [reader_pending(stream, w, s) for w, s in zip(old_readers, old_states, strict=True)]
    epochs = open_epochs(pendings, stream.config.num_epochs)
    pieces: list[list[Range]] = [[] for _ in range(parts)]
    for epoch in epochs:
        for pending in pendings:
            for whole in ranges_of_epoch(stream, pending, epoch):
                for g, piece in enumerate(split_range(whole, parts)):
                    if piece[2] < piece[3]:
                        pieces[g].append(piece)
    packers = [[s["packer"] for j, s in enumerate(old_states) if j % parts == g and "packer" in s]
               for g in range(parts)]
    windows = deal([e for s in old_states for e in window_entries(s)], parts)
    spools = deal([e for s in old_states for e in spool_entries(s)], parts)
    done_through = max(p.first_open_epoch for p in pendings)
    states = []
    for g in range(parts):
        if epochs:
            position = {"epoch": epochs.start, "cursor": 0, "ordinal": 0, "plan": 1,
                        "elastic_plan": {"ranges": np.array(pieces[g], np.int64).reshape(-1, 6),
                                         "last_epoch": epochs.stop - 1}}
        else:
            position = {"epoch": done_through, "cursor": 0, "ordinal": 0}
        states.append({**position, "packer": merge_packers(packers[g]),
                       "window": window_state(windows[g]), "spool": spool_state(spools[g]),
                       "batches": 0, "step_offset": int(step), "chunk_state": None,
                       "chunk_left": 0})
    return states


def iter_plan_items(stream: PackedTextStream, world: World, plan: dict[str, Any],
                    position: dict[str, Any]) -> Iterator[tuple[int, dict[str, int], Any]]:
    """A new reader's items along its plan from ``position``, then its ordinary share from the
    epoch after the plan's last (the same items :meth:`PackedTextStream.iter_items` yields)."""
    from loaders.stream import EpochEnd

    ranges, last_epoch = plan_ranges(plan), int(plan["last_epoch"])
    epoch, cursor, ordinal = (int(position.get(k, 0)) for k in ("epoch", "cursor", "ordinal"))
    manifest, index = stream.manifest, cursor
    for current in range(epoch, last_epoch + 1):
        while index < len(ranges) and ranges[index][0] == current:
            _, shard, start, stop, mod, residue = ranges[index]
            first = max(start, ordinal) if index == cursor else start
            first_row = int(manifest.first_rows[shard])
            if first < stop:
                path = manifest.shard_paths[shard]
                for item in iter_documents(path, first_row, stop, first,
                                           int(manifest.offsets_bytes[first_row + first]),
                                           stream.config.text_field):
                    if mod > 1 and item.row % mod != residue:
                        continue
                    if isinstance(item, Skipped):
                        stream.skips.add(item, path)
                    yield current, {"epoch": current, "cursor": index,
                                    "ordinal": item.row - first_row + 1, "plan": 1}, item
            index += 1
        yield current, {"epoch": current + 1, "cursor": index, "ordinal": 0, "plan": 1}, \
            EpochEnd(current)
    stream._resume = {"epoch": last_epoch + 1, "cursor": 0, "ordinal": 0}
    yield from stream.iter_items(world)
