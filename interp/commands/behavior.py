"""``interp behavior``: how often, how densely and how probably a model uses emojis.

Every option is a flag generated from ``training.behavior.BehaviorConfig``, so its defaults are the
config's (``--trait none`` asks only the neutral prompts)."""

from __future__ import annotations

import argparse

from activations.config import DEFAULT_MODEL
from interp.configargs import add_config_arguments, config_from_args
from training.config import BehaviorConfig


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("behavior", help="measure emoji use on held-out questions and neutral prompts")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model spec (default: {DEFAULT_MODEL})")
    add_config_arguments(parser, BehaviorConfig)
    parser.add_argument("--out", required=True, help="summary JSON; texts go to OUT.generations.jsonl beside it")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args, BehaviorConfig)
    from activations import load_model
    from training.behavior import measure_behavior, save_behavior

    loaded = load_model(args.model)
    result = measure_behavior(loaded.model, loaded.tokenizer, config, model_label=args.model)
    summary, texts = save_behavior(result, args.out, overwrite=args.overwrite)
    print(f"behaviour: {config.behavior}")
    print(f"{'prompts':<22} {'n':>4} {'rate [95% CI]':>24} {'per sent.':>9} {'per resp.':>9} {'target mass':>11}")
    for group in result.groups:
        rate = group.rate
        print(f"{group.name:<22} {group.n_responses:>4} {rate.value:>7.1%} [{rate.low:>6.1%}, {rate.high:>6.1%}] "
              f"{group.sentence_ratio.value:>9.1%} {group.per_response.value:>9.2f} "
              f"{group.mass.value:>11.2e}")
    print(f"summary -> {summary}\ntexts   -> {texts}")
    return 0
