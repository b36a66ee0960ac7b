"""The shared curriculum state: written by the trainer, read by DataLoader workers.

A small memory-mapped file holds a ring of per-step snapshots (step, stage, tokens, metrics as
JSON) under a sequence lock: the single writer bumps the sequence number to odd, writes, bumps it
to even; readers retry while it is odd or changed under them, so they never see a torn record.

Determinism. A worker producing the batch that training will consume at step ``t`` decides under
the snapshot published at step ``t - lag_steps`` (``lag_steps`` is larger than how far the
loader can run ahead, so that snapshot is always final by then; the worker waits for it if
needed, which cannot deadlock). Every run, interrupted or not, therefore makes the same decisions
for the same batch, and stage changes take effect ``lag_steps`` after they are decided.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import time
from pathlib import Path
from typing import Any

from policies.state import CurriculumState

_HEADER = struct.Struct("<QqI")  # sequence, latest published step, ring slots
_LOCKED_TIMEOUT_S = 10.0
"""How long a reader waits on a snapshot being written before it gives up (a writer holds
it for microseconds, unless the machine deschedules it)."""
_SLOT_BYTES = 4096
_SLOT_HEADER = struct.Struct("<qI")  # step, payload length


class SharedStateError(RuntimeError):
    """The shared state could not be read or written (a message names the file)."""


class SharedCurriculumState:
    """A ring of published :class:`CurriculumState` snapshots in a memory-mapped file."""

    def __init__(self, path: str | Path, slots: int = 256, create: bool = False) -> None:
        self.path = Path(path)
        self.slots = slots
        size = _HEADER.size + slots * _SLOT_BYTES
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("wb") as handle:
                handle.write(_HEADER.pack(0, -1, slots) + bytes(size - _HEADER.size))
        self._file = None
        self._map: mmap.mmap | None = None

    def _mapped(self) -> mmap.mmap:
        if self._map is None:
            try:
                self._file = self.path.open("r+b")
                self._map = mmap.mmap(self._file.fileno(), 0)
            except OSError as error:
                raise SharedStateError(f"{self.path}: cannot map shared state ({error})") from error
            _, _, slots = _HEADER.unpack_from(self._map, 0)
            self.slots = slots
        return self._map

    def __getstate__(self) -> dict[str, Any]:
        # Workers receive the path and map the file themselves.
        return {"path": self.path, "slots": self.slots}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path, self.slots = state["path"], state["slots"]
        self._file, self._map = None, None

    # -- writer (trainer, one per node) -----------------------------------------------------
    def publish(self, state: CurriculumState) -> None:
        """Record the snapshot for ``state.step`` (steps must not go backwards)."""
        payload = json.dumps({"tokens": state.tokens, "stage": state.stage,
                              "metrics": dict(state.metrics)}).encode()
        if len(payload) > _SLOT_BYTES - _SLOT_HEADER.size:
            raise SharedStateError(f"{self.path}: state snapshot of {len(payload)} bytes too large")
        mapped = self._mapped()
        sequence, _, slots = _HEADER.unpack_from(mapped, 0)
        _HEADER.pack_into(mapped, 0, sequence + 1, state.step - 1, slots)  # odd: writing
        offset = _HEADER.size + (state.step % slots) * _SLOT_BYTES
        _SLOT_HEADER.pack_into(mapped, offset, state.step, len(payload))
        mapped[offset + _SLOT_HEADER.size: offset + _SLOT_HEADER.size + len(payload)] = payload
        _HEADER.pack_into(mapped, 0, sequence + 2, state.step, slots)

    # -- readers (workers) ------------------------------------------------------------------
    def latest_step(self) -> int:
        """The newest published step (-1 before the first)."""
        return _HEADER.unpack_from(self._mapped(), 0)[1]

    def read(self, step: int) -> CurriculumState | None:
        """The snapshot published for ``step``; ``None`` if not (or no longer) in the ring."""
        mapped = self._mapped()
        deadline = time.monotonic() + _LOCKED_TIMEOUT_S
        attempt = 0
        while True:
            attempt += 1
            if attempt > 100:
                # A writer descheduled mid-write (a loaded machine) holds the slot for a time
                # slice or more: yield the CPU rather than spin through it.
                if time.monotonic() > deadline:
                    break
                time.sleep(0.0005)
            before, latest, slots = _HEADER.unpack_from(mapped, 0)
            if before % 2:
                continue
            offset = _HEADER.size + (step % slots) * _SLOT_BYTES
            slot_step, length = _SLOT_HEADER.unpack_from(mapped, offset)
            payload = bytes(mapped[offset + _SLOT_HEADER.size: offset + _SLOT_HEADER.size + length])
            if _HEADER.unpack_from(mapped, 0)[0] != before:
                continue
            if slot_step != step or step > latest or length == 0:
                return None
            record = json.loads(payload)
            return CurriculumState(step, record["tokens"], record["stage"], record["metrics"])
        raise SharedStateError(f"{self.path}: writer kept the state locked")

    def wait_for(self, step: int, timeout_s: float = 600.0) -> CurriculumState:
        """Block until the snapshot of ``step`` is published, then return it."""
        deadline = time.monotonic() + timeout_s
        delay = 0.0005
        while True:
            state = self.read(step)
            if state is not None:
                return state
            if self.latest_step() > step:
                raise SharedStateError(f"{self.path}: snapshot of step {step} already left the ring")
            if time.monotonic() > deadline:
                raise SharedStateError(f"{self.path}: no state for step {step} after {timeout_s:.0f} s")
            time.sleep(delay)
            delay = min(0.02, delay * 2)

    def close(self) -> None:
        """Unmap the file."""
        if self._map is not None:
            self._map.close()
            self._file.close()
            self._map = self._file = None

    def snapshots(self) -> list[CurriculumState]:
        """Every snapshot still in the ring, oldest first (for checkpoints)."""
        latest = self.latest_step()
        found = [self.read(s) for s in range(max(0, latest - self.slots + 1), latest + 1)]
        return [s for s in found if s is not None]


def default_state_path(run_dir: str | Path, rank: int) -> Path:
    """Where a rank's shared state lives: under /dev/shm when available, else the run dir."""
    name = f"curriculum-state-{os.getpid()}-rank{rank}.bin"
    shm = Path("/dev/shm")
    return shm / name if shm.is_dir() and os.access(shm, os.W_OK) else Path(run_dir) / name
