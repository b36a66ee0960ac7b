"""The ledger's error type."""

from __future__ import annotations


class LedgerError(ValueError):
    """A ledger that cannot be used as asked: a missing or damaged file, a bad argument.

    The message is one line and names the file or setting at fault, so the command line can print
    it as it is.
    """
