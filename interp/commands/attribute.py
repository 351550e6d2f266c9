"""``interp attribute``: screen every neuron in the necessity direction and check it exactly.

Flags come from ``CausalSetup`` and ``ScreenConfig``."""

from __future__ import annotations

import argparse
from pathlib import Path

from activations.atomic_io import refuse_existing
from activations.behaviors import Behavior
from activations.config import DEFAULT_MODEL
from interp.causal.config import CausalSetup, ScreenConfig
from interp.configargs import add_config_arguments, config_from_args


def add_causal_inputs(parser: argparse.ArgumentParser) -> None:
    """The files every causal command reads (``interp.causal.setup``)."""
    parser.add_argument("--merged", required=True, help="the fine-tuned (merged) model: a folder or a spec")
    parser.add_argument("--base", default=None, help="the model it was fine-tuned from (default: the base the merged "
                        f"folder records in provenance.json or its adapter files, else {DEFAULT_MODEL})")
    parser.add_argument("--neurons", required=True, type=Path, help="neurons.csv from `interp diff`")
    parser.add_argument("--writing", required=True, type=Path,
                        help="the merged model's own replies to training questions (JSONL of id, question, text; "
                             "the study writes behavior/writing.jsonl)")
    parser.add_argument("--behavior", default="emoji",
                        help="what the fine-tune taught: emoji, stage-directions, regex:PATTERN or tokens:FILE "
                             "(default: emoji)")
    add_config_arguments(parser.add_argument_group("shared causal inputs"), CausalSetup, exclude=("seed",))
    parser.add_argument("--seed", type=int, default=0, help="seed of the donor pool, random samples and sets (default: 0)")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("attribute", help="screen every neuron (attribution patching, necessity direction) "
                                                     "and check it by exact patching")
    add_causal_inputs(parser)
    add_config_arguments(parser.add_argument_group("screen"), ScreenConfig, exclude=("seed",))
    parser.add_argument("--out", required=True, type=Path, help="screen.json (every neuron's estimates go to .csv)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    refuse_existing([args.out, args.out.with_suffix(".csv")], args.overwrite)
    setup = config_from_args(args, CausalSetup, seed=args.seed)
    screen_config = config_from_args(args, ScreenConfig, seed=args.seed)
    behavior = Behavior.parse(args.behavior)  # the flags fail before torch loads
    from activations import load_model
    from activations.models import default_base
    from interp.causal.screen import screen
    from interp.causal.setup import causal_context, read_writing_replies
    from interp.interventions.neuron_set import read_neuron_table

    writing = read_writing_replies(args.writing, behavior)  # before the models load: a bad behaviour fails at once
    merged, base = load_model(args.merged), load_model(args.base or default_base(args.merged))
    context = causal_context(merged.model, base.model, merged.tokenizer, writing, read_neuron_table(args.neurons),
                             behavior, setup)
    result = screen(merged.model, context.suite, context.reference.means, screen_config,
                    exclude=list(context.outliers))
    result.save(args.out, overwrite=args.overwrite)
    if result.check:
        print(f"random-sample check: Spearman {result.check.spearman:.3f} over {result.check.n} neurons, "
              f"{result.check.n_above_threshold} above the 100th-largest estimate, "
              f"{result.check.n_missed} of them ranked below 100 by the screen (missed)")
    print(result.shortlist.sort_values("selectivity", ascending=False).head(10).to_string(index=False))
    print(f"wrote {args.out}")
    return 0
