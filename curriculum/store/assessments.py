"""Assessments: the store's third score family, ``assess.<principle>`` (0-100 from a judge).

Beside affinity (what a document looks like) and attribution (what it did to the model), a store
can hold, per principle, the score an LLM judge (or a classifier distilled from one) gave each
document. They live in ``STORE/assess/``:

- ``assess.json``: principle names in column order, and per principle where its scores came
  from (judge identity, ``llm`` or ``distilled``) and how many rows have one;
- ``scores-GGGGGG.npy`` (the generation ``assess.json`` names): float32 (num_rows, P); **NaN
  where a document was not assessed** (or its answer was unreadable), so a policy condition on
  it is false.

Written whole under the store's writer lock (one writer): a new generation file first, then
``assess.json`` renamed over the old one, so a reader always sees a table and the names that
go with it; columns of other principles are kept.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from curriculum.store.errors import StoreError
from curriculum.store.meta import WRITER_LOCK_FILE
from curriculum.store.tables import fsync_directory, save_atomic, write_bytes_atomic

ASSESS_DIR = "assess"
ASSESS_META = "assess.json"


@contextlib.contextmanager
def _writer_lock(store_path: Path) -> Iterator[None]:
    lock_path = store_path / WRITER_LOCK_FILE
    handle = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError(f"{lock_path}: another handle or process is writing this store "
                             "(one writer only)") from None
        yield
    finally:
        os.close(handle)  # closing releases the lock


def _scores_name(generation: int) -> str:
    return f"scores-{generation:06d}.npy"


class AssessmentTable:
    """Read-only view of a store's assessments (empty when none were written)."""

    def __init__(self, store_path: str | Path) -> None:
        self.store_path = Path(store_path)
        directory = self.store_path / ASSESS_DIR
        self.principles: tuple[str, ...] = ()
        self.sources: dict[str, dict[str, Any]] = {}
        self._scores: np.ndarray | None = None
        self.generation = 0
        if not (directory / ASSESS_META).is_file():
            return
        try:
            meta = json.loads((directory / ASSESS_META).read_text())
            self.principles = tuple(meta["principles"])
            self.sources = dict(meta.get("sources", {}))
            self.generation = int(meta["generation"])
            self._scores = np.load(directory / _scores_name(self.generation), mmap_mode="r")
        except (OSError, ValueError, KeyError) as error:
            raise StoreError(f"{directory}: unreadable assessments ({error})") from None
        if self._scores.ndim != 2 or self._scores.shape[1] != len(self.principles):
            raise StoreError(f"{directory / _scores_name(self.generation)}: shape "
                             f"{self._scores.shape} does not match {len(self.principles)} principles")

    @property
    def num_rows(self) -> int | None:
        """Rows of the table (None when empty)."""
        return None if self._scores is None else int(self._scores.shape[0])

    def values(self, rows: np.ndarray, principles: Sequence[str] | None = None) -> np.ndarray:
        """float32 (n, P') scores of ``rows`` for ``principles`` (default: all, in order);
        NaN for a principle the store has no assessments of."""
        rows = np.asarray(rows, np.int64)
        wanted = self.principles if principles is None else tuple(principles)
        out = np.full((len(rows), len(wanted)), np.nan, np.float32)
        if self._scores is None:
            return out
        for j, name in enumerate(wanted):
            if name in self.principles:
                out[:, j] = self._scores[rows, self.principles.index(name)]
        return out


def write_assessments(store_path: str | Path, num_rows: int, scores: Mapping[str, np.ndarray],
                      sources: Mapping[str, Mapping[str, Any]] | None = None) -> Path:
    """Write ``scores`` (principle -> float (num_rows,) array, NaN = not assessed) into the
    store, replacing those principles' columns and keeping the others. Returns the directory."""
    store_path = Path(store_path)
    directory = store_path / ASSESS_DIR
    with _writer_lock(store_path):
        old = AssessmentTable(store_path)
        if old.num_rows is not None and old.num_rows != num_rows:
            raise StoreError(f"{directory}: holds {old.num_rows} rows, the store {num_rows}")
        principles = list(old.principles) + [p for p in scores if p not in old.principles]
        table = np.full((num_rows, len(principles)), np.nan, np.float32)
        for j, name in enumerate(principles):
            if name in scores:
                column = np.asarray(scores[name], np.float32)
                if column.shape != (num_rows,):
                    raise StoreError(f"assess.{name}: expected {num_rows} scores, got "
                                     f"{column.shape}")
                table[:, j] = column
            else:
                table[:, j] = old.values(np.arange(num_rows), [name])[:, 0]
        merged_sources = {**old.sources}
        for name in scores:
            merged_sources[name] = {**(sources or {}).get(name, {}),
                                    "assessed_rows": int(np.isfinite(table[:, principles.index(
                                        name)]).sum())}
        directory.mkdir(exist_ok=True)
        generation = old.generation + 1
        save_atomic(directory / _scores_name(generation), table)
        record = {"version": 1, "num_rows": num_rows, "generation": generation,
                  "principles": principles, "sources": merged_sources}
        write_bytes_atomic(directory / ASSESS_META, (json.dumps(record, indent=1) + "\n").encode())
        fsync_directory(directory)
        if old.num_rows is not None:
            (directory / _scores_name(old.generation)).unlink(missing_ok=True)
    return directory
