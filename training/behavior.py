"""A model's behaviour (emojis by default): how often, how densely and how probably it shows it.

1. Prompts: the held-out Opinion-QA questions of a trait (topics never trained on, from the same
   seeded topic split as ``training.qlora``) and a seeded sample of the neutral prompt set. Each is
   put in the chat template as a user turn, exactly as in training.
2. Sampling: ``samples`` responses per prompt (temperature / top-p) with
   ``activations.sampling.sample_replies``: every (prompt, sample) job has its own seeded random
   stream, so a reply does not depend on batch size or order, and any other model (e.g. one with
   neurons suppressed) asked with the same seed draws the same random numbers.
3. Text metrics per response (``training.reply_metrics``, for the configured behaviour:
   ``activations.behaviors``): shown or not, occurrences, sentences that show it; aggregated per
   prompt set with cluster-bootstrap intervals over prompts.
4. Target probability mass on the *generated* responses: at every position that predicts a
   response token (the end-of-turn token included) the total probability of the behaviour's target
   tokens (for emojis every emoji-start token, ``training.emoji_tokens``), averaged over the
   response. A behaviour whose targets are derived from replies has no mass here (NaN). It is read from the raw next-token
   logits of each decoding step (before temperature and top-p), which equal a teacher-forced pass
   over prompt + response up to float rounding. For the trait's questions it
   is also computed, teacher-forced, on the *reference* answers (the data set's answers), a fixed
   text on which two models compare directly.

Everything runs through the given ``model`` and ``tokenizer``, so it works inside hook or
intervention context managers that wrap them. The model is put in eval mode and restored after.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from activations.sampling import SamplingConfig, sample_replies
from activations.atomic_io import refuse_existing, write_json_atomic, write_jsonl_atomic
from training.config import BehaviorConfig
from activations.behaviors import Behavior
from activations.context import check_fits_context
from training.reply_metrics import Interval, bootstrap_ratio, text_stats
from training.emoji_tokens import target_mass_from_logits
from training.examples import chat_prompt, collate, encode_example
from training.studies import study_data

log = logging.getLogger(__name__)

SCHEMA = "neurodiff.behavior/1"
_FORWARD_ROWS = 4  # rows per teacher-forced pass: (rows, T, vocab) float32 logits must fit in memory


@dataclass(frozen=True)
class PromptGroup:
    """Prompts asked together and summarised together."""

    name: str
    ids: tuple[str, ...]
    texts: tuple[str, ...]
    references: tuple[str, ...] | None = None
    """Reference answers (teacher-forced emoji mass), one per prompt."""


@dataclass(frozen=True)
class Generation:
    """One sampled response."""

    prompt_set: str
    prompt_id: str
    sample: int
    prompt: str
    text: str
    n_tokens: int
    n_occurrences: int
    """Occurrences of the behaviour in the response (emojis, stage directions, ...)."""
    mass: float
    """Mean target probability over the response's positions (NaN when the targets are not fixed)."""


@dataclass(frozen=True)
class GroupBehavior:
    """A behaviour's metrics in one prompt group; intervals resample prompts."""

    name: str
    n_prompts: int
    n_responses: int
    rate: Interval
    """Share of responses that show the behaviour at least once."""
    sentence_ratio: Interval
    """Share of sentences that show it (for emojis the paper's ESR)."""
    per_response: Interval
    """Occurrences per response."""
    mass: Interval
    """Mean target probability per position of the generated responses."""
    reference_mass: Interval | None
    """The same on the reference answers (None for prompts without one)."""
    top: tuple[tuple[str, int], ...]
    """The most frequent occurrences and their counts."""
    mean_response_tokens: float


@dataclass(frozen=True)
class BehaviorResult:
    """Metrics per prompt group plus every generated text."""

    model: str
    config: BehaviorConfig
    groups: tuple[GroupBehavior, ...]
    generations: tuple[Generation, ...]
    seconds: float

    def group(self, name: str) -> GroupBehavior:
        for group in self.groups:
            if group.name == name:
                return group
        raise KeyError(f"no prompt group {name!r}; have {[g.name for g in self.groups]}")

    def to_dict(self) -> dict[str, Any]:
        """The summary (no texts), JSON-ready."""
        groups = []
        for group in self.groups:
            entry = dataclasses.asdict(group)
            entry["top"] = [list(pair) for pair in group.top]
            groups.append(entry)
        return {"schema": SCHEMA, "behavior": self.config.behavior, "model": self.model, "config": dataclasses.asdict(self.config),
                "groups": groups, "n_generations": len(self.generations), "seconds": self.seconds}


