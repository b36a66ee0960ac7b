"""The shared curriculum state's seqlock: a reader waits out a writer that was descheduled in
the middle of a write (a loaded 2-core machine), instead of failing after a few microseconds of
spinning."""

from __future__ import annotations

import struct
import threading
import time
from pathlib import Path

import pytest

from loaders.shared_state import SharedCurriculumState, SharedStateError
from policies.state import CurriculumState

HEADER = struct.Struct("<QqI")  # the file's header: sequence, latest step, ring slots


def _hold_lock(path: Path, seconds: float) -> None:
    """Make the sequence odd (a write in progress) for ``seconds``, then even again."""
    with path.open("r+b") as handle:
        sequence, latest, slots = HEADER.unpack(handle.read(HEADER.size))
        handle.seek(0)
        handle.write(HEADER.pack(sequence + 1, latest, slots))
        handle.flush()
        time.sleep(seconds)
        handle.seek(0)
        handle.write(HEADER.pack(sequence + 2, latest, slots))
        handle.flush()


def test_a_reader_waits_for_a_slow_writer(tmp_path: Path) -> None:
    path = tmp_path / "state.bin"
    writer = SharedCurriculumState(path, slots=8, create=True)
    writer.publish(CurriculumState(3, 384, 0, {"probe_loss.values": 2.5}))
    reader = SharedCurriculumState(path)
    holder = threading.Thread(target=_hold_lock, args=(path, 0.2))
    holder.start()
    time.sleep(0.02)  # the lock is held now
    state = reader.read(3)
    holder.join()
    assert state is not None and state.step == 3 and state.metrics == {"probe_loss.values": 2.5}


def test_a_writer_that_never_finishes_is_reported(tmp_path: Path, monkeypatch) -> None:
    import loaders.shared_state as shared_state

    monkeypatch.setattr(shared_state, "_LOCKED_TIMEOUT_S", 0.05)
    path = tmp_path / "state.bin"
    SharedCurriculumState(path, slots=8, create=True).publish(CurriculumState(1, 1, 0, {}))
    with path.open("r+b") as handle:
        sequence, latest, slots = HEADER.unpack(handle.read(HEADER.size))
        handle.seek(0)
        handle.write(HEADER.pack(sequence + 1, latest, slots))
    with pytest.raises(SharedStateError, match="writer kept the state locked"):
        SharedCurriculumState(path).read(1)
