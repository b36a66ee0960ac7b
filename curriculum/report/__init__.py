"""``curriculum report``: one self-contained directory (``index.html``, PNG figures, the CSV and
JSON numbers behind them) showing what a curriculum did and which documents pushed which
behavior.

It reads a run directory's ``metrics.csv``, ledger, config, policy and lineage, and the behavior
store the run used (through :class:`curriculum.store.StoreReader`: memory maps, no FAISS); the
ledger is streamed in chunks and the store read in blocks, so a ten-million-event run reports in
seconds. It imports the core only (never ``loaders`` or ``train``).
"""

from curriculum.report.build import ReportResult, build_report
from curriculum.report.errors import ReportError

__all__ = ["ReportError", "ReportResult", "build_report"]
