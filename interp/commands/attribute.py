"""``interp attribute``: attribution patching of every neuron, checked by exact patching of the top ones."""

from __future__ import annotations

import argparse
import json

from activations import load_model
from interp.causal.attribution import ATTRIBUTION_MODES, AttributionConfig, attribution_patching
from interp.causal.cli_args import add_output_arguments, add_suite_arguments, suite_from_args
from interp.causal.results import check_writable
from interp.causal.suite import EMOJI_MASS


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("attribute", help="estimate every neuron's effect on emoji mass in one backward pass")
    parser.add_argument("--base", required=True, help="receiver model spec (base)")
    parser.add_argument("--merged", default=None, help="donor model spec (merged); needed for --mode patch")
    parser.add_argument("--mode", choices=ATTRIBUTION_MODES, default="patch",
                        help="patch: merged activations into base; zero: zero-ablate neurons of --base (default: patch)")
    parser.add_argument("--check", type=int, default=100, help="top neurons to check by exact patching (default: 100)")
    add_suite_arguments(parser, generation=False, neutral=False)
    add_output_arguments(parser, "output JSON (all scores go to the same path with suffix .csv)")
    parser.set_defaults(func=run, batch_size=4)


def run(args: argparse.Namespace) -> int:
    config = AttributionConfig(mode=args.mode, batch_size=args.batch_size, n_check=args.check)
    check_writable([args.out], args.overwrite)
    if config.mode == "patch" and not args.merged:
        raise ValueError("--mode patch needs --merged (the model whose activations are patched into --base)")
    base = load_model(args.base, device=args.device)
    donor = load_model(args.merged, device=args.device).model if config.mode == "patch" else None
    suite = suite_from_args(args, base.tokenizer)
    result = attribution_patching(base.model, suite.questions, suite.logit_metrics[EMOJI_MASS], config, donor=donor,
                                  models={"base": args.base, "merged": args.merged}, suite=suite.describe())
    path = result.save(args.out, overwrite=args.overwrite)
    check = result.check
    print(json.dumps({"out": str(path), "n_neurons": int(result.scores.scores.size),
                      "seconds_attribution": result.scores.seconds,
                      "spearman_top": check.spearman if check else None,
                      "speedup_extrapolated": check.speedup if check else None}, indent=2))
    return 0
