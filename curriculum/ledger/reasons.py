"""One rank's reason table: ``reasons-00000.jsonl``, one ``{"id": N, "text": "..."}`` per line.

Id 0 means "no reason" and is never written. The writer appends a reason's line (in one write)
before any record that uses it, so after a kill every record's reason has a whole line; only the
last line can be torn, and it is ignored.
"""

from __future__ import annotations

import json
from pathlib import Path

from curriculum.ledger.errors import LedgerError


def parse_reason_table(path: str | Path) -> tuple[dict[int, str], int]:
    """``({id: text}, bytes of whole lines)`` of a reason table; a missing file is empty.

    A torn last line (no newline, or not JSON) is left out of both; any other damage raises
    :class:`LedgerError`.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return {}, 0
    table: dict[int, str] = {}
    good_bytes = 0
    lines = data.split(b"\n")
    # After the last newline comes "" (a whole file) or a torn line (ignored).
    for number, line in enumerate(lines[:-1], start=1):
        try:
            entry = json.loads(line)
            reason_id, text = int(entry["id"]), str(entry["text"])
        except (ValueError, KeyError, TypeError):
            if number == len(lines) - 1 and not lines[-1]:
                break  # a damaged last line: what a kill mid-write can leave
            raise LedgerError(f"{path}: damaged at line {number}") from None
        if reason_id < 1 or table.get(reason_id, text) != text:
            raise LedgerError(f"{path}: line {number} reuses or misnumbers id {reason_id}")
        table[reason_id] = text
        good_bytes += len(line) + 1
    return table, good_bytes


def format_reason_line(reason_id: int, text: str) -> bytes:
    """The bytes of one table line (with its newline)."""
    return (json.dumps({"id": reason_id, "text": text}, ensure_ascii=False) + "\n").encode()
