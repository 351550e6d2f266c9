"""``interp regress``: which neurons track a behaviour metric across training checkpoints?"""

from __future__ import annotations

import argparse
from pathlib import Path

from interp.stats.config import CORRECTION_ALIASES, REDUCTIONS, RegressConfig


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "regress",
        help="regress a behaviour metric on each neuron across checkpoints (Newey-West HAC)",
        description="Give the checkpoints in training order, as --caches and --metric lists or as a "
        "--manifest (CSV with header cache,metric, or a JSON list of {cache, metric}).",
    )
    parser.add_argument("--caches", type=Path, nargs="+", help="one activation cache per checkpoint, in order")
    parser.add_argument("--metric", type=float, nargs="+", help="the behaviour metric at each checkpoint")
    parser.add_argument("--manifest", type=Path, help="CSV/JSON listing cache,metric pairs instead")
    defaults = RegressConfig()
    parser.add_argument("--reduction", choices=REDUCTIONS, default=defaults.reduction,
                        help="per-prompt reduction, averaged over prompts (default: %(default)s)")
    parser.add_argument("--maxlags", type=int, default=None,
                        help="HAC lags (default: Newey-West rule floor(4 (T/100)^(2/9)))")
    parser.add_argument("--kernel", choices=("bartlett", "uniform"), default=defaults.kernel,
                        help="HAC kernel (default: %(default)s)")
    parser.add_argument("--use-correction", action="store_true", help="small-sample factor T/(T-2) on the HAC variance")
    parser.add_argument("--use-t", action="store_true", help="t (T-2 df) instead of normal p-values")
    parser.add_argument("--correction", choices=sorted(CORRECTION_ALIASES), default="bh",
                        help="multiple-testing correction across neurons (default: %(default)s)")
    parser.add_argument("--alpha", type=float, default=defaults.alpha, help="q-value threshold (default: %(default)s)")
    parser.add_argument("--compare", type=Path,
                        help="a neuron table from `interp diff` to compare the significant set with")
    parser.add_argument("--compare-class", default="flagged",
                        help="which neurons of --compare: flagged, any (any class), or a class such as activated, "
                             "amplified, suppressed, emoji_specific (default: %(default)s)")
    parser.add_argument("--out", type=Path, required=True, help="per-neuron table (CSV); the summary goes to OUT.json")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--top", type=int, default=10, help="neurons to list (default: %(default)s)")
    parser.set_defaults(func=run)


def _checkpoints(args: argparse.Namespace) -> tuple[list[Path], list[float]]:
    if args.manifest is not None:
        if args.caches or args.metric:
            raise ValueError("pass either --manifest or --caches with --metric, not both")
        from interp.stats.regress import read_manifest

        return read_manifest(args.manifest)
    if not args.caches or not args.metric:
        raise ValueError("pass --caches and --metric (one value per cache), or --manifest")
    if len(args.caches) != len(args.metric):
        raise ValueError(f"{len(args.caches)} caches but {len(args.metric)} metric values; pass one per cache")
    return list(args.caches), list(args.metric)


def diff_neurons(table_csv: Path, class_name: str) -> list[tuple[int, int]]:
    """``(layer, index)`` of the neurons of a diff table in ``class_name`` ("any": any class)."""
    if not table_csv.is_file():
        raise FileNotFoundError(f"neuron table {table_csv} does not exist; write it with `interp diff`")
    import pandas as pd

    table = pd.read_csv(table_csv, keep_default_na=False)
    column = {"any": "class", "flagged": "flagged"}.get(class_name, f"is_{class_name}")
    missing = [name for name in ("layer", "index", column) if name not in table.columns]
    if missing:
        raise ValueError(f"{table_csv} lacks columns {missing}; pass a neuron table written by `interp diff`")
    keep = table[column] != "" if class_name == "any" else table[column].astype(str) == "True"
    rows = table[keep]
    return list(zip(rows["layer"].astype(int).tolist(), rows["index"].astype(int).tolist()))


def run(args: argparse.Namespace) -> int:
    config = RegressConfig(reduction=args.reduction, maxlags=args.maxlags, kernel=args.kernel,
                           use_correction=args.use_correction, use_t=args.use_t,
                           correction=args.correction, alpha=args.alpha)
    caches, metric = _checkpoints(args)
    from interp.stats.output import refuse_existing
    from interp.stats.regress import regress

    refuse_existing(args.out, args.overwrite)
    result = regress(caches, metric, config)
    if args.compare is not None:
        result = result.with_comparison(diff_neurons(args.compare, args.compare_class),
                                        f"{args.compare.name}:{args.compare_class}")
    csv_path, json_path = result.save(args.out, overwrite=args.overwrite)
    s = result.correction
    print(f"checkpoints  {len(caches)}  (HAC maxlags {result.maxlags}, {config.kernel})")
    print(f"neurons      {s.n_tests:,}: {s.n_uncorrected:,} with p < {s.alpha:g}, "
          f"{s.n_corrected:,} with q < {s.alpha:g} "
          f"({s.method}; {s.expected_false_positives_uncorrected:,.0f} expected by chance at p < {s.alpha:g})")
    for overlap in result.comparisons:
        print(f"overlap      {overlap.n_overlap} of {overlap.n_a} significant and {overlap.n_b} in {overlap.name_b} "
              f"(expected {overlap.expected:.1f}, p_enrichment {overlap.p_enrichment:.3g})")
    if args.top > 0:
        columns = ["layer", "index", "slope", "se", "r2", "p", "q"]
        print(result.table.head(args.top)[columns].to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    print(f"wrote        {csv_path} and {json_path}")
    return 0
