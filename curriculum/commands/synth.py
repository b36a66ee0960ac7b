"""``curriculum synth``: write a synthetic behavior corpus."""

from __future__ import annotations

import argparse

from curriculum.synth import PROFILES, write_synthetic_corpus
from curriculum.traps import DEFAULT_TRAP_GUESTS, TrapSpec, parse_trap_guests

HELP = "Generate a seeded synthetic behavior corpus as WebDataset shards, with probe sets."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``curriculum synth``."""
    parser.add_argument("out", help="output directory")
    parser.add_argument("--docs", type=int, default=4000, help="number of documents")
    parser.add_argument("--shards", type=int, default=4, help="number of shards")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="default",
                        help="category mix: default, or aligned (values-heavy, no situational "
                             "awareness)")
    parser.add_argument("--probe-docs", type=int, default=64, help="probe documents per behavior")
    parser.add_argument("--trap-share", type=float, default=0.0,
                        help="fraction of documents made traps: values stories carrying a few "
                             "sentences of another behavior (labelled trap_<behavior>)")
    default_guests = ",".join(f"{k}:{v:g}" for k, v in DEFAULT_TRAP_GUESTS.items())
    parser.add_argument("--trap-guests", default=default_guests,
                        help=f"behaviors planted in traps, with relative shares ({default_guests})")


def run(args: argparse.Namespace) -> int:
    """Write the corpus and print where it went."""
    try:
        traps = TrapSpec(args.trap_share, guests=parse_trap_guests(args.trap_guests))
    except ValueError as error:
        raise SystemExit(f"curriculum synth: {error}") from None
    result = write_synthetic_corpus(
        args.out, num_docs=args.docs, num_shards=args.shards, seed=args.seed,
        profile=args.profile, probe_docs_per_behavior=args.probe_docs, show_progress=True,
        traps=traps if traps.share else None,
    )
    print(f"wrote {result.num_docs} documents in {len(result.shard_paths)} shards to "
          f"{result.out_dir}; probes in {result.probes_dir}; labels in {result.labels_path}")
    return 0
