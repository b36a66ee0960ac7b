"""What a ledger record is, and how DataLoader workers collect them cheaply.

A worker keeps one :class:`FateRecorder`, calls :meth:`FateRecorder.add` (or a named shortcut)
once per document decision, and attaches :meth:`FateRecorder.take` -- a :class:`FateBatch` -- to
each batch it yields. The trainer hands that batch to :class:`curriculum.ledger.LedgerWriter`
when it consumes the batch, so the ledger never runs ahead of the loader state in a checkpoint.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


class Fate(enum.IntEnum):
    """What happened to a document (the ``event`` code stored in each record)."""

    EMIT = 1
    """Passed to the packer with a loss weight: terminal for the (epoch, row)."""
    DEFER = 2
    """Sent to the defer spool: the row is pending until a RELEASE."""
    RELEASE = 3
    """Came back from the spool; the row is decided again (EMIT, DEFER, DROP or SKIP follows)."""
    DROP = 4
    """Dropped by the policy, with a reason: terminal."""
    SKIP = 5
    """Bad input ("not UTF-8", "empty text", "truncated tar"), with a reason: terminal."""
    EPOCH_END = 6
    """Row -1: one reader (rank, worker) finished reading its share of the epoch."""


#: Fates after which the (epoch, row) is settled for good.
TERMINAL_FATES: frozenset[Fate] = frozenset({Fate.EMIT, Fate.DROP, Fate.SKIP})

#: One record on disk: 33 bytes, little-endian, packed (no padding).
RECORD_DTYPE = np.dtype([
    ("event", "<u1"),
    ("rank", "<u2"),
    ("worker", "<u2"),
    ("epoch", "<u4"),
    ("row", "<i8"),
    ("step", "<i8"),
    ("weight", "<f4"),
    ("reason", "<u4"),
])


class LedgerRecord(NamedTuple):
    """One event as :func:`curriculum.ledger.read_ledger` yields it (the first six fields are the
    design's ``(event, row, step, rank, weight, reason)``)."""

    event: Fate
    row: int
    """Stable document row from the manifest; -1 for EPOCH_END."""
    step: int
    """Global step at which the trainer consumed the batch carrying the event."""
    rank: int
    weight: float
    """Loss weight of an EMIT; 0.0 for other events."""
    reason: str
    """Why a DROP or SKIP happened; '' for none."""
    epoch: int
    worker: int
    """DataLoader worker of the rank that read the document."""


@dataclass(eq=False)
class FateBatch:
    """Fates of the documents behind one batch, as compact arrays (one entry per event).

    Reasons are stored as codes into ``reason_table`` (code 0 is '' = no reason), so a batch
    pickles to a few bytes per document however long the reason texts are. Not frozen: Lightning
    rebuilds dataclasses found in a batch when it moves the batch to a device. No ``==`` (arrays).
    """

    event: np.ndarray
    """uint8 :class:`Fate` codes."""
    worker: np.ndarray
    """uint16 DataLoader worker ids."""
    epoch: np.ndarray
    """uint32 epochs."""
    row: np.ndarray
    """int64 rows (-1 for EPOCH_END)."""
    weight: np.ndarray
    """float32 loss weights (0.0 where not an EMIT)."""
    reason: np.ndarray
    """uint32 codes into ``reason_table``."""
    reason_table: tuple[str, ...] = ("",)
    """Reason texts; entry 0 is '' (no reason)."""

    def __len__(self) -> int:
        return len(self.event)

    def __reduce__(self) -> tuple[object, tuple[bytes, tuple[str, ...]]]:
        # A batch crosses from a DataLoader worker to the trainer with every training batch; six
        # small arrays pickle (and unpickle) several times slower than one packed byte string.
        packed = np.empty(len(self.event), dtype=_PACKED_DTYPE)
        for name in _COLUMNS:
            packed[name] = getattr(self, name)
        return _unpack_fate_batch, (packed.tobytes(), self.reason_table)

    @property
    def reasons(self) -> list[str]:
        """The reason text of each event ('' for none)."""
        table = self.reason_table
        return [table[code] for code in self.reason.tolist()]

    @classmethod
    def empty(cls) -> FateBatch:
        """A batch with no events."""
        return cls.build([], [], [])

    @classmethod
    def build(cls, event: Sequence[int] | np.ndarray, row: Sequence[int] | np.ndarray,
              epoch: Sequence[int] | np.ndarray | int, worker: Sequence[int] | np.ndarray | int = 0,
              weight: Sequence[float] | np.ndarray | float = 0.0,
              reasons: Sequence[str] | None = None) -> FateBatch:
        """A batch from per-event values; scalars are broadcast, ``reasons`` holds one text per
        event ('' for none)."""
        event = np.asarray(event, dtype=np.uint8)
        size = len(event)

        def column(values: object, dtype: type) -> np.ndarray:
            array = np.asarray(values, dtype=dtype)
            return np.full(size, array, dtype=dtype) if array.ndim == 0 else array

        if reasons is None:
            codes, table = np.zeros(size, dtype=np.uint32), ("",)
        else:
            table_ids: dict[str, int] = {"": 0}
            codes = np.fromiter((table_ids.setdefault(text, len(table_ids)) for text in reasons),
                                dtype=np.uint32, count=len(reasons))
            table = tuple(table_ids)
        batch = cls(event, column(worker, np.uint16), column(epoch, np.uint32),
                    column(row, np.int64), column(weight, np.float32), codes, table)
        batch.validate()
        return batch

    @classmethod
    def concat(cls, batches: Sequence[FateBatch]) -> FateBatch:
        """One batch holding the events of ``batches`` in order (e.g. several workers' batches
        merged into one step)."""
        if not batches:
            return cls.empty()
        table_ids: dict[str, int] = {"": 0}
        codes = []
        for batch in batches:
            mapping = np.fromiter((table_ids.setdefault(text, len(table_ids))
                                   for text in batch.reason_table), dtype=np.uint32)
            codes.append(mapping[batch.reason])
        return cls(*(np.concatenate([getattr(b, name) for b in batches])
                     for name in ("event", "worker", "epoch", "row", "weight")),
                   np.concatenate(codes), tuple(table_ids))

    def validate(self) -> None:
        """Raise ValueError unless all columns have one length and every reason code has a text."""
        size = len(self.event)
        for name in ("worker", "epoch", "row", "weight", "reason"):
            if len(getattr(self, name)) != size:
                raise ValueError(f"FateBatch.{name} has {len(getattr(self, name))} entries, "
                                 f"event has {size}")
        if not self.reason_table or self.reason_table[0] != "":
            raise ValueError("FateBatch.reason_table must start with '' (no reason)")
        if size and int(self.reason.max()) >= len(self.reason_table):
            raise ValueError("FateBatch.reason holds a code outside reason_table")


_COLUMNS = ("event", "worker", "epoch", "row", "weight", "reason")
# The columns of FateBatch, packed per event, for pickling (dtypes as documented on FateBatch).
_PACKED_DTYPE = np.dtype([("event", "<u1"), ("worker", "<u2"), ("epoch", "<u4"), ("row", "<i8"),
                          ("weight", "<f4"), ("reason", "<u4")])


def _unpack_fate_batch(packed: bytes, reason_table: tuple[str, ...]) -> FateBatch:
    records = np.frombuffer(packed, dtype=_PACKED_DTYPE)
    return FateBatch(*(np.ascontiguousarray(records[name]) for name in _COLUMNS), reason_table)


#: A recorder with at most this many reasons ships its whole (cached) table with every batch.
_WHOLE_TABLE_SIZE = 64


class FateRecorder:
    """Collects fates in a DataLoader worker; :meth:`take` turns them into a :class:`FateBatch`.

    :meth:`add` is a handful of list appends and one dict lookup (reasons are interned here), so
    recording costs well under a microsecond per document; arrays are built once per batch.
    Rules the loader must keep for ``curriculum ledger --check`` to hold:

    - a RELEASE is recorded together with the row's new decision (same :meth:`take`), so a
      released row is never left undecided in the ledger while it waits in a window;
    - :meth:`epoch_end` is recorded after every row this reader read in that epoch has its fate
      recorded (the priority window holds none of them any more).
    """

    __slots__ = ("worker", "_event", "_row", "_epoch", "_weight", "_reason", "_reason_ids", "_table")

    def __init__(self, worker: int = 0) -> None:
        self.worker = worker
        """DataLoader worker id stamped on every event (settable once the worker knows it)."""
        self._event: list[int] = []
        self._row: list[int] = []
        self._epoch: list[int] = []
        self._weight: list[float] = []
        self._reason: list[int] = []
        self._reason_ids: dict[str, int] = {"": 0}
        self._table: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self._event)

    def add(self, event: int, row: int, epoch: int, weight: float = 0.0, reason: str = "") -> None:
        """Record one event (``event`` is a :class:`Fate`)."""
        self._event.append(event)
        self._row.append(row)
        self._epoch.append(epoch)
        self._weight.append(weight)
        if not reason:
            self._reason.append(0)
            return
        code = self._reason_ids.get(reason)
        if code is None:
            code = self._reason_ids[reason] = len(self._reason_ids)
            self._table = None
        self._reason.append(code)

    def emit(self, row: int, epoch: int, weight: float) -> None:
        """The document goes to the packer with loss weight ``weight``."""
        self.add(Fate.EMIT, row, epoch, weight)

    def defer(self, row: int, epoch: int) -> None:
        """The document goes to the defer spool."""
        self.add(Fate.DEFER, row, epoch)

    def release(self, row: int, epoch: int) -> None:
        """The document came back from the spool (record its new decision right after)."""
        self.add(Fate.RELEASE, row, epoch)

    def drop(self, row: int, epoch: int, reason: str) -> None:
        """The policy dropped the document."""
        self.add(Fate.DROP, row, epoch, 0.0, reason)

    def skip(self, row: int, epoch: int, reason: str) -> None:
        """The document is bad input ("not UTF-8", "empty text", ...)."""
        self.add(Fate.SKIP, row, epoch, 0.0, reason)

    def epoch_end(self, epoch: int) -> None:
        """This reader has recorded the fate of every row it read in ``epoch``."""
        self.add(Fate.EPOCH_END, -1, epoch)

    def take(self) -> FateBatch:
        """Everything recorded since the last call, as one batch; the recorder starts empty."""
        event, row, epoch, weight, reason = (self._event, self._row, self._epoch, self._weight,
                                             self._reason)
        self._event, self._row, self._epoch, self._weight, self._reason = [], [], [], [], []
        if len(self._reason_ids) <= _WHOLE_TABLE_SIZE:
            if self._table is None:
                self._table = tuple(self._reason_ids)
            table, codes = self._table, np.array(reason, dtype=np.uint32)
        else:
            # Reasons that carry details can grow the table without bound: ship only the ones
            # this batch uses, so a batch always pickles small.
            used = sorted(set(reason) | {0})
            lookup = np.zeros(used[-1] + 1, dtype=np.uint32)
            lookup[used] = np.arange(len(used), dtype=np.uint32)
            texts = list(self._reason_ids)
            table = tuple(texts[code] for code in used)
            codes = lookup[np.array(reason, dtype=np.int64)]
        return FateBatch(np.array(event, dtype=np.uint8), np.full(len(event), self.worker, np.uint16),
                         np.array(epoch, dtype=np.uint32), np.array(row, dtype=np.int64),
                         np.array(weight, dtype=np.float32), codes, table)
