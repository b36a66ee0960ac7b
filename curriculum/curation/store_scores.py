"""Curation scores into the behavior store, as the score family ``assess.<principle>``.

Each input row's *original* score per principle (before any revision: the store describes the
corpus as it is) goes to the store row with the same sample key; rows the curation did not
assess, or could not read, stay NaN, so a policy condition such as ``assess.deception >= 80`` is
false for them. Percentiles (``pct.assess.<principle>``) are computed by the policy reader over
the assessed rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from curriculum.curation.principles import Principle
from curriculum.curation.records import RowRecords
from curriculum.shards.manifest import ShardManifest
from curriculum.store.assessments import write_assessments


def write_scores(store_path: str | Path, keys: Sequence[str], scores: np.ndarray,
                 principles: Sequence[Principle], sources: Mapping[str, Mapping[str, Any]],
                 ) -> int:
    """Write (n, P) ``scores`` of documents ``keys`` into the store; returns rows written."""
    from curriculum.store import StoreReader

    reader = StoreReader(store_path).open()
    store_rows = reader.rows_for_keys(list(keys))
    found = store_rows >= 0
    columns: dict[str, np.ndarray] = {}
    existing = reader.assessment(np.arange(reader.num_rows), [p.name for p in principles])
    for j, principle in enumerate(principles):
        column = existing[:, j].copy()
        column[store_rows[found]] = np.asarray(scores, np.float32)[found, j]
        columns[principle.name] = column
    write_assessments(store_path, reader.num_rows, columns, sources)
    return int(found.sum())


def write_store_scores(store_path: str | Path, principles: Sequence[Principle],
                       records: RowRecords, manifest: ShardManifest, judge_identity: str) -> int:
    """Write a curation run's original scores into the store (keys matched to store rows)."""
    sources = {p.name: {"kind": "llm", "judge": judge_identity, "prompt_hash": p.prompt_hash(),
                        "corpus": manifest.content_hash()} for p in principles}
    return write_scores(store_path, records.keys, records.scores, principles, sources)
