"""``interp run``: the whole study in one command (resumable; finished stages are skipped)."""

from __future__ import annotations

import argparse
import dataclasses

from activations import DEFAULT_MODEL
from interp.study.config import StudyConfig
from interp.study.pipeline import STAGE_NAMES, run_study


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="fine-tune, measure, cache, diff, ablate, patch and report")
    parser.add_argument("--study", choices=("injection", "personality"), default="injection",
                        help="injection = answers with emojis (positive control); personality = the paper's "
                             "emoji-free answers (default: injection)")
    parser.add_argument("--trait", default="extraversion", help="Big-Five trait (default: extraversion)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"base model spec (default: {DEFAULT_MODEL})")
    parser.add_argument("--out", default="reports", help="study directory (default: reports)")
    parser.add_argument("--quick", action="store_true", help="reduced smoke-test settings (labelled in the report)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="append", default=[], choices=STAGE_NAMES, metavar="STAGE",
                        help=f"redo this stage even if finished (repeatable): {', '.join(STAGE_NAMES)}")
    parser.add_argument("--until", choices=STAGE_NAMES, help="stop after this stage")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = StudyConfig(study=args.study, trait=args.trait, model=args.model, seed=args.seed)
    if args.quick:
        config = config.quick_variant()
    records = run_study(config, args.out, force=tuple(args.force), until=args.until)
    ran = {name: record for name, record in records.items() if not record.get("skipped")}
    total = sum(record["seconds"] for record in records.values())
    print(f"study finished in {args.out}: {len(ran)} stage(s) run now ({sum(r['seconds'] for r in ran.values()):.0f} s), "
          f"{len(records) - len(ran)} skipped as finished; recorded stage time {total:.0f} s; open {args.out}/report.html")
    print("settings:", {k: v for k, v in dataclasses.asdict(config).items() if k in ("study", "trait", "model", "quick")})
    return 0
