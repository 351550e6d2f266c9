"""``interp cache``: record a model's MLP neurons on a prompt set into an HDF5 activation cache.

Every capture option is a flag generated from ``activations.capture.CaptureConfig``. Under
``torchrun --nproc-per-node N`` (or ``accelerate launch``) each process captures its block of
batches into a shard and rank 0 merges them into ``--out`` (``activations.shards``)."""

from __future__ import annotations

import argparse

from activations.atomic_io import refuse_existing
from activations.config import DEFAULT_MODEL, CaptureConfig
from activations.prompt_sets import BUILTIN_SETS, load_prompt_set
from interp.configargs import add_config_arguments, config_from_args
from interp.plan import preflight


def parse_layers(text: str) -> tuple[int, ...]:
    """``"0,1,5-9"`` -> ``(0, 1, 5, 6, 7, 8, 9)``."""
    layers: list[int] = []
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            first, _, last = part.partition("-")
            layers.extend(range(int(first), int(last or first) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--layers {text!r} is not a list like 0,1,5-9") from None
    if not layers:
        raise argparse.ArgumentTypeError(f"--layers {text!r} names no layer; use a list like 0,1,5-9")
    return tuple(layers)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("cache", help="record MLP neuron activations on a prompt set into HDF5")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model spec (default: {DEFAULT_MODEL})")
    parser.add_argument("--prompts", required=True,
                        help=f"built-in set ({', '.join(BUILTIN_SETS)}) or a .txt/.jsonl/.csv file")
    parser.add_argument("--out", required=True, help="output file, e.g. acts.h5")
    parser.add_argument("--layers", type=parse_layers, default=None,
                        help="layers to record, e.g. 0,1,5-9 (default: all)")
    add_config_arguments(parser, CaptureConfig, exclude=("layers",))
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument("--device", default=None,
                        help="torch device (default: cpu; under torchrun with GPUs, each rank's own GPU)")
    parser.add_argument("--skip-plan-check", action="store_true",
                        help="capture even when `interp plan` predicts more memory than the machine has available")
    parser.add_argument("--keep-shards", action="store_true",
                        help="under torchrun: keep each rank's shard file after the merge")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args, CaptureConfig, layers=args.layers)
    refuse_existing(args.out, args.overwrite)  # before the model load, which is the slow part
    prompts = load_prompt_set(args.prompts)  # an empty file or a missing column fails before torch loads
    problem = None if args.skip_plan_check else preflight(args.model, prompts=len(prompts), batch_size=config.batch_size,
                                                          store_tokens=config.store_tokens, device=args.device or "cpu")
    if problem:  # before the load that would be killed for memory half-way through
        raise ValueError(f"{problem}; or pass --skip-plan-check to try anyway")
    from activations import distributed, load_model
    from activations.shards import distributed_capture

    world = distributed.init()  # world size 1 unless launched by torchrun / accelerate
    loaded = load_model(args.model, device=args.device or distributed.device_for(world))
    with distributed_capture(loaded, None, prompts, args.out, config=config, overwrite=args.overwrite,
                             keep_shards=args.keep_shards) as cache:
        if not world.is_main:
            return 0
        print(f"wrote {cache.path}: {len(cache)} prompts x {len(cache.layers)} layers x {cache.d_mlp} neurons "
              f"({', '.join(cache.reductions)})")
    return 0
