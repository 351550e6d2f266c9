"""``interp diff``: test every neuron of base vs merged under a design (default: the reading design of
the behaviour whose caches are given, e.g. emoji / filler-a / filler-b / writing).

Statistics flags come from ``DiffConfig``, ``ClassifyConfig`` and ``OutlierConfig``."""

from __future__ import annotations

import argparse
from pathlib import Path

from typing import TYPE_CHECKING

from interp.configargs import add_config_arguments, config_from_args
from interp.stats.config import ClassifyConfig, DiffConfig, OutlierConfig
from interp.stats.designs import condition_contrast, model_change, reading_design_for

if TYPE_CHECKING:
    from interp.stats.diff import DiffResult

DESIGNS = ("reading", "model-change", "condition-contrast")


def _cache_pair(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected CONDITION=PATH, got {text!r}")
    return name, Path(path)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "diff",
        help="find the neurons a fine-tune changed, and those specific to the behaviour (base vs merged caches)",
        description="Each model's caches come from a directory holding CONDITION.h5 per condition of the design "
        "(--base-dir/--merged-dir), from CONDITION=PATH pairs (--base/--merged), or both (pairs override).",
    )
    for role in ("base", "merged"):
        parser.add_argument(f"--{role}-dir", type=Path, help=f"directory with the {role} model's caches")
        parser.add_argument(f"--{role}", type=_cache_pair, action="append", default=[], metavar="CONDITION=PATH",
                            help=f"one {role} cache (repeatable)")
    parser.add_argument("--design", choices=DESIGNS, default="reading",
                        help="reading: a behaviour's condition (e.g. emoji) / filler-a / filler-b (/ writing); "
                             "model-change: one condition, merged - base; condition-contrast: one model, --condition "
                             "vs --reference (default: reading)")
    parser.add_argument("--condition", default="prompts", help="condition for the generic designs (default: prompts)")
    parser.add_argument("--reference", default="reference", help="reference condition of condition-contrast")
    parser.add_argument("--reduction", default="content_mean", help="reduction of the generic designs (default: content_mean)")
    add_config_arguments(parser, DiffConfig)
    add_config_arguments(parser.add_argument_group("neuron classes"), ClassifyConfig)
    add_config_arguments(parser.add_argument_group("outlier neurons"), OutlierConfig)
    parser.add_argument("--out", type=Path, required=True, help="neuron table (CSV); the summary goes to OUT.json")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--top", type=int, default=10, help="flagged neurons to list (default: %(default)s)")
    parser.set_defaults(func=run)


def _sources(args: argparse.Namespace, role: str) -> Path | dict[str, Path] | None:
    directory: Path | None = getattr(args, f"{role}_dir")
    pairs = dict(getattr(args, role))
    if directory is None:
        return pairs or None
    if not pairs:
        return directory
    found = {path.stem: path for path in directory.glob("*.h5") if not path.name.endswith(".partial.h5")}
    return {**found, **pairs}


def _design(args: argparse.Namespace, merged: object):
    if args.design == "model-change":
        return model_change(args.condition, args.reduction)
    if args.design == "condition-contrast":
        return condition_contrast(args.condition, args.reference, args.reduction)
    names = merged if isinstance(merged, dict) else \
        [p.stem for p in Path(merged).glob("*.h5") if not p.name.endswith(".partial.h5")]
    return reading_design_for(names)


def _report(result: DiffResult, top: int) -> None:
    print(f"neurons      {len(result.table):,}   delta {result.config.delta:g} token SDs, "
          f"{result.config.correction} at {result.config.alpha:g}")
    for name, counts in result.calls().items():
        print(f"  {name:<16}" + ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())))
    placebo = result.placebo()
    if placebo:
        print(f"placebo      {placebo['n_changed']:,} neurons changed ({100 * placebo['share']:.2f}%) vs "
              + ", ".join(f"{k} {v['n_changed']:,}" for k, v in placebo["specific"].items()))
    print("classes      " + ", ".join(f"{name} {n:,}" for name, n in result.counts().items()))
    for r in result.replication:
        print(f"split-half   {r.contrast}: top {r.n_top} of {r.n_flagged_a} chosen on half A keep their sign on "
              f"half B in {100 * r.sign_agreement:.0f}%")
    if top > 0 and result.counts()["flagged"]:
        columns = ["rank", "layer", "index", *[f"{c}_std" for c in result.design.specific], "class"]
        print(result.top(top)[columns].to_string(index=False, float_format=lambda x: f"{x:.3g}"))


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args, DiffConfig, classify=config_from_args(args, ClassifyConfig),
                              outliers=config_from_args(args, OutlierConfig))
    base, merged = _sources(args, "base"), _sources(args, "merged")
    if base is None and merged is None:
        raise ValueError("no caches given; pass --base-dir/--merged-dir or --base/--merged CONDITION=PATH")
    from interp.stats.diff import diff_caches
    from interp.stats.output import refuse_existing

    refuse_existing(args.out, args.overwrite)  # fail before the computation, not after it
    result = diff_caches(base, merged, _design(args, merged), config)
    csv_path, json_path = result.save(args.out, overwrite=args.overwrite)
    _report(result, args.top)
    print(f"wrote        {csv_path} and {json_path}")
    return 0
