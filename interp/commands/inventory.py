"""``interp inventory``: load a model and print its MLP neuron sites."""

from __future__ import annotations

import argparse
import json

from activations.config import DEFAULT_MODEL


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("inventory", help="print a model's MLP neuron sites and counts")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model spec (default: {DEFAULT_MODEL})")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from activations import load_model, neuron_inventory, neuron_sites

    loaded = load_model(args.model)
    summary = neuron_inventory(loaded.model)
    if args.json:
        print(json.dumps({"model": args.model, **summary}, indent=2))
        return 0
    print(f"model        {args.model} ({summary['architecture']}, model_type={summary['model_type']})")
    print(f"layers       {summary['n_layers']}")
    print(f"neurons      {summary['n_neurons']:,} ({summary['n_layers']} x {summary['d_mlp']})")
    print(f"site         {summary['site']} = input of the MLP output projection")
    for site in neuron_sites(loaded.model)[:3]:
        print(f"  {site.name:<26} {type(site.module).__name__:<10} d_mlp={site.d_mlp}")
    print("  ...")
    return 0
