"""``curriculum curate``: assess documents against principles with a judge; filter, revise, keep."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "Curate shards by principles: a judge scores each document 0-100; filter, revise or keep."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``curriculum curate``."""
    parser.add_argument("--shards", required=True,
                        help="corpus directory, glob, brace pattern or comma-separated tar files")
    parser.add_argument("--principles", required=True,
                        help="principle YAML file, directory of them, or comma-separated files")
    parser.add_argument("--judge", required=True,
                        help="openai:URL (OpenAI-compatible server), hf:DIR (local model) or "
                             "probe:STORE (affinity baseline, offline)")
    parser.add_argument("--out", required=True, help="output directory (shards, ledger, cache)")
    parser.add_argument("--judge-model", default=None,
                        help="model name on the openai: server (default: its only model)")
    parser.add_argument("--store", default=None,
                        help="also write each principle's scores into this store as "
                             "assess.<principle>")
    parser.add_argument("--limit", type=int, default=None, help="curate only the first N rows")
    parser.add_argument("--dry-run", action="store_true",
                        help="assess a sample only; print the threshold table and the cost "
                             "estimate for the corpus")
    parser.add_argument("--sample", type=int, default=200,
                        help="rows assessed by --dry-run and --distill (default 200)")
    parser.add_argument("--distill", action="store_true",
                        help="assess --sample rows, fit a regressor on the store's embeddings, "
                             "score every row into --store and report held-out agreement")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="requests in flight to an openai: judge (default 16)")
    parser.add_argument("--timeout-s", type=float, default=60.0,
                        help="seconds per request before it is retried (default 60)")
    parser.add_argument("--max-retries", type=int, default=4,
                        help="retries of a failed request, with exponential backoff (default 4)")
    parser.add_argument("--score-attempts", type=int, default=3,
                        help="requests an unreadable answer gets before it is unscored")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="documents per batch for hf: and probe: judges")
    parser.add_argument("--max-revision-tokens", type=int, default=None,
                        help="cap on a revision's tokens (default: about 1.5x the document)")
    parser.add_argument("--max-docs", type=int, default=10_000,
                        help="documents per output shard, at most")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="ray: judge the chunks in Ray actors, one judge per worker "
                             "(same output; needs the ray extra)")
    parser.add_argument("--ray-address", default=None,
                        help="Ray cluster to join (auto, ray://HEAD:10001); default a local Ray")
    parser.add_argument("--ray-workers", type=int, default=None,
                        help="Ray actors, each with its own judge (default: the cluster's CPUs)")


def _judge_spec(args: argparse.Namespace):
    from curriculum.curation import JudgeSpec

    return JudgeSpec(args.judge, model=args.judge_model, concurrency=args.concurrency,
                     timeout_s=args.timeout_s, max_retries=args.max_retries,
                     score_attempts=args.score_attempts, batch_size=args.batch_size,
                     max_revision_tokens=args.max_revision_tokens)


def _sampled(args: argparse.Namespace, principles, judge, manifest):
    from curriculum.curation.sampling import assess_sample, evenly_spaced_rows

    rows_total = manifest.num_rows if args.limit is None else min(args.limit, manifest.num_rows)
    rows = evenly_spaced_rows(rows_total, max(1, args.sample))
    return rows_total, assess_sample(manifest, rows, principles, judge, Path(args.out) / "cache",
                                     show_progress=True)


def run(args: argparse.Namespace) -> int:
    """Run the curation (or the dry run / distillation) and print the counts."""
    from curriculum.cli import UserError
    from curriculum.curation import curate, load_principles
    from curriculum.shards.manifest import manifest_for

    if args.limit is not None and args.limit < 0:
        raise UserError(f"--limit must be >= 0, got {args.limit}")
    if args.distill and not args.store:
        raise UserError("--distill needs --store (its embeddings are the features)")
    principles = load_principles(args.principles)
    manifest = manifest_for(args.shards)
    if args.ray_workers is not None and args.ray_workers < 1:
        raise UserError(f"--ray-workers must be >= 1, got {args.ray_workers}")
    spec = _judge_spec(args)
    if args.dry_run or args.distill:
        judge = spec.build()  # a sample is small: assessed here, whatever the engine
        rows_total, sample = _sampled(args, principles, judge, manifest)
        if args.dry_run:
            from curriculum.curation.estimate import estimate_cost

            print(estimate_cost(sample, principles, rows_total).format())
            return 0
        from curriculum.curation.distill import distill

        reports, _ = distill(args.store, sample, principles)
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "distill.json").write_text(
            json.dumps([r.to_dict() for r in reports], indent=1) + "\n")
        for r in reports:
            print(f"distilled assess.{r.principle} into {args.store}: held-out Spearman "
                  f"{r.spearman:.3f}, precision {r.precision:.3f} / recall {r.recall:.3f} at "
                  f">= {r.threshold:g} ({r.judge_positives} judge positives of {r.test_rows}; "
                  f"trained on {r.train_rows})")
        return 0
    result = curate(manifest, principles, spec, args.out, store=args.store, limit=args.limit,
                    max_docs_per_shard=args.max_docs, show_progress=True, engine=args.engine,
                    ray_address=args.ray_address, ray_workers=args.ray_workers)
    print(result.counts.table())
    print(f"wrote {result.output_docs:,} documents in {len(result.shard_paths)} shards to "
          f"{Path(args.out) / 'shards'}; {result.docs_per_s:,.0f} docs/s; judge requests "
          f"{result.judge.requests:,}, cached {result.judge.cached:,}"
          + (f"; assess.* written for {result.store_rows:,} store rows" if args.store else "")
          + (f"; engine {result.extra['engine']}" if "engine" in result.extra else ""))
    return 0
