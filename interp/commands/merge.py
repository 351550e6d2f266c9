"""``interp merge``: fold a trained adapter into its full-precision base model."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("merge", help="merge a LoRA adapter into its base and save the model")
    parser.add_argument("--adapter", required=True, help="adapter folder written by `interp train`")
    parser.add_argument("--out", required=True, help="folder for the merged model (loadable as a model spec)")
    parser.add_argument("--base", help="base model spec (default: the one the adapter was trained on)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from training.merge import merge_adapter

    result = merge_adapter(args.adapter, args.out, base=args.base, overwrite=args.overwrite)
    print(f"merged {args.adapter} into {result.base_spec} (weights {result.base_fingerprint}) "
          f"-> {result.out_dir} (weights {result.merged_fingerprint})")
    return 0