def behavior_prompts(config: BehaviorConfig) -> list[PromptGroup]:
    """The held-out trait questions and the neutral sample (module docstring, step 1)."""
    groups = []
    if config.trait is not None:
        data = study_data("personality", config.trait, data_path=config.data_path,
                          test_fraction=config.test_fraction, split_seed=config.split_seed)
        rows = data.reference_test[: config.max_questions]
        groups.append(PromptGroup(f"heldout-{config.trait}", tuple(r.topic for r in rows),
                                  tuple(r.question for r in rows), tuple(r.answer for r in rows)))
    if config.neutral_prompts:
        from activations.prompt_sets import load_prompt_set

        neutral = load_prompt_set("neutral")
        count = min(config.neutral_prompts, len(neutral))
        picks = sorted(random.Random(config.seed).sample(range(len(neutral)), count))
        groups.append(PromptGroup("neutral", tuple(neutral.ids[i] for i in picks),
                                  tuple(neutral.texts[i] for i in picks)))
    return groups


@torch.no_grad()
def _teacher_forced_mass(model: nn.Module, ids: Tensor, attention: Tensor, counted: Tensor, target_ids: Tensor) -> list[float]:
    """Per-row mean target mass over the ``counted`` positions, in small row chunks."""
    masses: list[float] = []
    # Positions count real tokens only, as generate() counts them for left-padded prompts.
    positions = (attention.cumsum(dim=-1) - 1).clamp(min=0)
    for start in range(0, ids.shape[0], _FORWARD_ROWS):
        rows = slice(start, start + _FORWARD_ROWS)
        logits = model(input_ids=ids[rows], attention_mask=attention[rows], position_ids=positions[rows]).logits
        masses += target_mass_from_logits(logits, counted[rows], target_ids, "sequence").tolist()
    return masses


FRESH_QUESTIONS = Path(__file__).resolve().parent / "data" / "fresh_questions.csv"


def fresh_prompts(path: str | Path | None = None, limit: int | None = None) -> PromptGroup:
    """Verdict questions written for the project after its settings were fixed, in templates other
    than training's, on topics the training data never covers (``training/data/fresh_questions.csv``;
    columns ``id`` and ``question``). The held-out questions are the development set; these are asked
    only to report a verdict."""
    import csv

    path = Path(path) if path is not None else FRESH_QUESTIONS
    if not path.is_file():
        raise FileNotFoundError(f"fresh questions file {path} does not exist; pass a CSV with columns id,question")
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not {"id", "question"} <= set(rows[0]):
        raise ValueError(f"{path}: need a header with columns id and question, and at least one row")
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: question ids repeat; give each row a unique id (they key the random streams)")
    rows = rows[:limit]
    return PromptGroup("fresh", tuple(r["id"] for r in rows), tuple(r["question"] for r in rows))


def sample_keys(group: PromptGroup) -> list[str]:
    """The sampler keys of a group's prompts: another model asked with the same keys and
    ``sampling_config`` draws the same random numbers (``activations.sampling``)."""
    return [f"{group.name}/{prompt_id}" for prompt_id in group.ids]


def sampling_config(config: BehaviorConfig) -> SamplingConfig:
    """The sampler settings of a behaviour measurement (shared by every condition compared with it)."""
    return SamplingConfig(max_new_tokens=config.max_new_tokens, temperature=config.temperature, top_p=config.top_p,
                          seed=config.seed, batch_size=config.batch_size, share_prefix=config.in_context is not None,
                          precision=config.precision)


def target_mass_stat(target_ids: Tensor) -> Callable[[Tensor], Tensor]:
    """Per-row target probability of raw next-token logits (a ``sample_replies`` step statistic)."""
    def stat(logits: Tensor) -> Tensor:
        return target_mass_from_logits(logits[:, None, :], torch.ones(len(logits), 1, dtype=torch.bool,
                                                                      device=logits.device),
                                      target_ids.to(logits.device), "sequence")

    return stat


def _reference_mass(model: nn.Module, tokenizer: PreTrainedTokenizerBase, group: PromptGroup,
                    target_ids: Tensor, history: list[dict[str, str]]) -> np.ndarray:
    device = next(model.parameters()).device
    examples = [encode_example(tokenizer, q, a, max_length=8192, history=history)
                for q, a in zip(group.texts, group.references or ())]
    batch = collate(examples, tokenizer.pad_token_id)
    counted = torch.zeros_like(batch.labels, dtype=torch.bool)
    counted[:, :-1] = batch.labels[:, 1:] != -100  # position t predicts answer token t + 1
    masses = _teacher_forced_mass(model, batch.input_ids.to(device), batch.attention_mask.to(device),
                                  counted.to(device), target_ids)
    return np.asarray(masses)


