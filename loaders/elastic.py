"""Elastic resume: loader state that knows its layout, and resuming it on another one.

A checkpoint's loader record (:func:`loader_record`, under :data:`RECORD_KEY`) carries a format
version, the layout it was saved under (ranks x DataLoader workers, like torchtitan's
``dp_world_size``), the loader step, and the ``StatefulDataLoader`` state of *every* rank
(gathered over the process group), so that a resume can always tell what it resumes from:

- **same layout**: each rank loads its own rank's loader state — exact, as before (and on several
  ranks each rank now gets its own state, not rank 0's);
- **another layout**: :func:`resume_states` recovers the exact state of every old reader (a
  ``StatefulDataLoader`` snapshot is replayed forward by the batches since it, in this process,
  as torchdata would in the worker) and re-partitions the pending state over the new readers
  (:mod:`loaders.repartition`). The data loader then starts fresh; every reader continues from
  its re-partitioned state. A warning line says that this happened and what moved.

What is not exact across a layout change: which reader reads which pending row and in what order,
so batch contents differ from an uninterrupted run, and pending documents are decided under the
curriculum state of the step at which their new reader reaches them. What holds: every row of
the epoch is consumed exactly once (``curriculum ledger --check`` proves it).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loaders.bundles import BUNDLE_KEY, ENDED_KEY
from loaders.checkpointable import from_checkpointable
from loaders.repartition import repartition
from loaders.world import World

if TYPE_CHECKING:
    from loaders.curriculum_stream import CurriculumStream

log = logging.getLogger("curriculum.elastic")

RECORD_KEY = "curriculum_loader"
"""Where the loader record lives in a Lightning checkpoint."""
RECORD_VERSION = 1


@dataclass(frozen=True)
class LoaderLayout:
    """The readers a loader state was saved under."""

    world_size: int
    """Ranks."""
    num_workers: int
    """DataLoader workers per rank (0: the main process reads)."""

    @property
    def world(self) -> World:
        """A :class:`World` with this layout (rank and worker 0)."""
        return World(0, self.world_size, 0, max(1, self.num_workers))

    def describe(self) -> str:
        """``2 rank(s) x 1 worker(s)``."""
        return f"{self.world_size} rank(s) x {self.num_workers} worker(s)"


def gather_objects(value: Any) -> list[Any]:
    """``value`` of every rank, in rank order (``[value]`` outside a process group)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def loader_record(layout: LoaderLayout, step: int, rank_state: Any) -> dict[str, Any]:
    """The checkpoint's loader record; a collective: every rank must call it."""
    return {"version": RECORD_VERSION, "layout": dataclasses.asdict(layout), "step": int(step),
            "ranks": gather_objects(rank_state)}


def record_layout(record: dict[str, Any]) -> LoaderLayout:
    """The layout a record was saved under; refuses records of a newer format."""
    version = int(record.get("version", 0))
    if version > RECORD_VERSION:
        raise ValueError(f"loader state has format version {version}; this version of the "
                         f"loader reads up to {RECORD_VERSION}")
    layout = record["layout"]
    return LoaderLayout(int(layout["world_size"]), int(layout["num_workers"]))


# -- exact reader states out of StatefulDataLoader states ------------------------------------------
def reader_states(loader_state: dict[str, Any]) -> list[tuple[dict[str, Any], int]]:
    """``(dataset state, batches yielded since it)`` per worker of one rank's loader state.

    With workers, the state is torchdata's last snapshot plus ``_steps_since_snapshot`` items
    taken round-robin from the worker after ``_last_yielded_worker_id``; without, the dataset
    state itself (exact). Items of a :class:`~loaders.bundles.BundledLoader` are bundles of
    ``size`` batches, and its state adds the batches of each worker handed out from the round
    after them. (A worker's last bundle is shorter: the replay ends where its stream does.)"""
    state = from_checkpointable(loader_state)
    if "_snapshot" not in state:
        return [(state["dataset_state"] or {}, 0)]
    snapshot = state["_snapshot"]
    workers = snapshot["_worker_snapshots"]
    count = len(workers)
    bundle = state.get(BUNDLE_KEY) or {"size": 1, "taken": [0] * count}
    first = (int(snapshot["_last_yielded_worker_id"]) + 1) % count
    since = int(state["_steps_since_snapshot"])
    out = []
    for worker in range(count):
        items = sum(1 for i in range(since) if (first + i) % count == worker)
        batches = items * int(bundle["size"]) + int(bundle["taken"][worker])
        dataset_state = workers[f"worker_{worker}"]["dataset_state"] or {}
        out.append(({k: v for k, v in dataset_state.items() if k != ENDED_KEY}, batches))
    return out


