"""Which tokens a mean residual difference promotes, and whether each stands out of its null.

1. Each text's difference at the read layer is scored for every vocabulary token through the linearised
   lens (``interp.discover.lens``): ``s[i, t]``. The lens is linear, so a token's score is the mean over
   texts, ``mean_i s[i, t]``, with a normal interval from the texts' spread.
2. Null: if the fine-tune changed nothing systematic, a text's difference is as likely to point one way
   as the other, so flipping the sign of each text's difference leaves the distribution unchanged. The
   statistic ``z[t] = sum_i s[i, t] / sqrt(sum_i s[i, t]^2)`` (a self-normalised sum; its denominator
   does not change under flips) is computed for random sign flips.
3. Multiplicity: per draw, the largest |z| over the whole vocabulary; a token's change is *systematic*
   when its |z| exceeds the (1 - alpha) quantile of those maxima. That controls the chance of calling any
   token systematic under the null at alpha (Westfall-Young max-T), whatever the tokens' correlations.
   |z| is at most sqrt(texts), so a corpus of a few texts can flag nothing (``Discovery.summary`` says so).
4. Systematic is not specific: a difference that is the same on every text (a bias shift) moves every
   token's score consistently, and all would pass step 3. So a token must also be promoted (demoted)
   more than the vocabulary's bulk: its robust z over tokens, (score - median) / (1.4826 MAD), beyond the
   Bonferroni normal quantile for alpha over the vocabulary, one-sided in its direction.
   A token *stands out of its null* when both hold. Two identical models give zero differences: every
   z is 0 and nothing stands out.
5. Against a control (the reply shift only, ``test_scores(control=...)``): a fine-tune on the same data
   without the behaviour, or any fine-tune whose changes should not count. The same replies are also read by
   the control, and a token must stand out, in the same direction, against the base *and* against the
   control (steps 2-4 on ``p_tuned - p_control``). Each test holds alpha, so their conjunction does too
   (an intersection-union test: the null is that either comparison shows nothing). The lists are then
   ranked by the smaller of the two shifts (the larger, for demoted tokens): the probability the fine-tune
   moved beyond both, so a voice the control shares (' I' after any chatty fine-tune) falls down the list.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from statistics import NormalDist

import torch
from jaxtyping import Float
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from interp.discover.lens import ReadOut

_NULL_CHUNK = 50  # sign-flip draws per matrix product: (50, vocab) floats at a time


@dataclass(frozen=True)
class TokenScore:
    """One token's reading."""

    token_id: int
    token: str
    """The token decoded alone (a partial UTF-8 character shows as U+FFFD)."""
    piece: str
    """The tokenizer's own spelling of the token (byte-level BPE: ``Ġ`` for a space)."""
    score: float
    """Mean over texts of the lens score (logit units at the layer's typical scale)."""
    low: float
    high: float
    """95% normal interval of the score over texts."""
    z: float
    """Sign-flip statistic (module docstring, step 2)."""
    vocabulary_z: float
    """Robust z of the score among all tokens' scores (step 4)."""
    stands_out: bool
    """|z| above the max-T threshold (step 3) and specific (step 4), in the same direction."""
    fold: float | None = None
    """For the reply shift: the tuned model's mean probability of the token over the base's; step 4 there."""
    control: TokenScore | None = None
    """The same token's reading against the control (step 5): score, interval, z and fold of
    ``p_tuned - p_control``; None without a control."""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TokenTest:
    """The promoted and demoted tokens of one mean difference, with the null's threshold."""

    promoted: tuple[TokenScore, ...]
    demoted: tuple[TokenScore, ...]
    threshold: float
    """The (1 - alpha) quantile of the largest |z| over the vocabulary under sign flips."""
    vocabulary_threshold: float
    """The normal quantile 1 - alpha / vocabulary that a vocabulary z must pass (step 4)."""
    max_possible_z: float
    """sqrt(texts): no token can reach a larger |z|."""
    n_standing_out: int
    """Tokens of the whole vocabulary that stand out (steps 3 and 4), promoted or demoted."""
    min_fold: float | None = None
    """When step 4 is a fold change (the reply shift): the factor a token's probability must move by."""
    control_threshold: float | None = None
    """With a control (step 5): the max-T threshold of the test against it; None without one."""

    def to_dict(self) -> dict:
        return {"promoted": [t.to_dict() for t in self.promoted], "demoted": [t.to_dict() for t in self.demoted],
                "threshold": self.threshold, "vocabulary_threshold": self.vocabulary_threshold, "max_possible_z": self.max_possible_z,
                "n_standing_out": self.n_standing_out, "min_fold": self.min_fold,
                "control_threshold": self.control_threshold}


def sign_flip_z(scores: Float[Tensor, "text vocab"]) -> tuple[Tensor, Tensor]:
    """``(z, denominator)`` of step 2; z is 0 where every text scores 0."""
    denominator = scores.pow(2).sum(0).sqrt()
    safe = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
    return torch.where(denominator > 0, scores.sum(0) / safe, torch.zeros_like(denominator)), safe


