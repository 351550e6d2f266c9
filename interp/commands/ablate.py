"""``interp ablate``: dose-response of ablating top-k flagged neurons vs matched random sets."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from activations import load_model
from interp.causal.cli_args import add_neuron_arguments, add_output_arguments, add_suite_arguments, ranked_from_args, suite_from_args
from interp.causal.dose_response import RESULT_FILE, DoseResponseConfig, dose_response
from interp.causal.inputs import load_neutral
from interp.causal.results import GENERATIONS_FILE, check_writable
from interp.causal.suite import ablation_reference
from interp.interventions import ABLATION_MODES


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("ablate", help="ablate top-k flagged neurons: behaviour and side effects vs random sets")
    parser.add_argument("--model", required=True, help="model to ablate (usually the merged fine-tune, or its adapter dir)")
    add_neuron_arguments(parser)
    parser.add_argument("--mode", choices=ABLATION_MODES, default="zero", help="zero | mean | resample (default: zero)")
    parser.add_argument("--random-sets", type=int, default=5, help="matched random sets per k (default: 5)")
    parser.add_argument("--mean-from", default=None, help="activation cache (HDF5) whose token means mean-ablation uses "
                                                          "(default: means of the model on the neutral prompts)")
    add_suite_arguments(parser)
    add_output_arguments(parser, f"output directory ({RESULT_FILE}, {GENERATIONS_FILE})")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    check_writable([out / RESULT_FILE, out / GENERATIONS_FILE], args.overwrite)
    config = DoseResponseConfig(k_grid=args.top_k, mode=args.mode, n_random=args.random_sets, seed=args.seed)
    loaded = load_model(args.model, device=args.device)
    ranked, exclude = ranked_from_args(args)
    suite = suite_from_args(args, loaded.tokenizer)
    reference_texts = load_neutral(args.neutral)[1] if args.mode != "zero" else ()
    reference = ablation_reference(loaded.model, loaded.tokenizer, args.mode, reference_texts,
                                   cache=args.mean_from, batch_size=args.batch_size, seed=args.seed)
    result = dose_response(loaded.model, loaded.tokenizer, ranked, suite, config,
                           reference=reference, exclude=exclude, model_name=args.model)
    path = result.save(out, overwrite=args.overwrite)
    print(json.dumps({"out": str(path), "baseline": result.baseline,
                      "flagged": {p.k: p.flagged for p in result.points}}, indent=2))
    return 0
