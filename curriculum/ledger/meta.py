"""Where a run's ledger lives, and its ``meta.json`` (the run layout the check needs)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from curriculum.ledger.errors import LedgerError

LEDGER_DIRNAME = "ledger"
META_FILENAME = "meta.json"
FORMAT_VERSION = 1
_RECORDS_NAME = re.compile(r"rank-(\d{5,})\.bin")


def ledger_dir(run_dir: str | Path) -> Path:
    """``RUN/ledger``."""
    return Path(run_dir) / LEDGER_DIRNAME


def records_path(run_dir: str | Path, rank: int) -> Path:
    """``RUN/ledger/rank-00000.bin``: one rank's records."""
    return ledger_dir(run_dir) / f"rank-{rank:05d}.bin"


def reasons_path(run_dir: str | Path, rank: int) -> Path:
    """``RUN/ledger/reasons-00000.jsonl``: one rank's reason table (id -> text)."""
    return ledger_dir(run_dir) / f"reasons-{rank:05d}.jsonl"


def ranks_on_disk(run_dir: str | Path) -> list[int]:
    """Ranks that have a records file, in order."""
    directory = ledger_dir(run_dir)
    if not directory.is_dir():
        return []
    ranks = (_RECORDS_NAME.fullmatch(path.name) for path in directory.iterdir())
    return sorted(int(match.group(1)) for match in ranks if match)


@dataclass(frozen=True)
class LedgerMeta:
    """The run layout, written once by rank 0 (``RUN/ledger/meta.json``)."""

    world_size: int
    """Number of ranks, each writing its own records file."""
    num_workers: int
    """DataLoader workers per rank (0 workers counts as 1 reader: the main process)."""
    num_rows: int
    """Rows in the manifest: every epoch must account for rows ``[0, num_rows)``."""
    manifest: str
    """Manifest path or content hash, to tell which corpus the rows refer to."""
    num_epochs: int | None = None
    """Epochs the run is configured for; None = until stopped."""
    format_version: int = FORMAT_VERSION
    layouts: tuple[tuple[int, int, int], ...] = ()
    """``(since_step, world_size, num_workers)`` of each layout the run trained under, when it
    was resumed on another one (elastic resume); empty: one layout, ``world_size`` x
    ``num_workers``, from step 0. ``world_size`` and ``num_workers`` are the last layout's."""

    def __post_init__(self) -> None:
        # JSON gives lists; the history is compared and hashed as tuples.
        object.__setattr__(self, "layouts", tuple(tuple(int(v) for v in layout)
                                                  for layout in self.layouts))

    @property
    def num_readers(self) -> int:
        """Readers per epoch: each (rank, worker) records one EPOCH_END."""
        return self.world_size * max(1, self.num_workers)

    def segments(self) -> list[tuple[int, int, int]]:
        """Every layout as ``(since_step, world_size, num_workers)``, in step order."""
        return list(self.layouts) or [(0, self.world_size, self.num_workers)]


def write_ledger_meta(run_dir: str | Path, *, world_size: int, num_workers: int, num_rows: int,
                      manifest: str | Path, num_epochs: int | None = None,
                      since_step: int | None = None) -> LedgerMeta:
    """Write ``RUN/ledger/meta.json`` (call on rank 0 before the first batch).

    Calling it again with the same values (a resumed run) changes nothing; different values raise
    :class:`LedgerError`, because the records already written were counted against the old layout
    — except the layout (world size, workers) of a run resumed at ``since_step`` (an elastic
    resume), which is added to the layout history; layouts recorded from ``since_step`` on (an
    earlier attempt past the checkpoint) are replaced.
    """
    meta = LedgerMeta(int(world_size), int(num_workers), int(num_rows), str(manifest),
                      None if num_epochs is None else int(num_epochs))
    if meta.world_size < 1 or meta.num_workers < 0 or meta.num_rows < 0:
        raise LedgerError(f"bad ledger layout: world_size={world_size}, num_workers={num_workers}, "
                          f"num_rows={num_rows}")
    path = ledger_dir(run_dir) / META_FILENAME
    if path.exists():
        old = read_ledger_meta(run_dir)
        compared = old
        if since_step is not None:
            meta = with_layout(old, meta, int(since_step))
            compared = dataclasses.replace(old, world_size=meta.world_size,
                                           num_workers=meta.num_workers, layouts=meta.layouts)
        if compared != meta:
            changed = [f"{field.name} {getattr(old, field.name)!r} -> {getattr(meta, field.name)!r}"
                       for field in dataclasses.fields(meta)
                       if getattr(old, field.name) != getattr(meta, field.name)]
            raise LedgerError(f"{path}: the run's ledger layout changed ({', '.join(changed)}); "
                              "use a new run directory")
        if old == meta:
            return meta
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".tmp{os.getpid()}")
    temporary.write_text(json.dumps(dataclasses.asdict(meta), indent=2) + "\n")
    os.replace(temporary, path)  # readers never see a half-written meta.json
    return meta


def with_layout(old: LedgerMeta, new: LedgerMeta, since_step: int) -> LedgerMeta:
    """``new`` with ``old``'s layout history, plus ``new``'s layout from ``since_step`` on when it
    differs from the one in effect there (the corpus fields stay ``new``'s, so a change of corpus
    is still refused)."""
    history = [s for s in old.segments() if s[0] < since_step]
    if not history or history[-1][1:] != (new.world_size, new.num_workers):
        history.append((since_step, new.world_size, new.num_workers))
    return dataclasses.replace(new, layouts=tuple(history) if len(history) > 1 else ())


def read_ledger_meta(run_dir: str | Path) -> LedgerMeta:
    """The run layout from ``RUN/ledger/meta.json``; :class:`LedgerError` if absent or damaged."""
    path = ledger_dir(run_dir) / META_FILENAME
    try:
        values = json.loads(path.read_text())
        return LedgerMeta(**values)
    except FileNotFoundError:
        raise LedgerError(f"{path}: not found (rank 0 writes it with write_ledger_meta)") from None
    except (json.JSONDecodeError, TypeError) as error:
        raise LedgerError(f"{path}: damaged ({str(error).splitlines()[0]})") from None
