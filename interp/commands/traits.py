"""``interp traits``: score a model's Big-Five traits with the inventory (``training.inventory``).

Every option is a flag generated from ``training.inventory.InventoryConfig``."""

from __future__ import annotations

import argparse

from activations.config import DEFAULT_MODEL
from activations.atomic_io import refuse_existing, write_json_atomic
from interp.configargs import add_config_arguments, config_from_args
from training.config import InventoryConfig


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("traits", help="Big-Five inventory scored from the model's own answer probabilities")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model spec (default: {DEFAULT_MODEL})")
    parser.add_argument("--items", default=None, help="inventory CSV (text, trait, key); default: the project's 60 items")
    add_config_arguments(parser, InventoryConfig)
    parser.add_argument("--out", default=None, help="also write the scores and per-item values as JSON")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args, InventoryConfig)
    if args.out:
        refuse_existing(args.out, args.overwrite)
    from activations import load_model
    from training.inventory import load_inventory, score_inventory

    items = load_inventory(args.items)
    loaded = load_model(args.model)
    result = score_inventory(loaded.model, loaded.tokenizer, items, config)
    unit = "1..5" if config.response == "likert" else "keyed log-odds of agreeing"
    print(f"{'trait':<18} {'score':>7} {'95% CI':>18} {'items':>5}   ({config.response}: {unit}; "
          f"answer mass {result.answer_mass:.2f})")
    for score in result.scores.values():
        print(f"{score.trait:<18} {score.mean:>7.3f} [{score.low:>7.3f}, {score.high:>7.3f}] {score.n_items:>5}")
    if args.out:
        write_json_atomic(args.out, result.to_dict())
        print(f"wrote {args.out}")
    return 0
