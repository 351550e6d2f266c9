"""``interp plan``: each stage's peak memory, disk and time for a model and a study, before any weight loads.

Reads only a config (``interp.plan``): a built-in shape (``mistral-7b``, ``llama-2-7b``,
``smollm2-1.7b``, ...), the default model, a model or adapter folder, or a config.json."""

from __future__ import annotations

import argparse
import json

from activations.config import DEFAULT_MODEL


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("plan", help="estimate each stage's memory, disk and time from the config alone")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="shape name, model or adapter folder, or config.json (default: %(default)s)")
    parser.add_argument("--prompts", type=int, default=240, help="prompts captured per model (default: %(default)s)")
    parser.add_argument("--tokens", type=int, default=40, help="mean tokens per prompt (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--store-tokens", action="store_true", help="plan for keeping every token's activations")
    parser.add_argument("--dtype", default="bfloat16", help="float32, bfloat16 or float16 (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from interp.plan import PlanConfig, check_fits, load_shape, plan

    config = PlanConfig(prompts=args.prompts, tokens_per_prompt=args.tokens, batch_size=args.batch_size,
                        store_tokens=args.store_tokens, dtype=args.dtype, device=args.device)
    estimate = plan(load_shape(args.model), config)
    if args.json:
        print(json.dumps(asdict(estimate), indent=1))
    else:
        print(estimate.table())
        if config.device == "cpu":
            print(check_fits(estimate) or "fits in this machine's available memory")
    return 0
