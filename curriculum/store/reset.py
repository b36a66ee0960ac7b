"""Empty a store's attribution tables, so the next run starts from the affinity prior alone."""

from __future__ import annotations

from pathlib import Path

from curriculum.store.attribution import create_attribution_files
from curriculum.store.reader import StoreReader


def reset_attribution(store: str | Path) -> None:
    """Zero the measurements and estimates of ``store`` (no writer may hold it open)."""
    reader = StoreReader(str(store))
    num_rows, num_behaviors = reader.num_rows, len(reader.behaviors)
    del reader
    create_attribution_files(Path(store), num_rows, num_behaviors)