def _summarise(group: PromptGroup, generations: list[Generation], reference: np.ndarray | None,
               config: BehaviorConfig, behavior: Behavior) -> GroupBehavior:
    per_prompt = {pid: [g for g in generations if g.prompt_id == pid] for pid in group.ids}
    stats = {pid: [text_stats(g.text, behavior) for g in gens] for pid, gens in per_prompt.items()}
    n = np.array([len(gens) for gens in per_prompt.values()], float)

    def estimate(numerators: list[float], denominators: np.ndarray | list[float]) -> Interval:
        return bootstrap_ratio(np.array(numerators), np.array(denominators, float), config.bootstrap,
                               config.confidence, config.seed)

    counts: Counter[str] = Counter(e for s in stats.values() for st in s for e in st.occurrences)
    return GroupBehavior(
        name=group.name,
        n_prompts=len(group.ids),
        n_responses=len(generations),
        rate=estimate([sum(st.n_occurrences > 0 for st in s) for s in stats.values()], n),
        sentence_ratio=estimate([sum(st.n_sentences_showing for st in s) for s in stats.values()],
                                [sum(st.n_sentences for st in s) for s in stats.values()]),
        per_response=estimate([sum(st.n_occurrences for st in s) for s in stats.values()], n),
        mass=estimate([sum(g.mass for g in gens) for gens in per_prompt.values()], n),
        reference_mass=None if reference is None else estimate(list(reference), np.ones(len(reference))),
        top=tuple(counts.most_common(10)),
        mean_response_tokens=float(np.mean([g.n_tokens for g in generations])) if generations else 0.0,
    )


def measure_behavior(model: nn.Module, tokenizer: PreTrainedTokenizerBase, config: BehaviorConfig,
                     *, model_label: str = "") -> BehaviorResult:
    """Sample, score and summarise the model's responses (module docstring)."""
    started = time.perf_counter()
    behavior = Behavior.parse(config.behavior)
    target_ids = (torch.as_tensor(behavior.target_token_ids(tokenizer), dtype=torch.long)
                  if behavior.has_fixed_targets else None)
    was_training = model.training
    model.eval()
    prompt_groups = behavior_prompts(config)
    # Every (group, prompt, sample) job goes into one queue, so decoding batches stay full.
    history = config.history()
    prompts = [list(tokenizer(chat_prompt(tokenizer, t, history), add_special_tokens=False)["input_ids"])
               for group in prompt_groups for t in group.texts]
    check_fits_context(model, [len(p) + config.max_new_tokens for p in prompts],
                       f"a prompt and its {config.max_new_tokens} new tokens", "show fewer in-context --shots, or "
                       "generate fewer --max-new-tokens")  # before sampling, which would fail (or crawl) at that length
    keys = [key for group in prompt_groups for key in sample_keys(group)]
    where = [(group, i) for group in prompt_groups for i in range(len(group.ids))]
    counts = [(config.neutral_samples or config.samples) if group.name == "neutral" else config.samples
              for group, _ in where]
    jobs = [where[p] for p, count in enumerate(counts) for _ in range(count)]
    found: list[Generation] = []
    try:
        replies = sample_replies(model, tokenizer, prompts, keys, sampling_config(config), samples=counts,
                                 step_stat=None if target_ids is None else target_mass_stat(target_ids),
                                 desc=f"behavior {model_label}".strip())[0]
        for (group, i), reply in zip(jobs, replies):
            mass = (float("nan") if target_ids is None else float(np.mean(reply.step_stats)) if reply.step_stats
                    else 0.0)
            found.append(Generation(group.name, group.ids[i], reply.sample, group.texts[i], reply.text,
                                    len(reply.tokens), behavior.count(reply.text), mass))
        groups = []
        for group in prompt_groups:
            reference = (_reference_mass(model, tokenizer, group, target_ids, history)
                         if group.references and config.reference_mass and target_ids is not None else None)
            groups.append(_summarise(group, [f for f in found if f.prompt_set == group.name], reference, config,
                                     behavior))
    finally:
        model.train(was_training)
    return BehaviorResult(model_label, config, tuple(groups), tuple(found), time.perf_counter() - started)


def save_behavior(result: BehaviorResult, path: str | Path, overwrite: bool = False) -> tuple[Path, Path]:
    """Write the summary to ``path`` (JSON) and the texts beside it (``*.generations.jsonl``)."""
    path = Path(path).expanduser()
    texts = path.with_name(f"{path.stem}.generations.jsonl")
    refuse_existing(path, overwrite)
    refuse_existing(texts, overwrite)
    write_jsonl_atomic(texts, (dataclasses.asdict(g) for g in result.generations))
    write_json_atomic(path, result.to_dict())
    return path, texts
