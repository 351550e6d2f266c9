"""``interp sweep``: every trait fine-tuned on each study's rows and prompted with them, side by side.

Every setting is a flag generated from ``interp.sweep.config.TraitSweepConfig``; the sweep resumes like
``interp run`` (fresh stages are skipped, changed ones rerun)."""

from __future__ import annotations

import argparse

from interp.configargs import add_config_arguments, config_from_args
from interp.sweep.config import TraitSweepConfig


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("sweep", help="five traits x {personality, injection}: emoji use and trait scores "
                                                 "of base, fine-tuned and prompted models, and their neuron overlap")
    parser.add_argument("--out", default="reports/sweep", help="sweep directory (default: reports/sweep)")
    parser.add_argument("--force", action="append", default=[], metavar="STAGE",
                        help="redo this stage even if fresh (repeatable), e.g. report or train-personality-openness")
    add_config_arguments(parser.add_argument_group("sweep settings"), TraitSweepConfig)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from interp.sweep.pipeline import run_sweep

    config = config_from_args(args, TraitSweepConfig)
    records = run_sweep(config, args.out, force=tuple(args.force))
    ran = [record for record in records.values() if not record.get("skipped")]
    total = sum(record["seconds"] for record in records.values())
    print(f"sweep finished in {args.out}: {len(ran)} stage(s) run now ({sum(r['seconds'] for r in ran):.0f} s), "
          f"{len(records) - len(ran)} skipped as fresh; recorded stage time {total / 60:.1f} min; "
          f"open {args.out}/report.html")
    return 0
