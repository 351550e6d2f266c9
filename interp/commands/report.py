"""``interp report DIR``: rebuild a study's report from its stage outputs (no recomputation; refused
when a stage is stale)."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("report", help="rebuild report.html/.md and summary.json of a study directory")
    parser.add_argument("dir", help="study directory written by `interp run`")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from interp.study.pipeline import rebuild_report

    for path in rebuild_report(args.dir):
        print(path)
    return 0
