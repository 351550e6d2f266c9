"""Generating replies under an intervention, including cross-model patching at generation time.

Patching recorded activations into ``generate`` has a problem: the donor's values at step t
depend on the tokens generated so far, which are not known in advance. ``generate_cross_patched``
solves it exactly by running donor and receiver side by side, each with its own KV cache:

1. Left-pad the prompts; positions are ``cumsum(mask) - 1`` so padded rows count from their first
   real token (what ``generate`` does).
2. At every step, run the donor on the new tokens while recording the chosen layers' neuron
   vectors (prompt positions on the first step, one position after that).
3. Run the receiver on the same tokens with those neurons patched to the donor's values
   (``interp.interventions.patch``, position-aligned: same ids, same positions).
4. Pick the next token from the receiver's logits (greedy, or seeded sampling), feed it to both
   models; stop a row at EOS, all rows at ``max_new_tokens``.
With donor == receiver the result equals plain greedy ``generate`` (tested), so the loop adds
nothing but the patch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from activations.hooks import recording
from activations.sites import neuron_sites
from interp.interventions import NeuronSet, patch


@dataclass(frozen=True)
class GenerationConfig:
    """How replies are generated for text metrics."""

    max_new_tokens: int = 48
    """Reply length cap; 0 skips generation (text metrics are then not computed)."""
    batch_size: int = 8
    """Prompts per generate call."""
    do_sample: bool = False
    """Greedy by default: replies are a deterministic function of the intervention."""
    temperature: float = 1.0
    """Sampling temperature (only with ``do_sample``)."""
    seed: int = 0
    """Seed for sampling."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0 or self.batch_size < 1:
            raise ValueError("max_new_tokens must be >= 0 and batch_size >= 1")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _encode_left(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], device: torch.device) -> tuple[Tensor, Tensor]:
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # restored below: the tokenizer is shared with other callers
    try:
        encoded = tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = side
    return encoded.input_ids.to(device), encoded.attention_mask.to(device)


def _decode(tokenizer: PreTrainedTokenizerBase, new_tokens: Tensor) -> list[str]:
    return tokenizer.batch_decode(new_tokens, skip_special_tokens=True)


def _generate(model: nn.Module, tokenizer: PreTrainedTokenizerBase, ids: Tensor, mask: Tensor,
              config: GenerationConfig, seed: int) -> Tensor:
    """New tokens ``(rows, <= max_new_tokens)`` for left-padded ``ids``."""
    kwargs = dict(do_sample=config.do_sample, pad_token_id=tokenizer.pad_token_id)
    if config.do_sample:
        torch.manual_seed(seed)  # generate samples from the global generator
        kwargs["temperature"] = config.temperature
    else:  # explicit, so a generation_config asking for sampling does not leak in
        kwargs.update(temperature=None, top_p=None, top_k=None)
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=config.max_new_tokens, **kwargs)
    return out[:, ids.shape[1] :]


@torch.no_grad()
def generate_replies(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], config: GenerationConfig
) -> list[str]:
    """Replies to already-templated ``prompts`` with ``model.generate`` (hooks active around the
    call apply at every step)."""
    replies: list[str] = []
    for start in tqdm(range(0, len(prompts), config.batch_size), desc="generate", leave=False):
        ids, mask = _encode_left(tokenizer, prompts[start : start + config.batch_size], _device(model))
        replies.extend(_decode(tokenizer, _generate(model, tokenizer, ids, mask, config, config.seed + start)))
    return replies


@torch.no_grad()
def generate_stacked(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], config: GenerationConfig,
    copies: int,
) -> list[list[str]]:
    """Replies of ``copies`` stacked copies of each prompt batch, one list per copy: for use inside
    ``interp.interventions.ablate_stacked`` (copy g runs under set g). Up to ``config.batch_size``
    prompts, times ``copies`` rows, go into each ``generate`` call."""
    replies: list[list[str]] = [[] for _ in range(copies)]
    for start in tqdm(range(0, len(prompts), config.batch_size), desc=f"generate x{copies}", leave=False):
        ids, mask = _encode_left(tokenizer, prompts[start : start + config.batch_size], _device(model))
        texts = _decode(tokenizer, _generate(model, tokenizer, ids.repeat(copies, 1), mask.repeat(copies, 1),
                                             config, config.seed + start))
        for copy in range(copies):
            replies[copy].extend(texts[copy * len(ids) : (copy + 1) * len(ids)])
    return replies


def _next_token(logits: Tensor, config: GenerationConfig, generator: torch.Generator) -> Tensor:
    if not config.do_sample:
        return logits.argmax(-1)
    probs = (logits.float() / config.temperature).softmax(-1)
    return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1).to(logits.device)


@torch.no_grad()
def _cross_patched_batch(
    receiver: nn.Module, donor: nn.Module, neurons: NeuronSet, ids: Tensor, mask: Tensor,
    config: GenerationConfig, eos_id: int | None, pad_id: int, generator: torch.Generator,
) -> Tensor:
    donor_sites = neuron_sites(donor, layers=neurons.layers)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    step_ids, step_positions = ids, positions
    receiver_cache = donor_cache = None
    finished = torch.zeros(len(ids), dtype=torch.bool, device=ids.device)
    generated = []
    for _ in range(config.max_new_tokens):
        common = dict(attention_mask=mask, position_ids=step_positions, use_cache=True)
        with recording(donor_sites) as donor_acts:
            donor_cache = donor(input_ids=step_ids, past_key_values=donor_cache, **common).past_key_values
        with patch(receiver, neurons, dict(donor_acts)):
            out = receiver(input_ids=step_ids, past_key_values=receiver_cache, **common)
        receiver_cache = out.past_key_values
        token = _next_token(out.logits[:, -1], config, generator)
        token = torch.where(finished, torch.full_like(token, pad_id), token)
        generated.append(token)
        if eos_id is not None:
            finished |= token == eos_id
        if bool(finished.all()):
            break
        step_ids = token[:, None]
        step_positions = step_positions[:, -1:] + 1
        mask = torch.cat([mask, torch.ones_like(step_ids)], dim=1)
    return torch.stack(generated, dim=1) if generated else ids[:, :0]


def generate_cross_patched(
    receiver: nn.Module,
    donor: nn.Module,
    neurons: NeuronSet,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    config: GenerationConfig,
) -> list[str]:
    """Replies of ``receiver`` with ``neurons`` set, at every step, to ``donor``'s values on the same
    tokens (see the module docstring). Both models must share architecture and tokenizer."""
    generator = torch.Generator().manual_seed(config.seed)
    replies: list[str] = []
    for start in tqdm(range(0, len(prompts), config.batch_size), desc="generate (cross-patched)", leave=False):
        ids, mask = _encode_left(tokenizer, prompts[start : start + config.batch_size], _device(receiver))
        new_tokens = _cross_patched_batch(receiver, donor, neurons, ids, mask, config,
                                          tokenizer.eos_token_id, tokenizer.pad_token_id, generator)
        replies.extend(_decode(tokenizer, new_tokens))
    return replies
