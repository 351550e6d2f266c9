"""``interp diff``: test every neuron of base vs merged on emoji / emoji-free / neutral prompts."""

from __future__ import annotations

import argparse
from pathlib import Path

from interp.stats.classify import CLASSES, ClassifyConfig
from interp.stats.diff import DiffConfig, DiffResult, diff
from interp.stats.interaction import PROMPT_EFFECTS
from interp.stats.loading import PROMPT_SETS, REDUCTIONS, SetSources
from interp.stats.multiple import CORRECTION_ALIASES
from interp.stats.output import refuse_existing

_FLAG_FOR_SET = {"emoji": "emoji", "emoji-free": "twin", "neutral": "neutral"}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "diff",
        help="find the neurons a fine-tune changed (base vs merged activation caches)",
        description="Each model's caches come from a directory holding emoji.h5, emoji-free.h5 and "
        "optionally neutral.h5 (--base-dir/--merged-dir), from one file per prompt set, or both "
        "(files override the directory's).",
    )
    for role in ("base", "merged"):
        parser.add_argument(f"--{role}-dir", type=Path, help=f"directory with the {role} model's caches")
        for name, flag in _FLAG_FOR_SET.items():
            parser.add_argument(f"--{role}-{flag}", type=Path, help=f"{role} model cache on the {name} prompts")
    defaults, classify = DiffConfig(), ClassifyConfig()
    parser.add_argument("--reduction", choices=REDUCTIONS, default=defaults.reduction,
                        help="per-prompt reduction to compare (default: %(default)s)")
    parser.add_argument("--correction", choices=sorted(CORRECTION_ALIASES), default="bh",
                        help="multiple-testing correction across neurons (default: %(default)s)")
    parser.add_argument("--alpha", type=float, default=defaults.alpha, help="q-value threshold (default: %(default)s)")
    parser.add_argument("--prompt-effects", choices=PROMPT_EFFECTS, default=defaults.prompt_effects,
                        help="prompt effects in the interaction OLS (default: %(default)s = paired design)")
    parser.add_argument("--neutral-equal-var", action="store_true",
                        help="pooled-variance OLS for the neutral control instead of Welch's test")
    parser.add_argument("--quiet-quantile", type=float, default=classify.quiet_quantile,
                        help="base mean |act| quantile below which a neuron is quiet (default: %(default)s)")
    parser.add_argument("--fold", type=float, default=classify.fold,
                        help="fold change of mean |act| for amplified/suppressed (default: %(default)s)")
    parser.add_argument("--change-test", choices=("t", "wilcoxon"), default=classify.change_test,
                        help="test deciding a significant change for the classes (default: %(default)s)")
    parser.add_argument("--out", type=Path, required=True, help="neuron table (CSV); the summary goes to OUT.json")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--top", type=int, default=10, help="neurons to list by interaction (default: %(default)s)")
    parser.set_defaults(func=run)


def _sources(args: argparse.Namespace, role: str) -> SetSources:
    """A directory, a mapping of files, or the directory's files overridden by explicit ones."""
    directory: Path | None = getattr(args, f"{role}_dir")
    files = {name: getattr(args, f"{role}_{flag}") for name, flag in _FLAG_FOR_SET.items()}
    files = {name: path for name, path in files.items() if path is not None}
    if directory is None and not files:
        raise ValueError(f"no {role} caches given; pass --{role}-dir DIR or --{role}-emoji and --{role}-twin")
    if not files:
        return directory
    if directory is not None:
        found = {name: directory / f"{name}.h5" for name in PROMPT_SETS if (directory / f"{name}.h5").exists()}
        return {**found, **files}
    return files


def config_from_args(args: argparse.Namespace) -> DiffConfig:
    return DiffConfig(
        reduction=args.reduction,
        correction=args.correction,
        alpha=args.alpha,
        prompt_effects=args.prompt_effects,
        neutral_equal_var=args.neutral_equal_var,
        classify=ClassifyConfig(quiet_quantile=args.quiet_quantile, fold=args.fold, change_test=args.change_test),
    )


def _report(result: DiffResult, top: int) -> None:
    alpha = result.config.alpha
    print(f"neurons      {len(result.table):,}  (quiet below base mean |act| {result.quiet_threshold:.4g})")
    header = f"{'p<' + format(alpha, 'g'):>9}{'q<' + format(alpha, 'g'):>9}{'removed':>9}{'E[false] at p':>15}"
    print(f"{'test':<22}{header}")
    for s in result.corrections:
        print(f"{s.test:<22}{s.n_uncorrected:>9,}{s.n_corrected:>9,}{s.removed_by_correction:>9,}"
              f"{s.expected_false_positives_uncorrected:>15,.0f}")
    counts = result.summary()["counts"]
    print("classes      " + ", ".join(f"{name} {counts[name]:,}" for name in CLASSES))
    if top > 0:
        columns = ["layer", "index", "interaction", "d_interaction", "q_interaction", "change", "log2fc_abs", "class"]
        print(result.top(top)[columns].to_string(index=False, float_format=lambda x: f"{x:.3g}"))


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    refuse_existing(args.out, args.overwrite)  # fail before the computation, not after it
    result = diff(_sources(args, "base"), _sources(args, "merged"), config)
    csv_path, json_path = result.save(args.out, overwrite=args.overwrite)
    _report(result, args.top)
    print(f"wrote        {csv_path} and {json_path}")
    return 0
