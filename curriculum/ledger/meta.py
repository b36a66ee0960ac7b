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

    @property
    def num_readers(self) -> int:
        """Readers per epoch: each (rank, worker) records one EPOCH_END."""
        return self.world_size * max(1, self.num_workers)


def write_ledger_meta(run_dir: str | Path, *, world_size: int, num_workers: int, num_rows: int,
                      manifest: str | Path, num_epochs: int | None = None) -> LedgerMeta:
    """Write ``RUN/ledger/meta.json`` (call on rank 0 before the first batch).

    Calling it again with the same values (a resumed run) changes nothing; different values raise
    :class:`LedgerError`, because the records already written were counted against the old layout.
    """
    meta = LedgerMeta(int(world_size), int(num_workers), int(num_rows), str(manifest),
                      None if num_epochs is None else int(num_epochs))
    if meta.world_size < 1 or meta.num_workers < 0 or meta.num_rows < 0:
        raise LedgerError(f"bad ledger layout: world_size={world_size}, num_workers={num_workers}, "
                          f"num_rows={num_rows}")
    path = ledger_dir(run_dir) / META_FILENAME
    if path.exists():
        old = read_ledger_meta(run_dir)
        if old != meta:
            changed = [f"{field.name} {getattr(old, field.name)!r} -> {getattr(meta, field.name)!r}"
                       for field in dataclasses.fields(meta)
                       if getattr(old, field.name) != getattr(meta, field.name)]
            raise LedgerError(f"{path}: the run's ledger layout changed ({', '.join(changed)}); "
                              "use a new run directory")
        return meta
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".tmp{os.getpid()}")
    temporary.write_text(json.dumps(dataclasses.asdict(meta), indent=2) + "\n")
    os.replace(temporary, path)  # readers never see a half-written meta.json
    return meta


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
