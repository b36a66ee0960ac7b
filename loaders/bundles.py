"""Batches travel from DataLoader workers in bundles: one message per several batches.

A DataLoader moves every item from a worker to the training process as two queue messages (the
task index out, the pickled item back), each through a feeder thread and a pipe, and a
``StatefulDataLoader`` adds its bookkeeping per item. For small packed batches (16 x 128 tokens)
that per-message cost, not reading or packing, was most of the loader's CPU time. So each
worker sends a *bundle* of up to ``size`` consecutive batches of its stream
(:class:`BatchBundles`), and :class:`BundledLoader` hands the batches out one by one in exactly
the order an unbundled loader gives them: round-robin over the workers, batch by batch.

- **Order.** Bundle ``r`` of every worker still reading forms round ``r``; within a round the
  batches are interleaved (first batch of each worker, then the second, ...). A worker's last
  bundle is always shorter than ``size`` (empty if its batches ran out at a bundle boundary), so
  the workers of the next round are known without looking ahead, and the order is the unbundled
  one batch for batch.
- **State.** :meth:`BundledLoader.state_dict` is the ``StatefulDataLoader`` state as of the start
  of the current round, plus, under :data:`BUNDLE_KEY`, the bundle size, the workers of the round
  and how many batches of each were handed out. A resumed loader fetches that round again and
  skips those batches, so a checkpoint between any two batches resumes exactly. Snapshots and
  ``_steps_since_snapshot`` count bundles (:func:`loaders.elastic.reader_states` reads them).
- **Lag.** Workers run up to a round plus the prefetched bundles ahead of training. A curriculum
  stream whose decisions wait on training's published state (:mod:`loaders.shared_state`) gets
  bundles small enough that a round never waits on a step training has not reached
  (:func:`bundle_size_for`); workers then merely wait for the prefetched ones.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from torch.utils.data import IterableDataset, get_worker_info
from torchdata.stateful_dataloader import StatefulDataLoader

from curriculum.batch import StreamBatch
from loaders.packing import keep_as_is

#: Where a bundled loader's own part of its state lives.
BUNDLE_KEY = "bundles"
#: Key of a worker's dataset state once it has sent its last bundle.
ENDED_KEY = "bundles_ended"
#: Batches per bundle when nothing limits it (16 x 128 batches: ~0.5 MB a message).
DEFAULT_BUNDLE_BATCHES = 8
#: Steps of margin a bundled round keeps below the curriculum lag (Lightning fetches one batch
#: ahead, and a stage is published at the end of its step).
LAG_MARGIN_STEPS = 4

#: One worker's message: (worker id, consecutive batches of its stream).
Bundle = tuple[int, list[StreamBatch]]


def bundle_size_for(dataset: Any, num_workers: int) -> int:
    """Batches per bundle for ``dataset`` read by ``num_workers`` workers.

    :data:`DEFAULT_BUNDLE_BATCHES`, except for a stream whose decisions wait on the state
    training publishes (a ``wiring`` with a ``state_path``): there a round of bundles
    (``num_workers x size`` batches) must stay ``LAG_MARGIN_STEPS`` inside ``lag_steps``, or a
    worker would wait for a step that only the round it is filling can bring.
    """
    wiring = getattr(dataset, "wiring", None)
    if wiring is None or not getattr(wiring, "state_path", ""):
        return DEFAULT_BUNDLE_BATCHES
    room = int(wiring.lag_steps) - LAG_MARGIN_STEPS
    return max(1, min(DEFAULT_BUNDLE_BATCHES, room // max(1, num_workers)))


class BatchBundles(IterableDataset):
    """A stream's batches in bundles of ``size``, the last one shorter (maybe empty).

    Its state is the stream's (bundle boundaries are batch boundaries), plus
    :data:`ENDED_KEY` once the last bundle has gone: a worker resumed from there sends nothing,
    one resumed just before it sends the last bundle, as the interrupted run did."""

    def __init__(self, stream: IterableDataset, size: int) -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f"bundle size must be at least 1, got {size}")
        self.stream = stream
        self.size = size
        self._ended = False

    def __iter__(self) -> Iterator[Bundle]:
        if self._ended:  # resumed after the last bundle
            return
        info = get_worker_info()
        worker = info.id if info is not None else 0
        bundle: list[StreamBatch] = []
        for batch in self.stream:
            bundle.append(batch)
            if len(bundle) == self.size:
                yield worker, bundle
                bundle = []
        self._ended = True  # before the yield: a state taken right after it says so
        yield worker, bundle  # shorter than size: this worker has no more batches

    def state_dict(self) -> dict[str, Any]:
        """The stream's state (and whether the last bundle has gone)."""
        state = self.stream.state_dict()
        return {**state, ENDED_KEY: True} if self._ended else state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume the stream from :meth:`state_dict`."""
        self._ended = bool(state.get(ENDED_KEY, False))
        self.stream.load_state_dict({k: v for k, v in state.items() if k != ENDED_KEY})


def interleave(round_: list[Bundle]) -> Iterator[tuple[int, StreamBatch]]:
    """``(worker, batch)`` of a round in the unbundled order: batch ``j`` of every worker that
    has one, for ``j`` = 0, 1, ..."""
    for j in range(max((len(b) for _, b in round_), default=0)):
        for worker, batches in round_:
            if j < len(batches):
                yield worker, batches[j]


class BundledLoader(StatefulDataLoader):
    """A ``StatefulDataLoader`` whose workers send bundles of batches and which hands out the
    batches one by one, in the unbundled order, resumable between any two of them."""

    def __init__(self, stream: IterableDataset, bundle_batches: int, num_workers: int,
                 prefetch_bundles: int = 2, snapshot_every_n_steps: int = 16) -> None:
        if num_workers < 1:
            raise ValueError("a bundled loader needs worker processes (num_workers >= 1)")
        self.stream = stream
        super().__init__(BatchBundles(stream, bundle_batches), batch_size=None,
                         num_workers=num_workers, collate_fn=keep_as_is,
                         prefetch_factor=prefetch_bundles, persistent_workers=False,
                         # Snapshots count bundles: about as many batches apart as asked.
                         snapshot_every_n_steps=max(1, math.ceil(snapshot_every_n_steps
                                                                 / bundle_batches)))
        self._round_start: dict[str, Any] | None = None
        self._round: dict[str, Any] = {}
        self._resume: dict[str, Any] | None = None

    @property
    def bundle_batches(self) -> int:
        """Batches per bundle."""
        return self.dataset.size

    # -- iteration ----------------------------------------------------------------------------
    def __iter__(self) -> Iterator[StreamBatch]:
        return self._batches(super().__iter__())

    def _fetch_round(self, bundles: Iterator[Bundle], workers: list[int]) -> list[Bundle] | None:
        """One bundle of each of ``workers``, in worker order (``None``: no data left)."""
        round_: list[Bundle] = []
        for expected in workers:
            item = next(bundles, None)
            if item is None:
                if not round_:
                    return None
                raise RuntimeError(f"bundled loader: worker {expected} ended without its last "
                                   "(short) bundle")
            if item[0] != expected:
                raise RuntimeError(f"bundled loader: got a bundle of worker {item[0]} where "
                                   f"worker {expected}'s was due")
            round_.append(item)
        return round_

    def _batches(self, bundles: Iterator[Bundle]) -> Iterator[StreamBatch]:
        resume, self._resume = self._resume, None
        workers = list(resume["workers"]) if resume else list(range(self.num_workers))
        skip = sum(resume["taken"]) if resume else 0
        size = self.bundle_batches
        while workers:
            self._round_start = StatefulDataLoader.state_dict(self)
            self._round = {"workers": workers, "taken": [0] * self.num_workers}
            round_ = self._fetch_round(bundles, workers)
            if round_ is None:
                break
            taken = self._round["taken"]
            for worker, batch in interleave(round_):
                taken[worker] += 1
                if skip:
                    skip -= 1
                    continue
                yield batch
            # A worker whose bundle is short has no more batches.
            workers = [worker for worker, batches in round_ if len(batches) == size]
        self._round_start = None
        # Reading on to the end lets the inner loader see it (its state says finished).
        for worker, batches in bundles:
            if batches:
                raise RuntimeError(f"bundled loader: worker {worker} sent batches after its "
                                   "last bundle")

    # -- checkpointing ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The inner loader's state at the start of the current round, plus the round's
        workers and the batches of each handed out (see the module docstring)."""
        if self._round_start is None:
            inner = super().state_dict()
            round_ = {"workers": list(range(self.num_workers)), "taken": [0] * self.num_workers}
            if self._resume is not None:  # loaded, not iterated yet: that state as it is
                return {**inner, BUNDLE_KEY: dict(self._resume)}
        else:
            inner, round_ = self._round_start, self._round
        return {**inner, BUNDLE_KEY: {"size": self.bundle_batches,
                                      "workers": list(round_["workers"]),
                                      "taken": list(round_["taken"])}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict` at the next ``__iter__``; a state saved by an
        unbundled ``StatefulDataLoader`` (bundles of one) loads too."""
        state = dict(state_dict)
        bundle = state.pop(BUNDLE_KEY, None)
        super().load_state_dict(state)
        if not state:
            self._resume = None
            return
        if bundle is None:  # unbundled: its next batch comes from the worker after the last
            last = int(state.get("_snapshot", {}).get("_last_yielded_worker_id", -1))
            first = (last + 1 + int(state.get("_steps_since_snapshot", 0))) % self.num_workers
            bundle = {"size": 1, "taken": [0] * self.num_workers,
                      "workers": [(first + i) % self.num_workers for i in range(self.num_workers)]}
        if len(bundle["taken"]) != self.num_workers:
            raise ValueError(f"loader state was saved with {len(bundle['taken'])} worker(s); "
                             f"this loader has {self.num_workers}")
        # The saved steps count bundles of the saved size: keep reading bundles of that size.
        self.dataset.size = int(bundle["size"])
        self._resume = {"size": int(bundle["size"]), "workers": [int(w) for w in bundle["workers"]],
                        "taken": [int(t) for t in bundle["taken"]]}