def max_t_threshold(scores: Float[Tensor, "text vocab"], alpha: float, draws: int, generator: torch.Generator) -> float:
    """The (1 - alpha) quantile of max_t |z_t| over random sign flips of the texts (step 3)."""
    _, denominator = sign_flip_z(scores)
    maxima = []
    for start in range(0, draws, _NULL_CHUNK):
        n = min(_NULL_CHUNK, draws - start)
        signs = torch.randint(0, 2, (n, scores.shape[0]), generator=generator).float().mul_(2).sub_(1)
        maxima.append((signs.to(scores.device) @ scores / denominator).abs().amax(1).cpu())
    return float(torch.quantile(torch.cat(maxima), 1 - alpha))


def vocabulary_z(mean: Float[Tensor, " vocab"]) -> Float[Tensor, " vocab"]:
    """Each score's robust z among all tokens' scores (step 4); 0 when the scores have no spread."""
    median = mean.median()
    spread = 1.4826 * (mean - median).abs().median()
    return (mean - median) / spread if spread > 0 else torch.zeros_like(mean)


@dataclass(frozen=True)
class _Reading:
    """Steps 1-4 for every token of one comparison."""

    mean: Tensor
    half: Tensor
    z: Tensor
    vz: Tensor
    standing: Tensor
    threshold: float
    fold: Tensor | None

    def entry(self, tokenizer: PreTrainedTokenizerBase, token: int, standing: Tensor,
              control: TokenScore | None = None) -> TokenScore:
        fold = None if self.fold is None else float(self.fold[token])
        return TokenScore(token, tokenizer.decode([token]), str(tokenizer.convert_ids_to_tokens(token)),
                          float(self.mean[token]), float(self.mean[token] - self.half[token]),
                          float(self.mean[token] + self.half[token]), float(self.z[token]), float(self.vz[token]),
                          bool(standing[token]), fold, control)


def _read(scores: Tensor, *, alpha: float, draws: int, generator: torch.Generator, fold: Tensor | None,
          min_fold: float, vocabulary_threshold: float) -> _Reading:
    n = scores.shape[0]
    mean = scores.mean(0)
    half = 1.96 * scores.std(0, unbiased=True) / n ** 0.5 if n > 1 else torch.zeros_like(mean)
    z, _ = sign_flip_z(scores)
    threshold = max_t_threshold(scores, alpha, draws, generator)
    vz = vocabulary_z(mean)
    # Step 4 in the direction of the score: a promoted token must sit in the upper tail, a demoted one in the lower.
    if fold is None:
        specific = (vz.abs() > vocabulary_threshold) & (torch.sign(vz) == torch.sign(z))
    else:
        specific = torch.where(z > 0, fold >= min_fold, fold <= 1 / min_fold)
    return _Reading(mean, half, z, vz, (z.abs() > threshold) & specific, threshold, fold)


def test_scores(scores: Float[Tensor, "text vocab"], tokenizer: PreTrainedTokenizerBase, *, top: int, alpha: float,
                draws: int, generator: torch.Generator, fold: Tensor | None = None, min_fold: float = 2.0,
                control: tuple[Float[Tensor, "text vocab"], Tensor] | None = None) -> TokenTest:
    """Test every token's per-text scores against its null (steps 2-4): the lens's, or the reply shift's.

    ``fold`` (the reply shift's tuned/base probability ratio per token) replaces step 4's vocabulary z: most
    tokens' probability shifts are near zero, so a robust z over the vocabulary calls any systematic shift
    specific, ' I' and ',' included. There a token is specific when the fine-tune moved its probability by
    at least ``min_fold`` (up for a promoted token, down for a demoted one).

    ``control``: the same texts' scores and fold against a control model (step 5); a token then stands out
    only when it does against both, and the lists rank by the shift beyond both."""
    vocabulary_threshold = float(NormalDist().inv_cdf(1 - alpha / scores.shape[1]))
    options = dict(alpha=alpha, draws=draws, generator=generator, min_fold=min_fold,
                   vocabulary_threshold=vocabulary_threshold)
    base = _read(scores, fold=fold, **options)
    standing, up, down = base.standing, base.mean, base.mean
    other = None
    if control is not None:
        if control[0].shape != scores.shape:
            raise ValueError(f"the control's scores have shape {tuple(control[0].shape)}, the base's "
                             f"{tuple(scores.shape)}: both must read the same texts")
        other = _read(control[0], fold=control[1], **options)
        standing = standing & other.standing & (torch.sign(base.z) == torch.sign(other.z))
        up, down = torch.minimum(base.mean, other.mean), torch.maximum(base.mean, other.mean)

    def entry(token: int) -> TokenScore:
        return base.entry(tokenizer, token, standing,
                          None if other is None else other.entry(tokenizer, token, other.standing))

    k = min(top, up.numel())
    promoted = [entry(int(t)) for t in up.topk(k).indices]
    demoted = [entry(int(t)) for t in (-down).topk(k).indices]
    return TokenTest(tuple(promoted), tuple(demoted), base.threshold, vocabulary_threshold, scores.shape[0] ** 0.5,
                     int(standing.sum()), None if fold is None else min_fold,
                     None if other is None else other.threshold)


def token_test(per_text: Float[Tensor, "text d_model"], scale: float, readout: ReadOut,
               tokenizer: PreTrainedTokenizerBase, *, top: int, alpha: float, draws: int,
               generator: torch.Generator) -> TokenTest:
    """Score every token for the texts' differences at one layer (step 1) and test each against its null."""
    return test_scores(readout.difference_scores(per_text, scale), tokenizer, top=top, alpha=alpha, draws=draws,
                       generator=generator)
