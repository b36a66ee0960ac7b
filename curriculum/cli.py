"""The ``curriculum`` command line: one subcommand per module in :mod:`curriculum.commands`.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) ->
int``. Errors a user can fix (bad input, a missing file) are raised as :class:`UserError` or a
``ValueError`` subclass and printed as one line with a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: Subcommands in the order ``--help`` lists them; each is the module
#: ``curriculum/commands/<name>.py``. To add a command, write its module and add its name here
#: (registration point: a listed name without a module is an error, never silently skipped).
COMMANDS: tuple[str, ...] = (
    "demo", "synth", "shard", "index", "store", "fit", "resume", "sweep", "preview", "ledger",
    "report", "curate",
)


class UserError(Exception):
    """A problem with the user's input; printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="curriculum",
        description="Curriculum-scheduled pre-training driven by attributed behavior.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"curriculum.commands.{name}")
        sub = subparsers.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``curriculum`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("curriculum: interrupted", file=sys.stderr)
        return 130
    except (UserError, ValueError, OSError, ImportError) as error:
        print(f"curriculum {args.command}: error: {one_line(error)}", file=sys.stderr)
        return 2


def one_line(error: BaseException) -> str:
    """The first line of an error's message; for one re-raised from a DataLoader worker (whose
    message is "Caught ... in DataLoader worker ..." and the worker's traceback), the worker's
    own message, which names the file or URL."""
    text = str(error)
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        prefix, separator, rest = last.partition(": ")
        text = rest if separator and prefix.endswith(type(error).__name__) else last
    lines = text.splitlines()
    return lines[0] if lines and lines[0] else type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
