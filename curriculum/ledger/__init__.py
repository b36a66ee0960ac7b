"""The ledger: every document's fate, appended per rank, and the check that nothing is lost.

Workers record fates with a :class:`FateRecorder` and attach :meth:`FateRecorder.take` (a
:class:`FateBatch`) to each batch; the trainer appends it with :meth:`LedgerWriter.append` when it
consumes the batch; rank 0 writes the run layout once with :func:`write_ledger_meta`. Afterwards
:func:`read_ledger` / :func:`load_ledger` read the records, :func:`check_ledger` verifies that every
row of every epoch is accounted for exactly once, and :func:`summarize_ledger` counts fates by
stage, behavior and reason. Importing this package imports numpy only.
"""

from curriculum.ledger.check import EpochCounts, LedgerCheck, check_ledger
from curriculum.ledger.errors import LedgerError
from curriculum.ledger.meta import (
    LedgerMeta,
    ledger_dir,
    read_ledger_meta,
    reasons_path,
    records_path,
    write_ledger_meta,
)
from curriculum.ledger.reader import LoadedLedger, load_ledger, read_ledger
from curriculum.ledger.records import (
    RECORD_DTYPE,
    TERMINAL_FATES,
    Fate,
    FateBatch,
    FateRecorder,
    LedgerRecord,
)
from curriculum.ledger.summary import LedgerSummary, SummaryRow, summarize_ledger
from curriculum.ledger.writer import LedgerWriter

__all__ = [
    "RECORD_DTYPE",
    "TERMINAL_FATES",
    "EpochCounts",
    "Fate",
    "FateBatch",
    "FateRecorder",
    "LedgerCheck",
    "LedgerError",
    "LedgerMeta",
    "LedgerRecord",
    "LedgerSummary",
    "LedgerWriter",
    "LoadedLedger",
    "SummaryRow",
    "check_ledger",
    "ledger_dir",
    "load_ledger",
    "read_ledger",
    "read_ledger_meta",
    "reasons_path",
    "records_path",
    "summarize_ledger",
    "write_ledger_meta",
]