def replayed_state(stream: CurriculumStream, world: World, state: dict[str, Any],
                   batches: int) -> dict[str, Any]:
    """The state of ``world``'s reader after ``batches`` more batches from ``state`` (replayed
    here, deterministically, with the spool kept in memory)."""
    # The replay decides as the old run did: under its lag (the lag grows with the workers, so
    # the new layout's may differ), with the spool in memory.
    saved_lag = (state.get("config") or {}).get("lag_steps", stream.wiring.lag_steps)
    replica = type(stream)(stream.manifest, stream.config, stream.curriculum,
                           world.rank, world.world_size,
                           wiring=dataclasses.replace(stream.wiring, spool_dir="",
                                                      lag_steps=int(saved_lag)))
    replica.load_state_dict(state)  # refuses a state saved under another stream config
    if batches == 0:
        return {k: v for k, v in state.items() if k != "config"}
    produced = replica.iterate(world)
    for _ in range(batches):
        if next(produced, None) is None:  # a short last bundle: the stream has ended
            break
    replayed = replica.state_dict()
    produced.close()
    return {k: v for k, v in replayed.items() if k != "config"}


def publish_snapshots(stream: CurriculumStream, checkpoint: dict[str, Any]) -> None:
    """Publish the curriculum states the checkpoint holds, so a replay decides as the original
    run did (the curriculum callback publishes the same ones again when fitting starts)."""
    if not stream.wiring.state_path:
        return
    from loaders.shared_state import SharedCurriculumState
    from policies.state import CurriculumState

    shared = SharedCurriculumState(stream.wiring.state_path)
    for callback_state in checkpoint.get("callbacks", {}).values():
        for record in (callback_state or {}).get("snapshots", []):
            shared.publish(CurriculumState(**record))
    shared.close()


def resume_states(stream: CurriculumStream, record: dict[str, Any], layout: LoaderLayout,
                  rank: int, checkpoint: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """This rank's reader states (by worker) re-partitioned from ``record``'s layout to
    ``layout``; logs one line saying so."""
    from loaders.curriculum_stream import CurriculumStream

    if not isinstance(stream, CurriculumStream):
        raise ValueError("resuming on another layout needs a curriculum stream (a policy and a "
                         "store); a plain text stream resumes on its own layout only")
    old = record_layout(record)
    step = int(record["step"])
    per_rank = [reader_states(state[0] if isinstance(state, list) else state)
                for state in record["ranks"]]
    if any(batches for states in per_rank for _, batches in states):
        publish_snapshots(stream, checkpoint)
    old_world = old.world
    exact = [replayed_state(stream, World(r, old.world_size, w, old_world.num_workers), s, n)
             for r, states in enumerate(per_rank) for w, (s, n) in enumerate(states)]
    new_world = layout.world
    states = repartition(stream, old_world, exact, new_world, step)
    mine = {w: states[rank * new_world.num_workers + w] for w in range(new_world.num_workers)}
    if rank == 0:
        remove_gone_spools(stream, old, layout)
    moved = sum(len(s["window"]["rows"]) + len(s["spool"]["pending"]["row"]) for s in states)
    log.warning("elastic resume at step %d: loader state saved on %s, resuming on %s; "
                "re-partitioned the pending shard ranges, packer buffers and %d window/spool "
                "documents of %d reader(s) over %d reader(s)", step, old.describe(),
                layout.describe(), moved, len(exact), len(states))
    return mine


def remove_gone_spools(stream: CurriculumStream, old: LoaderLayout, new: LoaderLayout) -> None:
    """Remove the spool files of old readers the new layout does not have: their entries now
    live in the new readers' spools (a stale file would mislead whoever inspects the spools)."""
    if not stream.wiring.spool_dir:
        return
    from pathlib import Path

    keep = {(r, w) for r in range(new.world_size) for w in range(max(1, new.num_workers))}
    for r in range(old.world_size):
        for w in range(max(1, old.num_workers)):
            if (r, w) not in keep:
                path = Path(stream.wiring.spool_dir) / f"rank-{r:05d}-worker-{w:02d}.bin"
                path.unlink(missing_ok=True)
