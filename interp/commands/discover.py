"""``interp discover``: what did a fine-tune change? Read from generic text, with no behaviour named.

Flags of the analysis come from ``DiscoverConfig``; the result is ``DIR/discovery.json`` (+ .md, .html),
which ``--behavior discovered:DIR`` turns into a behaviour for the causal commands."""

from __future__ import annotations

import argparse
from pathlib import Path

from interp.configargs import add_config_arguments, config_from_args
from interp.discover.config import FILES, DiscoverConfig



def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "discover", help="find what a fine-tune changed without naming a behaviour (residual lens, neurons, steering)",
        description="Both models read generic texts; the mean residual difference is read through the unembedding, "
        "each token is tested against a sign-flip null, the tokens that stand out are traced to neurons, and the "
        "base is steered with the difference. The tuned model also answers neutral questions and both read its "
        "replies: the probability it moved onto each token is tested the same way.")
    parser.add_argument("--base", required=True, help="the base model's spec")
    parser.add_argument("--tuned", required=True, help="the fine-tuned model's spec (an adapter is merged)")
    parser.add_argument("--out", type=Path, required=True, help="folder for discovery.json, .md and .html")
    parser.add_argument("--corpus", help="generic texts: a built-in prompt set or a .txt/.jsonl/.csv file "
                                         "(default: generic, 195 texts of many kinds)")
    parser.add_argument("--questions", help="what the steered base answers (the first --steer-questions) and the tuned "
                                            "model answers for the reply shift (the next --reply-questions); "
                                            "default: the neutral set")
    parser.add_argument("--control", help="a model whose changes should not count (e.g. a fine-tune on the same data "
                                          "without the behaviour): the reply shift's tokens must stand out against it "
                                          "too, and rank by the shift beyond both")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    add_config_arguments(parser.add_argument_group("discovery"), DiscoverConfig)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from activations.atomic_io import refuse_existing
    from interp.discover.pipeline import discover

    config = config_from_args(args, DiscoverConfig)
    refuse_existing([args.out / name for name in FILES], args.overwrite)  # before minutes of work, not after
    found = discover(args.base, args.tuned, corpus=args.corpus, questions=args.questions,
                     control=args.control, config=config)
    path = found.save(args.out, overwrite=args.overwrite)
    print(found.summary())
    for title, test in (("lens", found.tokens), ("reply shift", found.shift)):
        if test is None:
            continue
        print(f"{title}:")
        for token in test.promoted[:10]:
            specific = f"vocabulary z {token.vocabulary_z:6.1f}" if token.fold is None else f"fold x{token.fold:.3g}"
            against = "" if token.control is None else f"  vs control {token.control.score:8.3g}"
            print(f"  {token.token!r:<20} score {token.score:8.3g}  z {token.z:6.2f}  {specific}{against}"
                  f"{'  stands out' if token.stands_out else ''}")
    print(f"wrote {path} (and .md, .html); use --behavior discovered:{args.out}")
    return 0
