"""``curriculum report``: a self-contained HTML report of one or more runs."""

from __future__ import annotations

import argparse

HELP = ("Write an HTML report (figures, top documents per behavior, ledger check) of runs or "
        "sweep directories.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``curriculum report``."""
    parser.add_argument("runs", nargs="+", metavar="RUN",
                        help="run directories (metrics.csv, ledger/) or sweep directories "
                             "(sweep.csv); several runs are overlaid in every comparable figure")
    parser.add_argument("--labels", default=None, metavar="CSV",
                        help="labels.csv (key,row,behavior) to count documents by behavior "
                             "(default: each row's behavior of highest affinity in the store)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="report directory (default: RUN/report of the first run)")
    parser.add_argument("--top", type=int, default=8, metavar="N",
                        help="documents listed per behavior and direction (default 8)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars, no summary")


def run(args: argparse.Namespace) -> int:
    """Build the report, print the summary and the page's path."""
    from curriculum.report import ReportError, build_report

    if args.top < 1:
        raise ReportError(f"--top must be >= 1, got {args.top}")
    result = build_report(args.runs, labels=args.labels, out=args.out, top_n=args.top,
                          show_progress=not args.quiet)
    if not args.quiet:
        print(result.summary)
    print(f"report: {result.index}")
    return 0
