"""A small simulated training run that produces a consistent ledger, and ways to spoil it.

The simulation plays the loader's rules: each reader (rank, worker) reads its share of every
epoch (rows with ``row % num_readers == reader``) in a shuffled order, decides each document
(emit, drop, skip or defer), occasionally releases rows from its rank's spool (of any earlier
epoch) and decides them again in the same batch, and records EPOCH_END when its share is done.
Each rank's trainer consumes its workers' batches round-robin, one per step.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from curriculum.ledger import Fate, FateRecorder, LedgerWriter, write_ledger_meta

#: (event, row, epoch, weight, reason)
Event = tuple[int, int, int, float, str]


@dataclass
class Batch:
    """The events one worker attached to one batch, consumed by its rank at ``step``."""

    step: int
    worker: int
    events: list[Event]


@dataclass
class SimulatedRun:
    """What the simulation recorded, and the final fate of each (epoch, row) it expects."""

    num_rows: int
    world_size: int
    num_workers: int
    batches: dict[int, list[Batch]]
    """Per rank, in consumption order."""
    final: dict[tuple[int, int], int] = field(default_factory=dict)
    """(epoch, row) -> last event."""

    def find(self, event: int, epoch: int | None = None,
             only_event_of_row: bool = False) -> tuple[int, int, int, Event]:
        """(rank, batch index, event index, event) of the first matching event."""
        counts: dict[tuple[int, int], int] = {}
        for batches in self.batches.values():
            for batch in batches:
                for e in batch.events:
                    counts[(e[2], e[1])] = counts.get((e[2], e[1]), 0) + 1
        for rank, batches in self.batches.items():
            for b, batch in enumerate(batches):
                for i, e in enumerate(batch.events):
                    if e[0] == event and (epoch is None or e[2] == epoch) and (
                            not only_event_of_row or counts[(e[2], e[1])] == 1):
                        return rank, b, i, e
        raise LookupError(f"no {Fate(event).name} in the simulated run")


def _reader_queues(rng: random.Random, num_rows: int, world_size: int, num_workers: int,
                   last_epoch: int, stop_in_epoch: int | None) -> dict[tuple[int, int], list]:
    """Per (rank, worker): its (epoch, row) items in stream order, -1 rows marking epoch ends."""
    num_readers = world_size * num_workers
    queues: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for rank in range(world_size):
        for worker in range(num_workers):
            reader = rank * num_workers + worker
            queue = []
            for epoch in range(last_epoch):
                share = [row for row in range(num_rows) if row % num_readers == reader]
                rng.shuffle(share)
                if epoch == stop_in_epoch:
                    share = share[: len(share) // 2]
                queue.extend((epoch, row) for row in share)
                if epoch != stop_in_epoch:
                    queue.append((epoch, -1))  # EPOCH_END marker
            queues[(rank, worker)] = queue
    return queues


def simulate(num_rows: int = 400, world_size: int = 2, num_workers: int = 2, num_epochs: int = 2,
             stop_in_epoch: int | None = None, docs_per_batch: int = 7, seed: int = 0) -> SimulatedRun:
    """Simulate a run through ``num_epochs`` epochs; with ``stop_in_epoch``, stop halfway through
    that epoch (after the earlier ones are complete)."""
    rng = random.Random(seed)
    last_epoch = num_epochs if stop_in_epoch is None else stop_in_epoch + 1
    run = SimulatedRun(num_rows, world_size, num_workers, {rank: [] for rank in range(world_size)})
    queues = _reader_queues(rng, num_rows, world_size, num_workers, last_epoch, stop_in_epoch)
    spools: dict[int, list[tuple[int, int]]] = {rank: [] for rank in range(world_size)}

    def decide(events: list[Event], rank: int, epoch: int, row: int) -> None:
        draw = rng.random()
        if draw < 0.6:
            events.append((Fate.EMIT, row, epoch, round(rng.uniform(0.5, 2.0), 2), ""))
        elif draw < 0.7:
            events.append((Fate.DROP, row, epoch, 0.0, rng.choice(["filter: deception>=0.8",
                                                                   "filter: toxicity>=0.9"])))
        elif draw < 0.75:
            events.append((Fate.SKIP, row, epoch, 0.0, rng.choice(["not UTF-8", "empty text"])))
        else:
            events.append((Fate.DEFER, row, epoch, 0.0, ""))
            spools[rank].append((epoch, row))
            return
        run.final[(epoch, row)] = events[-1][0]

    step = 0
    while any(queues.values()):
        for rank in range(world_size):
            worker = step % num_workers
            queue = queues[(rank, worker)]
            if not queue:
                continue
            events: list[Event] = []
            for _ in range(docs_per_batch):
                if not queue:
                    break
                epoch, row = queue.pop(0)
                if row < 0:
                    events.append((Fate.EPOCH_END, -1, epoch, 0.0, ""))
                    continue
                run.final[(epoch, row)] = Fate.DEFER
                decide(events, rank, epoch, row)
            if spools[rank] and rng.random() < 0.5:
                spool_epoch, spool_row = spools[rank].pop(rng.randrange(len(spools[rank])))
                events.append((Fate.RELEASE, spool_row, spool_epoch, 0.0, ""))
                run.final[(spool_epoch, spool_row)] = Fate.DEFER
                decide(events, rank, spool_epoch, spool_row)
            run.batches[rank].append(Batch(step, worker, events))
        step += 1
    return run


def write_run(run_dir: Path, run: SimulatedRun) -> None:
    """Write the simulated run's ledger the way the loader and trainer would."""
    write_ledger_meta(run_dir, world_size=run.world_size, num_workers=run.num_workers,
                      num_rows=run.num_rows, manifest="simulated")
    for rank, batches in run.batches.items():
        recorders = [FateRecorder(worker) for worker in range(run.num_workers)]
        with LedgerWriter(run_dir, rank) as writer:
            for batch in batches:
                recorder = recorders[batch.worker]
                for event, row, epoch, weight, reason in batch.events:
                    recorder.add(event, row, epoch, weight, reason)
                writer.append(recorder.take(), batch.step)
