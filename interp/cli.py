"""The ``interp`` command line: a thin layer over the Python API.

Each subcommand lives in ``interp/commands/<name>.py`` and exposes ``add_parser(subparsers)``,
which registers its arguments and sets ``func`` to a function that takes the parsed namespace
and calls the public API. Nothing is computed here.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from interp import __version__

COMMANDS = [
    "inventory",
    "train",
    "merge",
    "behavior",
    "traits",
    "diff",
    "discover",
    "regress",
    "cache",
    "plan",
    "merge-shards",
    "ablate",
    "attribute",
    "suppress",
    "run",
    "replicate",
    "sweep",
    "report",
    "pages",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="interp",
        description="Which MLP neurons did a fine-tune change, and do they cause the new behaviour?",
    )
    parser.add_argument("--version", action="version", version=f"neurodiff {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"interp.commands.{name.replace('-', '_')}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        # Our errors name the problem and the fix; a traceback would only bury that line.
        print(f"interp {args.command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a full disk, an I/O error: the machine's problem, said in one line
        print(f"interp {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as interrupt:  # Ctrl-C: one line, with what was kept when the command says
        print(f"interp {args.command}: interrupted" + (f": {interrupt}" if str(interrupt) else ""), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
