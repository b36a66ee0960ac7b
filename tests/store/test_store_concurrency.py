"""Worker processes read while the writer updates: no crash, no torn rows.

The writer only ever records scores with two invariants that any consistent read preserves:
behavior 0 always gets the score 1.0, so its mean is exactly 1.0 whatever the count (a read that
mixed a new sum with an old count would not be); behavior j >= 1 gets ``j * w`` for a random
``w`` shared by the row's behaviors in that update, so ``mean_j / j`` is equal across j (a read
that mixed behaviors from before and after an update would not be). kNN estimates are weighted
means of such rows, so they keep both invariants too.
"""

from __future__ import annotations

import multiprocessing
import time

import numpy as np

from curriculum.store import BehaviorStore, StoreReader

NUM_READERS = 3


def _check(values: np.ndarray, measured: np.ndarray) -> int:
    """Number of rows that break the invariants (see the module docstring)."""
    ratios = values[:, 1:] / np.arange(1, values.shape[1])
    all_zero = ~values.any(axis=1)  # unmeasured, not estimated yet
    first_ok = np.isclose(values[:, 0], 1.0, rtol=1e-5, atol=0) | all_zero
    ratios_ok = np.isclose(ratios, ratios[:, :1], rtol=1e-4, atol=1e-6).all(axis=1)
    measured_ok = measured.all(axis=1) | ~measured.any(axis=1)
    exact_ok = ~measured[:, 0] | (values[:, 0] == 1.0)
    return int((~(first_ok & ratios_ok & measured_ok & exact_ok)).sum())


def _reader_process(reader: StoreReader, ready, stop, results) -> None:  # noqa: ANN001
    rng = np.random.default_rng()
    batches = torn = measured_seen = 0
    ready.release()
    deadline = time.monotonic() + 60
    while not stop.is_set() and time.monotonic() < deadline:
        rows = rng.integers(0, reader.num_rows, size=256)
        values, measured = reader.attribution_and_measured(rows)
        torn += _check(values, measured)
        measured_seen += int(measured.any(axis=1).sum())
        reader.affinity(rows)
        batches += 1
    results.put((batches, torn, measured_seen))


def test_readers_never_see_torn_rows(fresh_store: BehaviorStore) -> None:
    store = fresh_store
    num_behaviors = len(store.behaviors)
    context = multiprocessing.get_context("spawn")  # as DataLoader workers may be started
    ready = context.Semaphore(0)
    stop = context.Event()
    results = context.Queue()
    readers = [
        context.Process(target=_reader_process, args=(store.reader(), ready, stop, results))
        for _ in range(NUM_READERS)
    ]
    for process in readers:
        process.start()
    for _ in readers:
        assert ready.acquire(timeout=60), "a reader process did not start"

    rng = np.random.default_rng(0)
    multipliers = np.arange(num_behaviors, dtype=np.float64)
    multipliers[0] = 0.0
    started = time.monotonic()
    updates = 0
    while time.monotonic() - started < 2.5:
        rows = rng.integers(0, store.num_rows // 2, size=256)  # duplicates included
        weights = rng.uniform(0.5, 2.0, size=(256, 1))
        scores = weights * multipliers
        scores[:, 0] = 1.0
        store.record_attribution(rows, scores)
        updates += 1
        if updates % 40 == 0:
            store.refresh_estimates(rows=np.arange(store.num_rows // 2, store.num_rows))
    stop.set()
    outcomes = [results.get(timeout=60) for _ in readers]
    for process in readers:
        process.join(timeout=60)
        assert process.exitcode == 0

    assert updates > 20
    for batches, torn, measured_seen in outcomes:
        assert batches > 10 and measured_seen > 0
        assert torn == 0, f"{torn} torn rows in {batches} batches"
    # And the final state satisfies the invariants everywhere.
    everything = np.arange(store.num_rows)
    assert _check(*store.attribution_and_measured(everything)) == 0
