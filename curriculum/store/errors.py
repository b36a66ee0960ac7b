"""The store's error type."""

from __future__ import annotations


class StoreError(ValueError):
    """A store that cannot be used as asked: a damaged file, a mismatch, a bad argument.

    The message is one line and names the file or setting at fault, so the command line can print
    it as it is.
    """
