"""``interp merge-shards OUT``: merge the shards a distributed capture left (``activations.shards``).

``interp cache`` under torchrun merges by itself; this is for shards captured separately (e.g. one
job per node) or a merge that was interrupted."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("merge-shards", help="merge OUT.shard-R-of-N.h5 files into one cache OUT")
    parser.add_argument("out", help="the cache to write; its shards are OUT.shard-R-of-N.h5 beside it")
    parser.add_argument("--shards", nargs="+", default=None, help="shard files (default: found beside OUT)")
    parser.add_argument("--keep-shards", action="store_true", help="keep the shard files after the merge")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from activations.shards import merge_shards

    with merge_shards(args.out, args.shards, overwrite=args.overwrite, keep_shards=args.keep_shards) as cache:
        print(f"wrote {cache.path}: {len(cache)} prompts x {len(cache.layers)} layers x {cache.d_mlp} neurons")
    return 0
