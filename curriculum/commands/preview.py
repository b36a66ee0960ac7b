"""``curriculum preview``: simulate a curriculum policy over a behavior store, without training."""

from __future__ import annotations

import argparse
import importlib

HELP = "Simulate a policy over a store: per stage, what is emitted, deferred and dropped, and when."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``curriculum preview``."""
    parser.add_argument("--policy", required=True,
                        help="policy YAML file, or a built-in name (values_first, uniform, "
                             "threshold_filter, bandit)")
    parser.add_argument("--store", required=True, help="behavior store directory")
    parser.add_argument("--steps", type=int, default=None,
                        help="optimizer steps to simulate (default: until one pass over the "
                             "store is done and every deferred document has come back)")
    parser.add_argument("--docs-per-step", type=int, default=32,
                        help="documents emitted per optimizer step (global batch size)")
    parser.add_argument("--tokens-per-doc", type=int, default=512,
                        help="tokens counted per emitted document, for token-based stage exits")
    parser.add_argument("--labels", default=None,
                        help="labels.csv (key,row,behavior) to group documents by; default: "
                             "the behavior of highest affinity")
    parser.add_argument("--plot", default=None, metavar="FILE.png",
                        help="also draw emitted, deferred and mean weights over steps")
    parser.add_argument("--import", dest="imports", action="append", default=[],
                        metavar="MODULE",
                        help="import a module first (one that registers a custom policy type)")


def run(args: argparse.Namespace) -> int:
    """Load the store and the policy, simulate, print the report."""
    from curriculum.store import BehaviorStore
    from policies import load_policy
    from policies.preview import plot_preview, preview_policy

    for module in args.imports:
        importlib.import_module(module)
    store = BehaviorStore.open(args.store, readonly=True)  # no FAISS needed to read scores
    policy = load_policy(args.policy, store)
    result = preview_policy(policy, store, steps=args.steps, docs_per_step=args.docs_per_step,
                            tokens_per_doc=args.tokens_per_doc, labels=args.labels)
    print(result.format())
    if args.plot:
        path = plot_preview(result, args.plot)
        print(f"plot written to {path}")
    return 0
