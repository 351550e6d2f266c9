"""``interp replicate``: the whole study once per training seed, and which findings hold in every seed.

Study settings are the flags of ``interp run`` (generated from ``StudyConfig``), except ``--seed``:
``--seeds 0,1,2`` lists the seeds. Each seed's study lives in ``OUT/seed-N`` and resumes like ``interp
run``; ``OUT/replication.md`` and ``OUT/replication.json`` compare them (``interp.study.replicate``)."""

from __future__ import annotations

import argparse

from interp.commands.run import study_config
from interp.configargs import add_config_arguments
from interp.study.config import STAGE_NAMES, StudyConfig


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes comma-separated integers, e.g. 0,1,2; got {text!r}") from None
    return seeds


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("replicate", help="the study once per training seed, compared across seeds")
    parser.add_argument("--out", default="replication", help="directory of the per-seed studies (default: replication)")
    parser.add_argument("--seeds", type=_seeds, default=(0, 1, 2), help="comma-separated training seeds (default: 0,1,2)")
    parser.add_argument("--quick", action="store_true", help="reduced smoke-test settings for every seed")
    parser.add_argument("--force", action="append", default=[], choices=STAGE_NAMES, metavar="STAGE",
                        help="redo this stage in every seed even if fresh (repeatable)")
    add_config_arguments(parser.add_argument_group("study settings"), StudyConfig,
                         exclude=("quick", "seed", "setup.seed", "screen.seed", "sweep.seed"))
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = study_config(args)
    from interp.study.replicate import replicate

    result = replicate(config, args.out, args.seeds, force=tuple(args.force))
    print(result.markdown())
    print(f"wrote {args.out}/replication.md and {args.out}/replication.json")
    return 0
