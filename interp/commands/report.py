"""``interp report DIR``: rebuild a study's report from its stage outputs (no recomputation)."""

from __future__ import annotations

import argparse

from interp.report.build import build_report


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("report", help="rebuild report.html/.md and summary.json of a study directory")
    parser.add_argument("dir", help="study directory written by `interp run`")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for path in build_report(args.dir):
        print(path)
    return 0
