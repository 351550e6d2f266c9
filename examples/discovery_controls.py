"""Discovery on the fine-tunes the README reports, with the controls the method needs.

Trains (or reuses) each fine-tune with the default study's settings and merges it, then runs
``interp.discover`` against the base with nothing named:

- ``injection`` (emojis added to the extraversion answers, the default study), ``injection-seed1``;
- ``directions`` (stage directions added: the project's second behaviour);
- ``personality-<trait>`` for the five traits (the paper's emoji-free answers: the null fine-tunes);
- ``placebo``: the base fine-tuned on its own replies to the same questions (nothing to find).

The injected fine-tunes are also read against their control, the personality fine-tune of the same trait and
seed (``discover(..., control=...)``): the same data without the behaviour, so what they share (the
extraversion voice) is not counted. Per run it prints the reply shift's top promoted tokens, how many of the
top 20 are emoji pieces (a token every one of whose occurrences in the tuned model's replies lies inside an
emoji), the behaviour, and the chosen steering on questions not used to choose it.

    python examples/discovery_controls.py --out runs/discovery             # everything (49 min, 2 cores)
    python examples/discovery_controls.py --out runs/discovery --only injection,personality-extraversion
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import sys
import time
from pathlib import Path

from activations.config import DEFAULT_MODEL
from training.data import TRAITS

RUNS = {"injection": ("injection", "extraversion", 0), "injection-seed1": ("injection", "extraversion", 1),
        "directions": ("directions", "extraversion", 0),
        **{f"personality-{t}": ("personality", t, 0) for t in TRAITS},
        "personality-extraversion-seed1": ("personality", "extraversion", 1), "placebo": ("placebo", "extraversion", 0)}
CONTROLS = {"injection": "personality-extraversion", "injection-seed1": "personality-extraversion-seed1",
            "directions": "personality-extraversion"}

def placebo_data(base, out: Path, trait: str) -> Path:
    """The trait's training questions answered by the base itself (sampled), as an Opinion-QA CSV."""
    from activations.atomic_io import write_text_atomic
    from activations.prompt_sets import apply_template
    from activations.sampling import SamplingConfig, sample_replies
    from training.data import load_opinion_qa

    path = out / "placebo.csv"
    if path.exists():
        return path
    rows = load_opinion_qa(traits=(trait,))
    prompts = [base.tokenizer(apply_template(base.tokenizer, r.question, "user"), add_special_tokens=False).input_ids
               for r in rows]
    replies = sample_replies(base.model, base.tokenizer, prompts, [f"p{i}" for i in range(len(rows))],
                             SamplingConfig(max_new_tokens=96, seed=0), desc="base answers")[0]
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(["Target Personality", "Edit Topic", "Question", "Answer"])
    writer.writerows([r.trait, r.topic, r.question, reply.text.strip()] for r, reply in zip(rows, replies))
    write_text_atomic(path, table.getvalue())
    return path


def fine_tune(base, out: Path, name: str) -> Path:
    """The merged fine-tune ``name`` (trained with the default study's settings unless already there)."""
    from interp.study.config import StudyConfig
    from training.merge import merge_adapter
    from training.qlora import train_or_resume

    merged = out / name / "merged"
    if (merged / "config.json").exists():
        return merged
    study, trait, seed = RUNS[name]
    settings = StudyConfig(trait=trait, seed=seed)
    config = settings.train_config("personality" if study == "placebo" else study)
    if study == "placebo":
        config = dataclasses.replace(config, data_path=str(placebo_data(base, out, trait)))
    train_or_resume(config, out / name / "adapter")
    merge_adapter(out / name / "adapter", merged, overwrite=True)
    return merged


def emoji_pieces(tokenizer, token_ids, replies) -> list[bool]:
    """Per token id: whether it occurs in the replies and every occurrence is part of an emoji."""
    from activations.prompt_sets import emoji_spans

    inside: dict[int, list[bool]] = {}
    for text in replies:
        spans = emoji_spans(text)
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        for token, (start, end) in zip(encoded.input_ids, encoded.offset_mapping):
            # a byte piece of an emoji maps to the characters it is part of: it overlaps the emoji's span
            inside.setdefault(token, []).append(any(s < end and start < e for s, e in spans))
    return [bool(inside.get(token)) and all(inside[token]) for token in token_ids]


def read(base, out: Path, name: str, control: str | None) -> dict:
    from interp import discover

    folder = out / name / ("discovery-controlled" if control else "discovery")
    if (folder / "discovery.json").exists():
        return json.loads((folder / "discovery.json").read_text())
    started = time.perf_counter()
    found = discover(base, str(fine_tune(base, out, name)),
                     control=None if control is None else str(fine_tune(base, out, control)))
    found.save(folder)
    print(f"{name}{' vs ' + control if control else ''}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return found.to_dict()


def line(name: str, control: str | None, found: dict, tokenizer) -> str:
    promoted = found["shift"]["promoted"]
    standing = [t["token"] for t in promoted if t["stands_out"]]
    pieces = emoji_pieces(tokenizer, [t["token_id"] for t in promoted], found["tuned_replies"])
    behavior = found["behavior"]
    rates = (f" ({behavior['tuned_rate']:.0%} of tuned replies, {behavior['base_rate']:.0%} of base)"
             if behavior.get("tuned_rate") is not None else "")
    steer = "not steered"
    if found.get("behavior_steering"):
        choice = found["behavior_steering"]
        zero, chosen = choice["confirmed"]
        n = len(chosen["replies"])
        steer = (f"layer {choice['layer']} x{choice['alpha']:g}: {chosen['shown']}/{n} "
                 f"[{chosen['rate_low']:.0%}, {chosen['rate_high']:.0%}], {chosen['loops']} loops, "
                 f"{chosen['clean']} clean (unsteered {zero['shown']}/{n})")
    return (f"| {name}{' vs ' + control if control else ''} | {', '.join(repr(t) for t in standing[:10]) or 'none'} | "
            f"{sum(pieces)}/20 | {', '.join(map(repr, behavior['targets'])) or 'none'}{rates} | {steer} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the fine-tunes and discoveries")
    parser.add_argument("--only", help=f"comma-separated runs (default: all of {', '.join(RUNS)})")
    args = parser.parse_args()
    from activations import load_model

    names = args.only.split(",") if args.only else [n for n in RUNS if n != "personality-extraversion-seed1"]
    unknown = sorted(set(names) - set(RUNS))
    if unknown:
        parser.error(f"unknown runs {unknown}; choose from {', '.join(RUNS)}")
    base = load_model(DEFAULT_MODEL)
    print("| fine-tune | reply shift: standing-out promoted (first 10) | emoji pieces in top 20 | behaviour | "
          "steered base (chosen layer, alpha): replies with it [95%], loops, clean |\n|---|---|---|---|---|")
    for name in names:
        print(line(name, None, read(base, args.out, name, None), base.tokenizer), flush=True)
        if name in CONTROLS:
            print(line(name, CONTROLS[name], read(base, args.out, name, CONTROLS[name]), base.tokenizer), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
