"""The priority window releases by priority, breaks ties by the seeded hash, bounds waiting, and
continues identically after a checkpoint (in either state form)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from loaders.window import PriorityWindow, WindowItem, tie_break


def _tokens(row: int) -> np.ndarray:
    return np.full(3, row % 250, dtype=np.int64)


def _reference_order(pushes: list[tuple[int, int, float]], size: int, max_age: int,
                     seed: int) -> list[int]:
    """Rows in release order, by the window's definition (no heap)."""
    waiting: dict[int, tuple[int, int, float]] = {}
    released = []

    def release(next_seq: int) -> None:
        oldest = min(waiting)
        if next_seq - oldest > max_age:
            seq = oldest
        else:
            seq = min(waiting, key=lambda s: (-waiting[s][2],
                                              tie_break(seed, waiting[s][1], waiting[s][0]), s))
        released.append(waiting.pop(seq)[0])

    for seq, push in enumerate(pushes):
        waiting[seq] = push
        if len(waiting) > size:
            release(seq + 1)
    while waiting:
        release(len(pushes))
    return released


@settings(max_examples=150, deadline=None, database=None)
@given(pushes=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 2),
                                 st.sampled_from([0.0, 1.0, 1.0, 2.0, -1.0])), max_size=60),
       size=st.integers(1, 8), max_age=st.integers(1, 20), seed=st.integers(0, 3),
       checkpoint_at=st.integers(0, 60), legacy_state=st.booleans())
def test_release_order_and_resume(pushes: list[tuple[int, int, float]], size: int, max_age: int,
                                  seed: int, checkpoint_at: int, legacy_state: bool) -> None:
    window = PriorityWindow(size, max_age, seed)
    released = []
    for index, (row, epoch, priority) in enumerate(pushes):
        if index == checkpoint_at:
            state = window.state_dict()
            if legacy_state:  # how checkpoints written before the array form held the items
                state = {"next_seq": state["next_seq"], "items": list(zip(
                    *(state[k].tolist() for k in ("rows", "epochs", "weights", "priorities", "seqs")),
                    strict=True))}
            window = PriorityWindow(size, max_age, seed)
            window.load_state_dict(state, _tokens)
        out = window.push(WindowItem(row, epoch, _tokens(row), 1.0 + row, priority))
        if out is not None:
            assert out.weight == 1.0 + out.row and (out.tokens == _tokens(out.row)).all()
            released.append(out.row)
    released += [item.row for item in window.drain()]
    assert released == _reference_order(pushes, size, max_age, seed)
