"""``curriculum shard``: convert JSONL, Parquet or a saved HF dataset into tar shards."""

from __future__ import annotations

import argparse

from curriculum.shards.writer import convert_to_shards

HELP = "Convert JSONL, Parquet or a saved Hugging Face dataset into WebDataset tar shards."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``curriculum shard``."""
    parser.add_argument("input", help=".jsonl, .parquet, or a directory from save_to_disk")
    parser.add_argument("out", help="output directory for shards and manifest")
    parser.add_argument("--text-field", default="text", help="field holding the document text")
    parser.add_argument("--key-field", default=None, help="field to use as the sample key")
    parser.add_argument("--max-docs", type=int, default=10_000, help="documents per shard, at most")
    parser.add_argument("--max-mb", type=float, default=256.0, help="megabytes per shard, at most")
    parser.add_argument("--format", choices=["jsonl", "parquet", "hf"], default=None,
                        help="input format (detected from the path by default)")


def run(args: argparse.Namespace) -> int:
    """Convert and print a summary."""
    paths, manifest = convert_to_shards(
        args.input, args.out, text_field=args.text_field, key_field=args.key_field,
        max_docs_per_shard=args.max_docs, max_bytes_per_shard=args.max_mb * 1e6,
        input_format=args.format, show_progress=True,
    )
    print(f"wrote {manifest.num_rows} documents in {len(paths)} shards to {args.out}")
    return 0
