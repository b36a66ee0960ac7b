"""``curriculum index``: build a behavior store from shards and probe sets."""

from __future__ import annotations

import argparse
import time

HELP = "Embed every document of the shards, index them in FAISS and score them against probe sets."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``curriculum index``."""
    parser.add_argument("--shards", required=True,
                        help="corpus directory, glob, brace pattern or comma-separated tar files")
    parser.add_argument("--probes", required=True,
                        help="directory of probe sets, one <behavior>.jsonl ({\"text\": ...} a line)")
    parser.add_argument("--out", required=True, help="store directory to create")
    parser.add_argument("--embedder", default="hashed",
                        help="hashed[:dim=256,...] (default, no weights), gpt:CHECKPOINT, hf:DIR, "
                             "sentence-transformers:DIR, grad:CHECKPOINT (gradient features of a "
                             "training checkpoint: documents grouped by their effect on the model)")
    parser.add_argument("--index-factory", default=None,
                        help="FAISS factory string (default: Flat below 1M documents, IVF beyond)")
    parser.add_argument("--behaviors", default=None,
                        help="comma-separated probe sets to use, in column order (default: all, "
                             "sorted)")
    parser.add_argument("--top-k", type=int, default=10,
                        help="affinity = mean of the top-k cosine similarities to probe documents")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing store")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="local: embed in this process; ray: one Ray task per shard (needs "
                             "the ray extra), same store")
    parser.add_argument("--ray-address", default=None,
                        help="Ray cluster to use with --engine ray (auto, ray://HEAD:10001); "
                             "default: start a local Ray")


def run(args: argparse.Namespace) -> int:
    """Build the store and print a one-line summary."""
    from curriculum.store import build_store

    if args.embedder.startswith("grad:"):
        import train.grad_embedder  # noqa: F401 -- registers the grad embedder

    started = time.perf_counter()
    behaviors = [b.strip() for b in args.behaviors.split(",")] if args.behaviors else None
    store = build_store(
        args.shards, args.probes, args.out, embedder=args.embedder,
        index_factory=args.index_factory, show_progress=True, behaviors=behaviors,
        affinity_top_k=args.top_k, overwrite=args.overwrite, engine=args.engine,
        ray_address=args.ray_address,
    )
    seconds = time.perf_counter() - started
    meta = store.meta
    store.close()
    print(f"indexed {meta.num_rows} documents from {meta.num_shards} shards into {args.out} "
          f"in {seconds:.1f}s ({meta.num_rows / max(seconds, 1e-9):.0f} docs/s); embedder "
          f"{meta.embedder['name']} dim {meta.dim}, index {meta.index['factory']}, behaviors "
          f"{', '.join(meta.behaviors)}; engine {args.engine}")
    return 0
