"""Probe sets: the documents that define each behavior, one JSONL file per behavior."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from curriculum.store.errors import StoreError


def read_probe_sets(
    probes_dir: str | Path, behaviors: Sequence[str] | None = None
) -> dict[str, list[str]]:
    """Probe documents per behavior from ``probes_dir/<behavior>.jsonl`` (``{"text": ...}`` a
    line). Behaviors are the file stems, sorted, unless ``behaviors`` picks and orders them."""
    directory = Path(probes_dir)
    if not directory.is_dir():
        raise StoreError(f"{directory}: probe directory not found")
    available = {p.stem: p for p in sorted(directory.glob("*.jsonl"))}
    if not available:
        raise StoreError(f"{directory}: no probe sets (<behavior>.jsonl files)")
    names = list(behaviors) if behaviors is not None else sorted(available)
    missing = [n for n in names if n not in available]
    if missing:
        raise StoreError(f"{directory / (missing[0] + '.jsonl')}: probe set not found")
    if len(set(names)) != len(names) or not names:
        raise StoreError(f"behaviors must be unique and non-empty, got {names}")
    probes: dict[str, list[str]] = {}
    for name in names:
        path = available[name]
        texts: list[str] = []
        for line_number, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise StoreError(f"{path}:{line_number}: invalid JSON ({error.msg})") from error
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise StoreError(f"{path}:{line_number}: expected an object with a 'text' string")
            texts.append(record["text"])
        if not texts:
            raise StoreError(f"{path}: probe set is empty")
        probes[name] = texts
    return probes
