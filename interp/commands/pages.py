"""``interp pages DIR``: write a study's neuron pages (an index of the neurons that matter and a page per
neuron) into DIR/pages, or --out."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("pages", help="write the neuron pages (static HTML) of a study directory")
    parser.add_argument("dir", help="study directory written by `interp run`")
    parser.add_argument("--out", default=None, help="folder for the pages (default: DIR/pages)")
    parser.add_argument("--flagged", type=int, default=200, help="top flagged neurons to list (default 200)")
    parser.add_argument("--screen", type=int, default=100, help="screen's top neurons to list (default 100)")
    parser.add_argument("--per-class", type=int, default=50, help="top neurons of each class (default 50)")
    parser.add_argument("--examples", type=int, default=3, help="top examples per model and neuron (default 3)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from interp.pages import IndexLimits, build_pages

    result = build_pages(args.dir, args.out, IndexLimits(args.flagged, args.screen, args.per_class), args.examples)
    print(result.index)
    return 0
