"""The report's one error type."""

from __future__ import annotations


class ReportError(ValueError):
    """Input the report cannot use (not a run directory, a damaged file): one line, exit 2."""
