"""Arguments shared by the causal ``interp`` subcommands, and turning them into API objects.

Only parsing and wiring lives here; every computation is in the public API it calls.
"""

from __future__ import annotations

import argparse
import logging

from transformers import PreTrainedTokenizerBase

from interp.causal.evaluate import EvalSuite
from interp.causal.generation import GenerationConfig
from interp.causal.inputs import load_neutral, load_questions
from interp.causal.suite import emoji_suite
from interp.interventions import Neuron, NeuronSet, flagged_set, ranked_neurons, read_neuron_table

log = logging.getLogger(__name__)


def k_list(text: str) -> tuple[int, ...]:
    """``"1,10,100"`` -> ``(1, 10, 100)``."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--top-k takes comma-separated integers like 10,100, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"--top-k values must be positive integers, got {text!r}")
    return values


def add_neuron_arguments(parser: argparse.ArgumentParser, *, many_k: bool = True) -> None:
    parser.add_argument("--neurons", required=True, help="neuron table (neurons.csv from `interp diff`): layer,index,...,class")
    parser.add_argument("--top-k", required=True, type=k_list if many_k else int,
                        help="top-ranked flagged neurons to use" + (", comma-separated grid (e.g. 10,100)" if many_k else ""))
    parser.add_argument("--all-rows", action="store_true",
                        help="rank every row of the table, not only rows with a non-empty class")


def add_suite_arguments(parser: argparse.ArgumentParser, *, generation: bool = True, neutral: bool = True) -> None:
    parser.add_argument("--questions", default=None,
                        help="an Opinion-QA file (its held-out topics are used, as in training) or any .txt/.jsonl/.csv "
                             "prompt file (default: the held-out rows of training/data/opinion_qa.csv)")
    parser.add_argument("--trait", default="extraversion", help="trait whose held-out questions are asked (default: extraversion)")
    parser.add_argument("--n-questions", type=int, default=None, help="use only the first N questions")
    if neutral:
        parser.add_argument("--neutral", default="neutral", help="neutral prompt set or file for side effects (default: neutral)")
        parser.add_argument("--n-neutral", type=int, default=32, help="neutral prompts to use (default: 32)")
    if generation:
        parser.add_argument("--max-new-tokens", type=int, default=48, help="reply length for emoji rate; 0 skips generation")
    parser.add_argument("--batch-size", type=int, default=8, help="rows per forward pass (default: 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed for random sets and resampling (default: 0)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def add_output_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--out", required=True, help=what)
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def ranked_from_args(args: argparse.Namespace) -> tuple[list[Neuron], NeuronSet]:
    """The ranked candidates and the set random controls must avoid: every flagged neuron when the
    table has a ``class`` column, else the largest top-k set used."""
    table = read_neuron_table(args.neurons)
    ranked = ranked_neurons(table, flagged_only=not args.all_rows)
    if not ranked:
        raise ValueError(f"{args.neurons} flags no neurons (every class is empty); pass --all-rows to rank every row")
    if "class" in table.columns and not args.all_rows:
        exclude = flagged_set(table)
    else:
        top_k = args.top_k if isinstance(args.top_k, tuple) else (args.top_k,)
        exclude = NeuronSet.from_pairs(ranked[: max(top_k)])
    log.info("%d candidate neurons from %s", len(ranked), args.neurons)
    return ranked, exclude


def suite_from_args(args: argparse.Namespace, tokenizer: PreTrainedTokenizerBase) -> EvalSuite:
    questions = load_questions(args.questions, trait=args.trait).head(args.n_questions)
    neutral_texts = load_neutral(args.neutral, args.n_neutral)[1] if getattr(args, "neutral", None) else None
    generation = GenerationConfig(max_new_tokens=getattr(args, "max_new_tokens", 0), batch_size=args.batch_size, seed=args.seed)
    log.info("%d questions from %s", len(questions.questions), questions.source)
    return emoji_suite(tokenizer, questions, neutral_texts, batch_size=args.batch_size, generation=generation)
