"""The defer spool: row references of delayed documents, persisted per reader, re-read on release.

A deferred document is stored as (row, epoch, until_stage, until_step) — never its text, which is
re-read from its shard by seeking to the row's byte offset when the document is released. The
pending entries are part of the reader's checkpointed state; the file
``SPOOL_DIR/rank-RRRRR-worker-WW.bin`` mirrors them for inspection (new entries are appended once
per batch and whenever the state is taken) and is rewritten from the state on resume, so a crash
between checkpoints never leaves entries the state does not know.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from loaders.manifest import ShardManifest
from loaders.remote_shards import local_shard
from loaders.tar_samples import iter_raw_samples

SPOOL_DTYPE = np.dtype([("row", "<i8"), ("epoch", "<u4"), ("until_stage", "<i4"),
                        ("until_step", "<i8")])
NEVER = -1
_NOT_DUE = 2**63  # later than any stage or step


class DeferSpool:
    """Pending deferred rows of one reader, released when their stage or step arrives."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._pending = np.zeros(0, dtype=SPOOL_DTYPE)
        self._appended: list[tuple[int, int, int, int]] = []
        self._unwritten: list[tuple[int, int, int, int]] = []
        # The earliest stage and step at which any entry comes due: take_due, called once per
        # batch, answers from these alone until then (no merge, no scan).
        self._first_due_stage = self._first_due_step = _NOT_DUE
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._rewrite()

    def __len__(self) -> int:
        return len(self._pending) + len(self._appended)

    def add(self, row: int, epoch: int, until_stage: int | None, until_step: int | None) -> None:
        """Defer ``row`` until the stage index or the step (whichever is given) is reached."""
        record = (row, epoch, NEVER if until_stage is None else until_stage,
                  NEVER if until_step is None else until_step)
        self._appended.append(record)
        if record[2] != NEVER:
            self._first_due_stage = min(self._first_due_stage, record[2])
        if record[3] != NEVER:
            self._first_due_step = min(self._first_due_step, record[3])
        if self.path is not None:
            self._unwritten.append(record)

    def _merge(self) -> None:
        if self._appended:
            self._pending = np.concatenate([self._pending,
                                            np.array(self._appended, dtype=SPOOL_DTYPE)])
            self._appended = []

    def _write_appended(self) -> None:
        # One append per batch rather than per deferred document.
        if self._unwritten and self.path is not None:
            with self.path.open("ab") as handle:
                handle.write(np.array(self._unwritten, dtype=SPOOL_DTYPE).tobytes())
        self._unwritten = []

    def take_due(self, stage: int, step: int) -> list[tuple[int, int]]:
        """Remove and return ``(row, epoch)`` of entries due at (stage, step), oldest first."""
        self._write_appended()
        if stage < self._first_due_stage and step < self._first_due_step:
            return []
        self._merge()
        pending = self._pending
        due = (((pending["until_stage"] != NEVER) & (pending["until_stage"] <= stage))
               | ((pending["until_step"] != NEVER) & (pending["until_step"] <= step)))
        if not due.any():  # cannot happen while the first-due marks are exact; cheap to keep
            return []
        released = [(int(r), int(e)) for r, e in zip(pending["row"][due], pending["epoch"][due],
                                                     strict=True)]
        self._pending = pending[~due]
        self._find_first_due()
        self._rewrite()
        return released

    def _find_first_due(self) -> None:
        self._merge()
        stages, steps = self._pending["until_stage"], self._pending["until_step"]
        stages, steps = stages[stages != NEVER], steps[steps != NEVER]
        self._first_due_stage = int(stages.min()) if len(stages) else _NOT_DUE
        self._first_due_step = int(steps.min()) if len(steps) else _NOT_DUE

    def _rewrite(self) -> None:
        if self.path is None:
            return
        self._merge()
        self._unwritten = []
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(self._pending.tobytes())
        os.replace(tmp, self.path)

    def state_dict(self) -> dict[str, Any]:
        """Pending entries as a plain array (the file is brought up to date with them)."""
        self._write_appended()
        self._merge()
        return {"pending": {name: self._pending[name].copy() for name in SPOOL_DTYPE.names}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore pending entries and make the file match them."""
        fields = state["pending"]
        self._pending = np.zeros(len(fields["row"]), dtype=SPOOL_DTYPE)
        for name in SPOOL_DTYPE.names:
            self._pending[name] = fields[name]
        self._appended = []
        self._find_first_due()
        self._rewrite()


def read_row_text(manifest: ShardManifest, row: int) -> dict[str, bytes] | None:
    """The members of the sample at ``row``, read by seeking to its offset (``None`` if gone)."""
    shard = int(manifest.shard_of_rows(np.array([row]))[0])
    ordinal = row - int(manifest.first_rows[shard])
    offset = int(manifest.offsets_bytes[row])
    for sample in iter_raw_samples(local_shard(manifest.shard_paths[shard]), ordinal, offset):
        return sample.members
    return None
