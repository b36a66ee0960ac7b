"""``curriculum store``: inspect a behavior store (one document, or a summary)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from curriculum.store import BehaviorStore

HELP = "Inspect a behavior store: a document's scores and neighbours, or a summary."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``curriculum store``."""
    parser.add_argument("store", help="store directory (from `curriculum index`)")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--row", type=int, help="show one document by row id")
    what.add_argument("--key", help="show one document by sample key")
    what.add_argument("--summary", action="store_true",
                      help="counts, score distributions per behavior, coverage of measured rows")
    parser.add_argument("--neighbors", type=int, default=5, help="nearest neighbours to list")
    parser.add_argument("--verify", action="store_true",
                        help="also check every static file's CRC-32 against store.json")


def run(args: argparse.Namespace) -> int:
    """Print what was asked for."""
    from curriculum.store import BehaviorStore, StoreError

    store = BehaviorStore.open(args.store)
    assert isinstance(store, BehaviorStore)
    if args.verify:
        store.verify()
        print(f"{args.store}: {len(store.meta.files)} files match store.json")
    if args.summary:
        print_summary(store)
        return 0
    if args.key is not None:
        row = int(store.rows_for_keys([args.key])[0])
        if row < 0:
            raise StoreError(f"{args.store}: no document with key {args.key!r}")
    else:
        row = int(args.row)
    print_document(store, row, args.neighbors)
    return 0


def _sample_at(store: BehaviorStore, row: int) -> tuple[str, str, str]:
    """(shard path, key, text) of a row, read from its shard at the recorded byte offset."""
    from curriculum.shards.documents import decode_text, read_sample

    manifest = store.manifest
    path = manifest.shard_paths[int(manifest.shard_of_rows(np.asarray([row]))[0])]
    try:
        sample = read_sample(manifest, row)
    except OSError:
        sample = None
    if sample is None:
        return path, "?", "(shard unreadable)"
    text = decode_text(sample.members)
    if isinstance(text, Exception):
        return path, sample.key, f"(undecodable: {text})"
    return path, sample.key, text if text is not None else "(no text member)"


def _shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def print_document(store: BehaviorStore, row: int, num_neighbors: int) -> None:
    """A document's key, text, affinity and attribution per behavior, and its neighbours."""
    rows = store.check_rows([row])
    path, key, text = _sample_at(store, row)
    affinity = store.affinity(rows)[0]
    attribution, measured = store.attribution_and_measured(rows)
    counts = store.attribution_counts(rows)[0]
    print(f"row {row}  key {key}  shard {Path(path).name}")
    print(f"text: {_shorten(text, 160)}")
    print(f"{'behavior':<24}{'affinity':>10}{'attribution':>14}  source")
    for column, behavior in enumerate(store.behaviors):
        source = (f"measured (n={int(counts[column])})" if measured[0, column] else "estimated")
        print(f"{behavior:<24}{affinity[column]:>10.4f}{attribution[0, column]:>14.6g}  {source}")
    if num_neighbors > 0:
        similarities, found = store.neighbors(rows, num_neighbors)
        print(f"nearest {num_neighbors} neighbours:")
        for similarity, neighbor in zip(similarities[0], found[0], strict=True):
            if neighbor < 0:
                continue
            _, neighbor_key, neighbor_text = _sample_at(store, int(neighbor))
            print(f"  row {int(neighbor):<10} cos {similarity:.4f}  {neighbor_key}  "
                  f"{_shorten(neighbor_text, 70)}")


def _distribution(values: np.ndarray) -> str:
    if not len(values):
        return "(none)"
    p10, p50, p90 = np.percentile(values, [10, 50, 90])
    return (f"mean {values.mean():.4g}  min {values.min():.4g}  p10 {p10:.4g}  p50 {p50:.4g}  "
            f"p90 {p90:.4g}  max {values.max():.4g}")


def print_summary(store: BehaviorStore, block_rows: int = 1 << 20) -> None:
    """Counts, per-behavior distributions of affinity and attribution, measured coverage."""
    meta = store.meta
    num_rows = meta.num_rows
    print(f"store {store.path}")
    print(f"rows {num_rows}  shards {meta.num_shards}  behaviors {len(meta.behaviors)}  "
          f"dim {meta.dim}  embedder {meta.embedder['name']}  index {meta.index['factory']}  "
          f"content hash {meta.content_hash}")
    print(f"affinity: {meta.affinity['definition']} (top_k={meta.affinity['top_k']}) over probe "
          f"sets of {', '.join(f'{b}={n}' for b, n in meta.affinity['probe_documents'].items())}")
    measured_any = 0
    affinity_parts: list[np.ndarray] = []
    per_behavior_measured: list[list[np.ndarray]] = [[] for _ in meta.behaviors]
    per_behavior_estimate: list[list[np.ndarray]] = [[] for _ in meta.behaviors]
    for start in range(0, num_rows, block_rows):
        rows = np.arange(start, min(start + block_rows, num_rows))
        values, measured = store.attribution_and_measured(rows)
        affinity_parts.append(store.affinity(rows))
        measured_any += int(measured.any(axis=1).sum())
        for column in range(len(meta.behaviors)):
            per_behavior_measured[column].append(values[measured[:, column], column])
            per_behavior_estimate[column].append(values[~measured[:, column], column])
    affinity = np.concatenate(affinity_parts)
    print(f"measured rows (any behavior): {measured_any} of {num_rows} "
          f"({100.0 * measured_any / max(num_rows, 1):.2f}%)")
    for column, behavior in enumerate(meta.behaviors):
        measured_values = np.concatenate(per_behavior_measured[column])
        estimates = np.concatenate(per_behavior_estimate[column])
        print(f"{behavior}:")
        print(f"  affinity     {_distribution(affinity[:, column])}")
        print(f"  measured     {len(measured_values)} rows "
              f"({100.0 * len(measured_values) / max(num_rows, 1):.2f}%)  "
              f"{_distribution(measured_values)}")
        print(f"  estimated    {len(estimates)} rows  {_distribution(estimates)}")
