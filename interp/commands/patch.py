"""``interp patch``: copy flagged neurons' activations between base and merged (sufficiency, necessity)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from activations import load_model
from interp.causal.cli_args import add_neuron_arguments, add_output_arguments, add_suite_arguments, ranked_from_args, suite_from_args
from interp.causal.patching import RESULT_FILE, PatchingConfig, patching_experiment
from interp.causal.results import GENERATIONS_FILE, check_writable


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("patch", help="patch flagged neurons merged->base (sufficiency) and base->merged (necessity)")
    parser.add_argument("--base", required=True, help="base model spec")
    parser.add_argument("--merged", required=True, help="fine-tuned model spec (merged dir or adapter dir)")
    add_neuron_arguments(parser)
    parser.add_argument("--random-sets", type=int, default=0, help="matched random sets per k and direction (default: 0)")
    add_suite_arguments(parser)
    add_output_arguments(parser, f"output directory ({RESULT_FILE}, {GENERATIONS_FILE})")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    check_writable([out / RESULT_FILE, out / GENERATIONS_FILE], args.overwrite)
    config = PatchingConfig(k_grid=args.top_k, n_random=args.random_sets, seed=args.seed)
    base = load_model(args.base, device=args.device)
    merged = load_model(args.merged, device=args.device)
    ranked, exclude = ranked_from_args(args)
    suite = suite_from_args(args, base.tokenizer)
    result = patching_experiment(base.model, merged.model, base.tokenizer, ranked, suite, config,
                                 exclude=exclude, names=(args.base, args.merged))
    path = result.save(out, overwrite=args.overwrite)
    print(json.dumps({"out": str(path), "base": result.base, "merged": result.merged,
                      "sufficiency_recovered": {p.k: p.sufficiency_recovered for p in result.points},
                      "necessity_recovered": {p.k: p.necessity_recovered for p in result.points}}, indent=2))
    return 0
