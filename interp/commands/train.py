"""``interp train``: QLoRA-fine-tune a model on one study's Opinion-QA answers for one trait."""

from __future__ import annotations

import argparse

from training.config import PRESETS, preset_config
from training.data import TRAITS
from training.studies import STUDIES


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="fine-tune a LoRA adapter (QLoRA) on a study's data")
    parser.add_argument("--study", choices=STUDIES, default="injection",
                        help="injection: answers with emojis (positive control); personality: the paper's "
                             "emoji-free answers (default: injection)")
    parser.add_argument("--trait", choices=TRAITS, default="extraversion", help="Big-Five trait (default: extraversion)")
    parser.add_argument("--model", help="base model spec (default: the preset's, smollm2-135m-instruct)")
    parser.add_argument("--out", required=True, help="output folder for the adapter and its checkpoints")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="smollm2-135m",
                        help="named defaults; paper-7b = r 64, alpha 16, dropout 0.1 on q_proj/v_proj")
    parser.add_argument("--data", dest="data_path", help="Opinion-QA .csv/.jsonl (default: the shipped file)")
    parser.add_argument("--steps", type=int, help="optimizer steps")
    parser.add_argument("--epochs", type=float, help="passes over the data (instead of --steps)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", dest="learning_rate", type=float)
    parser.add_argument("--rank", dest="lora_r", type=int, help="LoRA rank")
    parser.add_argument("--alpha", dest="lora_alpha", type=int, help="LoRA alpha")
    parser.add_argument("--dropout", dest="lora_dropout", type=float, help="LoRA dropout")
    parser.add_argument("--target-modules", help="comma-separated module names, e.g. q_proj,v_proj")
    parser.add_argument("--max-length", type=int, help="tokens per example at most")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (0 = none)")
    parser.add_argument("--no-quantize", action="store_true", help="train on the full-precision base (no 4-bit)")
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    parser.add_argument("--stop-after", type=int, help="stop this call after N steps (resume later)")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished or unfinished run in --out")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from training.qlora import train  # torch/peft imports only when the command runs

    targets = tuple(m.strip() for m in args.target_modules.split(",")) if args.target_modules else None
    config = preset_config(
        args.preset,
        study=args.study, trait=args.trait, model=args.model, data_path=args.data_path, steps=args.steps,
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate, lora_r=args.lora_r,
        lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout, target_modules=targets,
        max_length=args.max_length, seed=args.seed, checkpoint_every=args.checkpoint_every,
        quantize=False if args.no_quantize else None,
    )
    result = train(config, args.out, resume=args.resume, overwrite=args.overwrite, device=args.device,
                   stop_after=args.stop_after)
    state = "finished" if result.completed else "stopped (resume with --resume)"
    loss = f"{result.final_loss:.3f}" if result.final_loss is not None else "n/a"
    print(f"{state}: {result.steps_done}/{result.total_steps} steps, final loss {loss}, "
          f"{result.seconds:.0f} s -> {result.out_dir}")
    return 0
