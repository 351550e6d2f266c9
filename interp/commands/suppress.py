"""``interp suppress``: write a plain HF model in which chosen neurons are suppressed, and check it.

The neurons come from a sweep (``--sweep sweep.json``: the smallest set that met the target) or the
top of a neuron table (``--neurons neurons.csv --top-k K``). ``mean`` folds mean ablation into the
output projection's bias (means over content tokens of neutral chats), ``revert`` restores the base
model's weights for those neurons, ``zero`` zeroes them. The export is compared with the equivalent
hook intervention on a few prompts (mean, zero)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from typing import TYPE_CHECKING

from activations.config import DEFAULT_MODEL
from activations.prompt_sets import apply_template
from interp.causal.config import CausalSetup
from interp.configargs import add_config_arguments, config_from_args
from interp.interventions.config import EXPORT_METHODS

if TYPE_CHECKING:
    from interp.interventions import NeuronSet


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("suppress", help="export a HF model in which chosen neurons are suppressed")
    parser.add_argument("--model", required=True, help="the model to suppress (merged folder; an adapter is merged first)")
    parser.add_argument("--base", default=DEFAULT_MODEL, help="its base model (for --method revert)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--sweep", type=Path, help="sweep.json from `interp ablate` / the study: use its choice")
    source.add_argument("--neurons", type=Path, help="neurons.csv: use its top flagged neurons (with --top-k)")
    parser.add_argument("--top-k", type=int, default=None, help="with --neurons: how many")
    parser.add_argument("--method", choices=EXPORT_METHODS, default="mean", help="default: mean")
    add_config_arguments(parser.add_argument_group("mean references"), CausalSetup, exclude=("seed",))
    parser.add_argument("--seed", type=int, default=0, help="seed of the references (default: 0)")
    parser.add_argument("--out", required=True, type=Path, help="output model folder")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    parser.set_defaults(func=run)


def _neurons(args: argparse.Namespace) -> NeuronSet:
    import pandas as pd

    from interp.causal.setup import table_sets
    from interp.interventions import NeuronSet

    if args.sweep is not None:
        return NeuronSet.from_pairs(json.loads(args.sweep.read_text())["choice"]["neurons"])
    if args.top_k is None or args.top_k < 1:
        raise ValueError("--neurons needs --top-k K (a positive number of top flagged neurons)")
    ranking = table_sets(pd.read_csv(args.neurons))[2]
    if args.top_k > len(ranking):
        raise ValueError(f"--top-k {args.top_k} exceeds the {len(ranking)} flagged neurons of {args.neurons}")
    return NeuronSet.from_pairs(ranking[: args.top_k])


def run(args: argparse.Namespace) -> int:
    setup = config_from_args(args, CausalSetup, seed=args.seed)
    neurons = _neurons(args)
    from activations import load_model
    from interp.causal.setup import neutral_reference
    from interp.interventions import export_suppressed
    from interp.interventions.export import check_export

    loaded = load_model(args.model)
    neutral, reference = neutral_reference(loaded.model, loaded.tokenizer, setup)
    means = reference.means
    base = load_model(args.base).model if args.method == "revert" else None
    result = export_suppressed(loaded.model, neurons, args.out, tokenizer=loaded.tokenizer, method=args.method,
                               means=means, base=base, source_spec=args.model, overwrite=args.overwrite)
    check = None
    if args.method in ("mean", "zero"):
        reloaded = load_model(str(args.out))
        tokenizer = reloaded.tokenizer
        tokenizer.padding_side = "left"
        probe = tokenizer([apply_template(tokenizer, t, "user") for t in neutral.verdict[:2]], return_tensors="pt",
                          padding=True, add_special_tokens=False)
        check = check_export(loaded.model, reloaded.model, neurons, probe.input_ids, probe.attention_mask,
                             method=args.method, means=means, pad_token_id=tokenizer.pad_token_id, atol=1e-3)
    print(json.dumps({"export": result.to_dict(), "check": check.to_dict() if check else None}, indent=2))
    return 0 if check is None or check.ok else 1
