"""``interp ablate``: screen, then sweep the rankings and interventions against matched random sets.

The same function as the study's causal stage (``interp.causal.experiment.run_causal``): the study's
settings give the study's numbers. Flags come from ``CausalSetup``, ``ScreenConfig`` and ``SweepConfig``.
Under ``torchrun --nproc-per-node N`` every condition's neuron sets are split across the ranks, one
model replica each; rank 0 writes the (identical) gathered results."""

from __future__ import annotations

import argparse
from pathlib import Path

from activations.atomic_io import refuse_existing
from activations.behaviors import Behavior
from interp.causal.config import CausalSetup, ScreenConfig, SweepConfig
from interp.commands.attribute import add_causal_inputs
from interp.configargs import add_config_arguments, config_from_args


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("ablate", help="top-k sets of each ranking under mean / zero / resample ablation "
                                                  "and base-value patching, against matched random sets")
    add_causal_inputs(parser)
    add_config_arguments(parser.add_argument_group("screen"), ScreenConfig, prefix="screen-", exclude=("seed",))
    add_config_arguments(parser.add_argument_group("sweep"), SweepConfig, exclude=("seed",))
    parser.add_argument("--out", required=True, type=Path, help="output directory (screen.json, screen.csv, sweep.json)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    paths = [args.out / "screen.json", args.out / "screen.csv", args.out / "sweep.json"]
    refuse_existing(paths, args.overwrite)
    seed = args.seed
    configs = (config_from_args(args, CausalSetup, seed=seed),
               config_from_args(args, ScreenConfig, prefix="screen-", seed=seed),
               config_from_args(args, SweepConfig, seed=seed))
    Behavior.parse(args.behavior)  # a bad spec fails before torch loads
    from activations import distributed
    from interp.causal.experiment import run_causal

    world = distributed.init()  # under torchrun the conditions are split across ranks (measure_sets)
    result = run_causal(args.merged, args.base, args.neurons, args.writing, args.behavior, *configs)
    if not world.is_main:  # every rank holds the same gathered results; one writes them
        return 0
    result.screen.save(paths[0], overwrite=args.overwrite)
    result.sweep.save(paths[2], overwrite=args.overwrite)
    choice = result.sweep.choice
    print(f"suppressor choice: {choice['ranking']} top {choice['k']} ({choice['intervention']}), proxy "
          f"{choice['metrics']}; target met: {choice['met_target']}; random sets beaten: {result.sweep.random_beaten}")
    print(f"wrote {args.out}")
    return 0
