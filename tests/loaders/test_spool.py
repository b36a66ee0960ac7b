"""The defer spool releases exactly the entries that are due, oldest first, across checkpoints."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from loaders.spool import SPOOL_DTYPE, DeferSpool

_ADD = st.tuples(st.just("add"), st.integers(0, 10**6), st.integers(0, 3),
                 st.one_of(st.none(), st.integers(0, 4)), st.one_of(st.none(), st.integers(0, 60)))
_TAKE = st.tuples(st.just("take"), st.integers(0, 5), st.integers(0, 70))
_RESUME = st.tuples(st.just("resume"))


@settings(max_examples=200, deadline=None, database=None)
@given(operations=st.lists(st.one_of(_ADD, _ADD, _TAKE, _RESUME), max_size=60),
       on_disk=st.booleans())
def test_take_due_releases_what_is_due_oldest_first(operations: list[tuple], on_disk: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spool.bin" if on_disk else None
        spool = DeferSpool(path)
        model: list[tuple[int, int, int | None, int | None]] = []  # what is pending, in order
        for operation in operations:
            if operation[0] == "add":
                _, row, epoch, stage, step = operation
                spool.add(row, epoch, stage, step)
                model.append((row, epoch, stage, step))
            elif operation[0] == "take":
                _, stage, step = operation

                def due(entry: tuple, stage: int = stage, step: int = step) -> bool:
                    return ((entry[2] is not None and entry[2] <= stage)
                            or (entry[3] is not None and entry[3] <= step))

                assert spool.take_due(stage, step) == [(r, e) for r, e, *_ in model if due((r, e, *_))]
                model = [entry for entry in model if not due(entry)]
            else:  # a checkpoint and a resumed reader
                state = spool.state_dict()
                spool = DeferSpool(path)
                spool.load_state_dict(state)
            assert len(spool) == len(model)
        spool.take_due(-1, -1)  # writes what was appended since the last batch
        if path is not None:
            on_file = np.frombuffer(path.read_bytes(), dtype=SPOOL_DTYPE)
            assert on_file["row"].tolist() == [row for row, *_ in model]
