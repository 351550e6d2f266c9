"""``interp suppress``: write a model with flagged neurons removed from its weights, and check it."""

from __future__ import annotations

import argparse
import json

from activations import load_model
from interp.causal.cli_args import add_neuron_arguments, add_output_arguments
from interp.causal.inputs import load_questions
from interp.interventions import NeuronSet
from interp.interventions.export import export_and_check


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("suppress", help="export a HF model whose weights no longer read the top-k neurons")
    parser.add_argument("--model", required=True, help="model spec (merged dir; an adapter dir is merged into a copy)")
    add_neuron_arguments(parser, many_k=False)
    parser.add_argument("--check-prompts", type=int, default=4,
                        help="held-out questions on which export and hook ablation are compared (0: no check)")
    parser.add_argument("--questions", default=None, help="question file for the check (default: held-out opinion_qa rows)")
    parser.add_argument("--trait", default="extraversion", help="trait of the default held-out questions")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    add_output_arguments(parser, "output model directory")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    loaded = load_model(args.model, device=args.device)
    neurons = NeuronSet.from_csv(args.neurons, args.top_k, flagged_only=not args.all_rows)
    prompts = load_questions(args.questions, trait=args.trait).questions[: args.check_prompts]
    result, check = export_and_check(loaded.model, loaded.tokenizer, neurons, args.out, check_prompts=prompts,
                                     source_spec=args.model, overwrite=args.overwrite)
    print(json.dumps({"export": result.to_dict(), "check": check.to_dict() if check else None}, indent=2))
    return 0 if check is None or check.ok else 1
