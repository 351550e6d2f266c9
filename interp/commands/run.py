"""``interp run``: the whole study in one command (resumable; fresh stages are skipped).

Every study setting is a flag generated from ``interp.study.config.StudyConfig``; ``--quick`` starts
from ``StudyConfig.quick_variant()`` and explicit flags still win."""

from __future__ import annotations

import argparse
import dataclasses

from interp.configargs import add_config_arguments, config_from_args
from interp.study.config import STAGE_NAMES, StudyConfig


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="fine-tune, measure, cache, diff, screen, sweep, suppress and report")
    parser.add_argument("--out", default="reports", help="study directory (default: reports)")
    parser.add_argument("--quick", action="store_true", help="reduced smoke-test settings (labelled in the report)")
    parser.add_argument("--force", action="append", default=[], choices=STAGE_NAMES, metavar="STAGE",
                        help=f"redo this stage even if fresh (repeatable): {', '.join(STAGE_NAMES)}")
    parser.add_argument("--until", choices=STAGE_NAMES, help="stop after this stage")
    parser.add_argument("--skip-plan-check", action="store_true",
                        help="run even when `interp plan` predicts a stage will not fit this machine's memory")
    add_config_arguments(parser.add_argument_group("study settings"), StudyConfig,
                         exclude=("quick", "setup.seed", "screen.seed", "sweep.seed", "where.seed"))
    parser.set_defaults(func=run)


def study_config(args: argparse.Namespace) -> StudyConfig:
    base = StudyConfig().quick_variant() if args.quick else StudyConfig()
    return config_from_args(args, StudyConfig, base=base)


def check_plan(config: StudyConfig) -> None:
    """Refuse, before any stage runs, a study whose stages the planner says will not fit in memory."""
    from interp.plan import preflight

    for stage in ("capture", "attribution", "proxy", "export"):
        problem = preflight(config.model, prompts=config.reading_prompts or 240, batch_size=config.capture_batch,
                            stage=stage)
        if problem:
            raise ValueError(f"{problem}; or pass --skip-plan-check to try anyway")


def run(args: argparse.Namespace) -> int:
    config = study_config(args)
    if not args.skip_plan_check:
        check_plan(config)
    from interp.study.pipeline import run_study

    records = run_study(config, args.out, force=tuple(args.force), until=args.until)
    ran = {name: record for name, record in records.items() if not record.get("skipped")}
    total = sum(record["seconds"] for record in records.values())
    print(f"study finished in {args.out}: {len(ran)} stage(s) run now ({sum(r['seconds'] for r in ran.values()):.0f} s), "
          f"{len(records) - len(ran)} skipped as fresh; recorded stage time {total:.0f} s; open {args.out}/report.html")
    print("settings:", {k: v for k, v in dataclasses.asdict(config).items() if k in ("study", "trait", "model", "quick")})
    return 0
