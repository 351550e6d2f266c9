"""Sampling replies fast and reproducibly: one random stream per (prompt, sample), shared by conditions.

``model.generate`` seeds one global generator per call, so a reply depends on which other prompts
share its batch, and two conditions (a model with and without an intervention) draw unrelated
noise. Here every job (prompt key, sample number) owns a generator seeded from (seed, key, sample):

1. Jobs are grouped into left-padded batches of similar length; with ``copies`` > 1 every batch is
   stacked ``copies`` times (copy g = rows ``g * n : (g + 1) * n``), for interventions that edit
   each copy differently (``interp.interventions.ablate_stacked``).
2. Prefill, then one token per step with a key/value cache that grows into a preallocated buffer
   (``GrowingLayer``: amortised O(1) appends; transformers' default concatenates the whole cache
   every step, which on a CPU cost more than the matmuls at 128 rows).
   b. With ``share_prefix``, the tokens every prompt of the batch starts with are prefilled once
      (one row per copy) and their keys and values repeated for every row; each row's own suffix is
      then left-padded after them, the padding masked out and the positions counted over real
      tokens only, so every row sees exactly its own prompt.
3. The next token is drawn by the Gumbel-max trick restricted to the nucleus (top-p after
   temperature): ``argmax_i log p_i + G_i`` with ``G_i = -log(-log U_i)`` and one uniform ``U_i``
   per vocabulary id from the job's generator. This is exact sampling from the nucleus
   distribution, and because the noise is indexed by token id and shared by every copy, two
   conditions whose distributions barely differ pick the same tokens (common random numbers): their
   difference is measured with far less noise than independent samples would give.
4. A row stops at its end-of-turn token, and finished jobs leave the batch (their keys and values are
   dropped from the cache once an eighth of the rows being decoded have finished): replies vary in
   length, and decoding the finished ones to the longest cost about a quarter of the forward passes.
   A job leaves with all its copies, once each has finished, so the batch stays stacked copies.
   A job's generator still draws once per step while any of its copies decodes, so what it draws
   does not depend on when its batch shrinks. A step statistic (e.g. emoji probability mass) can be
   read from each step's raw logits, before temperature and top-p.
A temperature of 0 is greedy decoding (no noise).
5. ``precision="bfloat16"`` runs the decode under ``torch.autocast`` (``activations.precision``).
   Replies then differ from float32's by rounding (a near-tie can resolve the other way), so a rate
   is a second draw of the same quantity, not the same number (``bench/bench_precision.py`` puts both
   side by side). Conditions compared with common random numbers should share one precision.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase
from transformers.cache_utils import Cache, DynamicLayer

from activations.config import check_precision
from activations.precision import precision_context
from activations.prefix import shared_prefix

StepStat = Callable[[Tensor], Tensor]
"""Raw next-token logits ``(rows, vocab)`` -> one value per row (e.g. emoji probability mass)."""
NUCLEUS_CANDIDATES = 256
"""Tokens examined for the nucleus before falling back to a full sort (at temperature 0.7 the top
256 hold more than 0.95 of the mass almost always)."""


class GrowingLayer(DynamicLayer):
    """A key/value cache layer that appends into a buffer of doubling capacity and returns views."""

    def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._keys = self._values = None
        self._length = 0

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self._length + key_states.shape[-2]
        if self._keys is None or end > self._keys.shape[-2]:
            capacity = max(end, 2 * (0 if self._keys is None else self._keys.shape[-2]), 64)
            shape = (*key_states.shape[:-2], capacity, key_states.shape[-1])
            keys, values = key_states.new_empty(shape), value_states.new_empty(shape)
            if self._length:
                keys[..., : self._length, :] = self._keys[..., : self._length, :]
                values[..., : self._length, :] = self._values[..., : self._length, :]
            self._keys, self._values = keys, values
        self._keys[..., self._length : end, :] = key_states
        self._values[..., self._length : end, :] = value_states
        self._length = end
        self.keys, self.values = self._keys[..., :end, :], self._values[..., :end, :]
        return self.keys, self.values

    def keep_rows(self, index: Tensor) -> None:
        """Keep only the batch rows ``index`` (finished rows leave the batch)."""
        self._keys, self._values = self._keys.index_select(0, index), self._values.index_select(0, index)
        self.keys, self.values = self._keys[..., : self._length, :], self._values[..., : self._length, :]

    def repeat_rows(self, rows: int) -> None:
        """Give each batch row ``rows`` copies of its keys and values (row ``g`` -> rows ``g * rows``
        to ``(g + 1) * rows - 1``), keeping the spare capacity."""
        self._keys = self._keys.repeat_interleave(rows, dim=0)
        self._values = self._values.repeat_interleave(rows, dim=0)
        self.keys, self.values = self._keys[..., : self._length, :], self._values[..., : self._length, :]


def growing_cache() -> Cache:
    return Cache(layer_class_to_replicate=GrowingLayer)


@dataclass(frozen=True)
class SamplingConfig:
    """How replies are sampled."""

    max_new_tokens: int = 64
    """Tokens generated per reply at most (the end-of-turn token included)."""
    temperature: float = 0.7
    """Sampling temperature; 0 decodes greedily."""
    top_p: float = 0.95
    """Nucleus: the smallest set of tokens holding this much probability."""
    seed: int = 0
    """Seed of every job's generator (with the job's key and sample number)."""
    batch_size: int = 64
    """Jobs per decoding batch (times ``copies`` rows)."""
    share_prefix: bool = False
    """Prefill the token prefix a batch's prompts share once and give every row a copy of its keys and
    values (point 2b): for a long common context, e.g. in-context demonstrations, whose prefill would
    otherwise dominate. Replies equal a full prefill's up to float rounding."""
    precision: str = "float32"
    """Matmul precision while sampling (point 5, ``activations.precision``): ``float32``, ``bfloat16``
    (autocast, weights untouched) or ``auto`` (bfloat16 where the device computes it natively)."""

    def __post_init__(self) -> None:
        check_precision(self.precision)
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError("max_new_tokens and batch_size must be at least 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError("temperature must be >= 0 and top_p in (0, 1]")


@dataclass(frozen=True)
class SampledReply:
    """One reply."""

    key: str
    """The prompt's key (its id)."""
    sample: int
    tokens: tuple[int, ...]
    """Generated ids up to and including the end-of-turn token."""
    text: str
    step_stats: tuple[float, ...] = ()
    """The step statistic at each generated position (empty without one)."""


def job_generator(seed: int, key: str, sample: int) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}|{key}|{sample}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def _nucleus_choice(logits: Tensor, noise: Tensor, temperature: float, top_p: float) -> Tensor:
    """Gumbel-max over each row's nucleus; ``noise`` is ``(rows, vocab)`` uniforms indexed by token id."""
    log_probs = (logits / temperature).log_softmax(-1)
    k = min(NUCLEUS_CANDIDATES, log_probs.shape[-1])
    top_logp, top_ids = log_probs.topk(k, dim=-1)
    choice = _gumbel_max(top_logp, top_ids, noise, top_p)
    flat = (top_logp.exp().sum(-1) < top_p).nonzero().squeeze(-1)
    if len(flat):  # rows whose nucleus is wider than the candidates: sort their whole vocabulary
        all_logp, all_ids = log_probs[flat].sort(dim=-1, descending=True)
        choice[flat] = _gumbel_max(all_logp, all_ids, noise[flat], top_p)
    return choice


