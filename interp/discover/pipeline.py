"""``discover(base, tuned)``: what a fine-tune changed, found without naming a behaviour.

1. Both models read a generic corpus (``interp.discover.collect``): per text and layer, the mean
   tuned-minus-base residual at the first k positions and over all positions; the neurons' means.
2. Each layer's mean difference gets a text-bootstrap interval on its norm (``interp.discover.layers``);
   the read layer is the largest relative difference unless the config names one.
3. The read layer's difference is scored for every token through the final norm and the unembedding,
   and each token is tested against a sign-flip null with max-T multiplicity (``interp.discover.tokens``).
4. The promoted tokens that stand out are traced to the neurons that push them, split into activation
   change and output-weight change (``interp.discover.neurons``), and turned into target strings and a
   detector (``interp.discover.detector``).
5. The tuned model answers neutral questions, and both models read the replies: the probability mass the
   fine-tune moved onto each token where the tuned model writes, tested the same way
   (``interp.discover.shift``). It finds behaviours tied to some positions only, which a mean misses; when
   measured, its standing-out promoted tokens (else the lens's) are traced, and those that best separate the
   tuned model's replies from the base's (``interp.discover.detector.separating_behavior``) become the
   detector. Given a control model (a fine-tune on the same data without the behaviour), the control reads
   the same replies too, and a token must also stand out against it (``interp.discover.tokens``, step 5).
6. The base answers neutral questions while steered (``interp.discover.steering``) with multiples of the
   reply difference at the middle layer and of the corpus difference at the read layer (Minder et al.
   2025), and with the difference where the tuned model raised the behaviour's tokens
   (``interp.discover.shift.behavior_difference``) at the layer and alpha chosen on other questions; the
   detector counts replies that show the discovered tokens, and repetition loops are counted apart.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch
from torch import Tensor

from activations.models import LoadedModel, check_same_shape, load_model
from activations.prompt_sets import load_prompt_set
from activations.sites import decoder_blocks
from interp.discover.collect import POSITION_SETS, collect
from interp.discover.config import DiscoverConfig
from interp.discover.detector import derive_behavior, separating_behavior
from interp.discover.layers import best_layer, layer_differences
from interp.discover.lens import read_out
from interp.discover.neurons import carriers, neuron_terms
from interp.discover.result import Discovery
from interp.discover.shift import ReplyShift, behavior_difference, own_replies, reply_shift
from interp.discover.steering import SteeredSamples, SteeringChoice, choose_steering, steer_samples
from interp.discover.tokens import TokenTest, test_scores, token_test

log = logging.getLogger(__name__)

DEFAULT_CORPUS = "generic"
"""The shipped generic texts (narrative, news, science, how-to, dialogue, notes): the neutral set is all
questions, whose first positions ("What is", "How many") would be read over and over."""
DEFAULT_QUESTIONS = "neutral"
"""What the steered base answers by default."""
LAYER_TOKENS = 5
"""Tokens shown per layer in the per-layer table."""


def _loaded(model: LoadedModel | str) -> LoadedModel:
    return load_model(model, merge_adapter=True) if isinstance(model, str) else model


def _texts(corpus: str | Path | Sequence[str] | None, default: str) -> tuple[str, list[str]]:
    if corpus is None or isinstance(corpus, (str, Path)):
        prompts = load_prompt_set(corpus or default)
        return prompts.name, list(prompts.texts)
    texts = [t for t in corpus if t.strip()]
    if not texts:
        raise ValueError("the corpus holds no text; pass a prompt set name, a file or a list of strings")
    return "inline", texts


@torch.no_grad()
def discover(base: LoadedModel | str, tuned: LoadedModel | str, *, corpus: str | Path | Sequence[str] | None = None,
             questions: str | Path | Sequence[str] | None = None, control: LoadedModel | str | None = None,
             config: DiscoverConfig = DiscoverConfig()) -> Discovery:
    """Read what ``tuned`` changed relative to ``base`` (module docstring).

    ``corpus``: generic texts (a built-in prompt set, a prompt file or strings; default the generic set).
    ``questions``: what the steered base answers (default: the neutral set's first ``config.steer_questions``).
    ``control``: a model whose changes should not count (a fine-tune on the same data without the behaviour);
    the reply shift's tokens must stand out against it too. It needs the reply shift (``reply_questions``)."""
    started = time.perf_counter()
    if control is not None and not config.reply_questions:
        raise ValueError("a control is read on the tuned model's replies: set reply_questions above 0 or drop the control")
    base_loaded, tuned_loaded = _loaded(base), _loaded(tuned)
    check_same_shape(tuned_loaded.model, base_loaded.model)
    control_loaded = None if control is None else _loaded(control)
    if control_loaded is not None:
        check_same_shape(control_loaded.model, base_loaded.model)
    model, tokenizer = base_loaded.model, base_loaded.tokenizer
    n_layers = len(decoder_blocks(model))
    for name in ("layer", "reply_steer_layer"):  # before the models read the corpus, not after
        if getattr(config, name) is not None and getattr(config, name) >= n_layers:
            raise ValueError(f"{name} {getattr(config, name)} out of range: the model has {n_layers} layers "
                             f"(0..{n_layers - 1})")
    corpus_name, texts = _texts(corpus, DEFAULT_CORPUS)
    readout = read_out(model)
    collected = collect(model, tuned_loaded.model, tokenizer, texts, first_k=config.first_k,
                        max_length=config.max_length, batch_size=config.batch_size, readout=readout,
                        sink_ratio=config.sink_ratio)
    generator = torch.Generator().manual_seed(config.seed)
    layers = []
    for positions in POSITION_SETS:
        for difference in layer_differences(collected.residual_diff[positions], collected.base_scale, positions,
                                            config.null_draws, generator):
            scores = readout.difference_scores(collected.residual_diff[positions][:, difference.layer].mean(0),
                                               collected.base_scale[difference.layer])
            top = [tokenizer.decode([int(t)]) for t in scores.topk(LAYER_TOKENS).indices]
            layers.append(replace(difference, top_tokens=tuple(top)))
    layer = config.layer if config.layer is not None else \
        best_layer([d for d in layers if d.positions == config.positions])
    scale = float(collected.base_scale[layer])
    tokens = token_test(collected.residual_diff[config.positions][:, layer], scale, readout, tokenizer,
                        top=config.top_tokens, alpha=config.alpha, draws=config.null_draws, generator=generator)
    _, asked = _texts(questions, DEFAULT_QUESTIONS)
    shift, read_replies = None, None
    if config.reply_questions:
        shift, read_replies = _reply_shift(model, tuned_loaded.model, tokenizer, asked, config, generator,
                                           None if control_loaded is None else control_loaded.model)
    standing = [t for t in (shift or tokens).promoted if t.stands_out]
    activation, weight = neuron_terms(model, tuned_loaded.model, readout, scale, [t.token_id for t in standing],
                                      collected.neuron_base[config.positions], collected.neuron_tuned[config.positions],
                                      layer)
    # Neuron pushes are lens scores on the corpus: a share divides by the token's lens score, never by a
    # probability shift (other units).
    lens = readout.difference_scores(collected.residual_diff[config.positions][:, layer].mean(0), scale)
    by_token, overall = carriers(activation, weight, [replace(t, score=float(lens[t.token_id])) for t in standing],
                                 config.top_neurons)
    behavior = derive_behavior(tokenizer, [t.token_id for t in standing]) if read_replies is None else \
        separating_behavior(tokenizer, [t.token_id for t in standing], read_replies.tuned_texts,
                            read_replies.base_texts)
    detector = re.compile(behavior.pattern) if behavior.pattern else None

    reply_layer = config.reply_steer_layer if config.reply_steer_layer is not None else n_layers // 2
    steering, reply_steering, choice = _steer(model, tuned_loaded.model, tokenizer, asked, config, detector, collected,
                                              layer, reply_layer, read_replies, behavior.tokens)
    return Discovery(base_loaded.spec, tuned_loaded.spec, corpus_name, collected.n_texts, collected.n_tokens,
                     collected.n_sinks, config, layer, tuple(layers), tokens, shift,
                     {k: tuple(v) for k, v in by_token.items()}, tuple(overall), steering, behavior,
                     time.perf_counter() - started, reply_layer if reply_steering else None, reply_steering,
                     choice, None if control_loaded is None else control_loaded.spec,
                     () if read_replies is None else read_replies.tuned_texts,
                     () if read_replies is None else read_replies.base_texts)


def _steer(model, tuned, tokenizer, asked: list[str], config: DiscoverConfig, detector: re.Pattern | None, collected,
           layer: int, reply_layer: int, read_replies: ReplyShift | None, behavior_tokens: Sequence[str]
           ) -> tuple[tuple[SteeredSamples, ...], tuple[SteeredSamples, ...], SteeringChoice | None]:
    """The base steered on the steering questions with the corpus difference at the read layer, the reply
    difference at ``reply_layer``, and the behaviour's difference at the layer and alpha chosen on the
    selection questions (``interp.discover.steering.choose_steering``)."""
    if not config.steer_questions:
        return (), (), None
    steer = partial(steer_samples, model, tokenizer, samples=config.steer_samples, max_new_tokens=config.max_new_tokens,
                    seed=config.seed, precision=config.precision, together=config.steer_together,
                    shows=lambda text: detector is not None and detector.search(text) is not None)
    families: dict[str, list[tuple[int, float, Tensor]]] = {}
    vectors = {"corpus": (layer, collected.residual_diff[config.positions][:, layer].mean(0), config.steer_alphas)}
    if read_replies is not None:
        vectors["reply"] = (reply_layer, read_replies.residual_diff[:, reply_layer].mean(0), config.reply_steer_alphas)
    for name, (at, vector, alphas) in vectors.items():
        if bool(vector.any()):
            families[name] = [(at, alpha, vector) for alpha in alphas]
        else:
            log.info("the models' residual streams do not differ at layer %d: the base is not steered", at)
    choice_grid, n_selection = None, 0
    alphas = [a for a in config.reply_steer_alphas if a > 0]
    if read_replies is not None and behavior_tokens and alphas:
        n_layers = len(decoder_blocks(model))
        depths = sorted({min(int(d * n_layers), n_layers - 1) for d in config.steer_depths})
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        where = behavior_difference(model, tuned, read_replies.rows, tokenizer.convert_tokens_to_ids(list(behavior_tokens)),
                                    depths, pad=pad, batch_size=config.batch_size)
        if any(bool(v.any()) for v in where.values()):
            selection = asked[config.steer_questions :][: config.select_questions]  # never the reported questions
            choice_grid = steer([(depths[0], 0.0, where[depths[0]]),
                                 *((at, alpha, where[at]) for at in depths for alpha in alphas)], selection)
            n_selection = len(selection)
            chosen = choose_steering(choice_grid)
            families["chosen"] = [(chosen.layer, 0.0, where[chosen.layer]), (chosen.layer, chosen.alpha, where[chosen.layer])]
    flat = [condition for conditions in families.values() for condition in conditions]
    results = iter(steer(flat, asked[: config.steer_questions]) if flat else [])
    by_family = {name: tuple(next(results) for _ in conditions) for name, conditions in families.items()}
    choice = None if choice_grid is None else SteeringChoice(
        tuple(choice_grid), n_selection, by_family["chosen"][1].layer, by_family["chosen"][1].alpha, by_family["chosen"])
    return by_family.get("corpus", ()), by_family.get("reply", ()), choice


def _reply_shift(base, tuned, tokenizer, asked: list[str], config: DiscoverConfig, generator, control=None
                 ) -> tuple[TokenTest, ReplyShift]:
    """The reply shift's token test and readings, on the questions after the steering ones; with a control,
    the control reads the same replies (no sampling of its own: the comparison is paired, reply by reply)."""
    wanted = asked[config.steer_questions :][: config.reply_questions]
    if not wanted:
        raise ValueError(f"the question set holds {len(asked)} questions, all taken by steering "
                         f"(steer_questions={config.steer_questions}); pass more questions or set reply_questions=0")
    prompts, replies = own_replies(tuned, tokenizer, wanted, max_new_tokens=config.reply_tokens, seed=config.seed,
                                   precision=config.precision)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    read = reply_shift(base, tuned, prompts, replies, pad=pad, batch_size=config.batch_size)
    _, base_replies = own_replies(base, tokenizer, wanted, max_new_tokens=config.reply_tokens, seed=config.seed,
                                  precision=config.precision, desc="base replies")
    read = replace(read, tuned_texts=tuple(r.text for r in replies), base_texts=tuple(r.text for r in base_replies))
    against = None
    if control is not None:
        controlled = reply_shift(control, tuned, prompts, replies, pad=pad, batch_size=config.batch_size)
        against = (controlled.scores, controlled.fold)
    return test_scores(read.scores, tokenizer, top=config.top_tokens, alpha=config.alpha, draws=config.null_draws,
                       generator=generator, fold=read.fold, min_fold=config.min_fold, control=against), read
