"""``curriculum ledger``: check that a run accounted for every row, or summarize its fates."""

from __future__ import annotations

import argparse

HELP = "Check a run's ledger (every row accounted for once per epoch) or summarize its fates."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``curriculum ledger``."""
    parser.add_argument("run", metavar="RUN", help="run directory (holds ledger/)")
    parser.add_argument("--check", action="store_true",
                        help="verify the accounting invariant; exit 1 and list problems if it fails")
    parser.add_argument("--rows", type=int, default=None, metavar="N",
                        help="rows in the corpus (default: ledger/meta.json's num_rows)")
    parser.add_argument("--summary", action="store_true",
                        help="print event counts by stage and behavior, and drop/skip reasons")
    parser.add_argument("--labels", default=None, metavar="CSV",
                        help="labels.csv (key,row,behavior) to count by behavior; default: all")
    parser.add_argument("--max-problems", type=int, default=20, metavar="N",
                        help="problems to list when the check fails (default 20)")


def run(args: argparse.Namespace) -> int:
    """Run the check and/or print the summary; exit 1 when the check fails."""
    from curriculum.ledger import LedgerError, check_ledger, summarize_ledger

    if not (args.check or args.summary):
        raise LedgerError("say what to do: --check, --summary, or both")
    if args.rows is not None and args.rows < 0:
        raise LedgerError(f"--rows must be >= 0, got {args.rows}")
    status = 0
    if args.check:
        result = check_ledger(args.run, num_rows=args.rows, max_problems=args.max_problems)
        print(result.summary_line())
        for problem in result.problems:
            print(f"  {problem}")
        if result.num_problems > len(result.problems):
            print(f"  ... and {result.num_problems - len(result.problems):,} more")
        for note in result.notes:
            print(f"note: {note}")
        status = 0 if result.ok else 1
        status = max(status, _check_selection(args.run))
    if args.summary:
        print(summarize_ledger(args.run, behavior_of_row=args.labels).format())
    return status


def _check_selection(run: str) -> int:
    """In-batch selection's ledger, when the run has one: 0 when it accounts for every row."""
    from curriculum.ledger.selection import check_selection

    result = check_selection(run)
    if result is None:
        return 0
    print(result.summary_line())
    for problem in result.problems:
        print(f"  {problem}")
    return 0 if result.ok else 1