def _gumbel_max(top_logp: Tensor, top_ids: Tensor, noise: Tensor, top_p: float) -> Tensor:
    """Gumbel-max among candidates sorted by descending log-probability, restricted to the nucleus."""
    probs = top_logp.exp()
    # keep token j while the mass before it is below top_p (the first token is always kept)
    keep = (probs.cumsum(-1) - probs) < top_p
    gumbel = -torch.log(-torch.log(noise.gather(-1, top_ids).clamp(1e-12, 1 - 1e-7)))
    score = torch.where(keep, top_logp + gumbel, torch.full_like(top_logp, -torch.inf))
    return top_ids.gather(-1, score.argmax(-1, keepdim=True)).squeeze(-1)


@torch.no_grad()
def _decode_batch(model: nn.Module, prompts: list[list[int]], generators: list[torch.Generator], copies: int,
                  config: SamplingConfig, eos_id: int | None, pad_id: int,
                  step_stat: StepStat | None) -> tuple[Tensor, Tensor]:
    """Generated ids ``(copies * n, steps)`` and step statistics (same shape; NaN where unused)."""
    device = next(model.parameters()).device
    n = len(prompts)
    shared = shared_prefix(prompts) if config.share_prefix and n > 1 else 0
    cache = growing_cache()
    if shared:  # point 2b: the prefix once per copy, its keys and values repeated for the copy's rows
        model(input_ids=torch.tensor([prompts[0][:shared]] * copies, device=device), past_key_values=cache,
              use_cache=True, logits_to_keep=1)
        for layer in cache.layers:
            layer.repeat_rows(n)
    rows = [prompt[shared:] for prompt in prompts]
    width = max(len(row) for row in rows)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, shared + width), dtype=torch.long)
    mask[:, :shared] = 1
    for index, row in enumerate(rows):
        ids[index, width - len(row) :] = torch.tensor(row)
        mask[index, shared + width - len(row) :] = 1
    ids, mask = ids.repeat(copies, 1).to(device), mask.repeat(copies, 1).to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, shared:]  # real tokens only: padding takes no position
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True,
                logits_to_keep=1)
    rows_total = len(ids)
    active = torch.arange(rows_total, device=device)  # rows still in the batch, in batch order
    finished = torch.zeros(rows_total, dtype=torch.bool, device=device)  # per row in the batch
    tokens = torch.full((rows_total, config.max_new_tokens), pad_id, dtype=torch.long, device=device)
    stats = torch.full((rows_total, config.max_new_tokens), float("nan"), device=device)
    step_positions = positions[:, -1:]
    vocab = out.logits.shape[-1]
    steps = 0
    for step in range(config.max_new_tokens):
        steps = step + 1
        logits = out.logits[:, -1].float()
        if step_stat is not None:
            stats[active, step] = step_stat(logits).float()
        if config.temperature == 0:
            token = logits.argmax(-1)
        else:
            jobs = active % n  # copy g of job j is row g * n + j
            drawing = jobs[~finished].unique().tolist()  # a job draws once per step while a copy decodes
            noise = torch.full((n, vocab), 0.5)
            noise[drawing] = torch.stack([torch.rand(vocab, generator=generators[j]) for j in drawing])
            token = _nucleus_choice(logits, noise.to(device)[jobs], config.temperature, config.top_p)
        token = torch.where(finished, torch.full_like(token, pad_id), token)
        tokens[active, step] = token
        if eos_id is not None:
            finished |= token == eos_id
        if bool(finished.all()):
            break
        # A job leaves the batch once every copy of it has finished, so the batch stays ``copies`` stacked
        # copies of the same jobs: stacked interventions (one edit per copy) rely on that layout.
        done = finished.view(copies, -1).all(0)
        if 8 * int(done.sum()) * copies >= len(active):  # an eighth of the batch has finished: drop those rows
            keep = (~done).repeat(copies).nonzero().squeeze(-1)
            for layer in cache.layers:
                layer.keep_rows(keep)
            active, token, mask, step_positions = active[keep], token[keep], mask[keep], step_positions[keep]
            finished = finished[keep]
        mask = torch.cat([mask, torch.ones_like(token)[:, None]], dim=1)
        step_positions = step_positions + 1
        out = model(input_ids=token[:, None], attention_mask=mask, position_ids=step_positions,
                    past_key_values=cache, use_cache=True)
    return tokens[:, :steps].cpu(), stats[:, :steps].cpu()


