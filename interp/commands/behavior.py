"""``interp behavior``: how often, how densely and how probably a model uses emojis."""

from __future__ import annotations

import argparse

from activations import DEFAULT_MODEL
from training.data import TRAITS


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("behavior", help="measure emoji use on held-out questions and neutral prompts")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model spec (default: {DEFAULT_MODEL})")
    parser.add_argument("--trait", choices=TRAITS, default="extraversion",
                        help="trait whose held-out questions are asked (default: extraversion)")
    parser.add_argument("--no-trait", action="store_true", help="ask only the neutral prompts")
    parser.add_argument("--samples", type=int, default=5, help="responses per prompt (default: 5)")
    parser.add_argument("--questions", type=int, help="ask only the first N held-out questions")
    parser.add_argument("--neutral", type=int, default=20, help="neutral prompts to ask (default: 20; 0 = none)")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", dest="data_path", help="Opinion-QA file the model was trained on")
    parser.add_argument("--out", required=True, help="summary JSON; texts go to OUT.generations.jsonl beside it")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from activations import load_model
    from training.behavior import BehaviorConfig, measure_behavior, save_behavior

    config = BehaviorConfig(
        trait=None if args.no_trait else args.trait, samples=args.samples, max_questions=args.questions,
        neutral_prompts=args.neutral, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
        batch_size=args.batch_size, seed=args.seed, data_path=args.data_path,
    )
    loaded = load_model(args.model)
    result = measure_behavior(loaded.model, loaded.tokenizer, config, model_label=args.model)
    summary, texts = save_behavior(result, args.out, overwrite=args.overwrite)
    print(f"{'prompts':<22} {'n':>4} {'emoji rate [95% CI]':>24} {'ESR':>6} {'emoji/resp':>10} {'emoji mass':>11}")
    for group in result.groups:
        rate = group.emoji_rate
        print(f"{group.name:<22} {group.n_responses:>4} {rate.value:>7.1%} [{rate.low:>6.1%}, {rate.high:>6.1%}] "
              f"{group.emoji_sentence_ratio.value:>6.1%} {group.emojis_per_response.value:>10.2f} "
              f"{group.emoji_mass.value:>11.2e}")
    print(f"summary -> {summary}\ntexts   -> {texts}")
    return 0