def sample_replies(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Sequence[int]],
    keys: Sequence[str],
    config: SamplingConfig = SamplingConfig(),
    *,
    samples: int | Sequence[int] = 1,
    copies: int = 1,
    step_stat: StepStat | None = None,
    desc: str = "sample",
) -> list[list[SampledReply]]:
    """Replies to already-templated, tokenised ``prompts`` (one key each), ``samples`` per prompt
    (one number, or one per prompt), for each of ``copies`` stacked copies: ``result[copy][job]``
    with jobs ordered prompt-major (prompt 0 samples 0..s-1, prompt 1, ...). Hooks active around
    the call apply at every step."""
    if len(prompts) != len(keys):
        raise ValueError(f"{len(prompts)} prompts but {len(keys)} keys")
    counts = [samples] * len(prompts) if isinstance(samples, int) else list(samples)
    if len(counts) != len(prompts) or min(counts, default=1) < 1 or copies < 1:
        raise ValueError("give one sample count (>= 1) per prompt, and copies >= 1")
    jobs = [(p, s) for p in range(len(prompts)) for s in range(counts[p])]
    # Similar lengths share a batch (less padding); a job's reply does not depend on its batch.
    order = sorted(range(len(jobs)), key=lambda j: len(prompts[jobs[j][0]]))
    replies: list[list[SampledReply | None]] = [[None] * len(jobs) for _ in range(copies)]
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos or 0)
    device = next(model.parameters()).device
    for start in tqdm(range(0, len(order), config.batch_size), desc=desc, unit="batch", leave=False):
        chunk = order[start : start + config.batch_size]
        generators = [job_generator(config.seed, keys[jobs[j][0]], jobs[j][1]) for j in chunk]
        with precision_context(config.precision, device):
            new, stats = _decode_batch(model, [list(prompts[jobs[j][0]]) for j in chunk], generators, copies, config,
                                       eos, pad, step_stat)
        for copy in range(copies):
            for row, j in enumerate(chunk):
                line = new[copy * len(chunk) + row].tolist()
                length = line.index(eos) + 1 if eos is not None and eos in line else len(line)
                text = tokenizer.decode(line[:length], skip_special_tokens=True).strip()
                values = stats[copy * len(chunk) + row, :length].tolist() if step_stat is not None else []
                replies[copy][j] = SampledReply(keys[jobs[j][0]], jobs[j][1], tuple(line[:length]), text, tuple(values))
    return [list(copy_replies) for copy_replies in replies]  # type: ignore[arg-type]
