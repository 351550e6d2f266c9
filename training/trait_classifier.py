"""A per-reply trait score: which Big-Five voice does a reply read as?

A multinomial logistic regression on word unigrams and bigrams, trained on the Opinion-QA answers of
the training topics and evaluated on the held-out topics (``training.data.split_by_topic``: no
topic is in both), so its accuracy is measured on questions it never saw. Emojis are removed before
the words are counted: the score must not rise because a fine-tune writes emojis, which is exactly
the effect the project studies. A reply's score for a trait is the classifier's probability that the
reply is in that trait's voice.

Fitting: L2-penalised negative log-likelihood (penalty ``l2`` times the squared weights, intercepts
unpenalised), minimised in float64 with L-BFGS; the objective is convex, so the fit is the unique
optimum (the tests compare it with scipy's optimiser on the same objective). The penalty is chosen
from ``ClassifierConfig.l2_grid`` by cross-validated log-loss on the *training* topics (folds by
topic), so the held-out topics are used once, for the accuracy that is reported.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from activations.prompt_sets import strip_emoji
from training.data import TRAITS, OpinionRow, load_opinion_qa, split_by_topic

_WORD = re.compile(r"[a-z']+")


def words(text: str) -> list[str]:
    """Unigrams and bigrams of the lower-cased, emoji-free text."""
    tokens = _WORD.findall(strip_emoji(text).lower())
    return tokens + [f"{a} {b}" for a, b in zip(tokens, tokens[1:])]


@dataclass(frozen=True)
class ClassifierConfig:
    l2_grid: tuple[float, ...] = (1e-3, 1e-4, 1e-5, 1e-6)
    """Penalties per squared weight (relative to the mean log-likelihood) tried by cross-validation."""
    folds: int = 3
    """Topic folds of the training split for choosing the penalty."""
    min_count: int = 2
    """Features seen fewer times in the training answers are dropped."""
    test_fraction: float = 0.4
    split_seed: int = 0


@dataclass(frozen=True)
class Accuracy:
    value: float
    low: float
    high: float
    n: int
    """Held-out answers (topics never trained on); Clopper-Pearson interval."""


class TraitClassifier:
    """Fitted weights over a vocabulary; ``scores(texts)`` gives ``(n, 5)`` probabilities over ``TRAITS``."""

    def __init__(self, vocabulary: dict[str, int], weights: np.ndarray, bias: np.ndarray,
                 heldout: Accuracy | None = None, l2: float | None = None) -> None:
        self.vocabulary, self.weights, self.bias, self.heldout, self.l2 = vocabulary, weights, bias, heldout, l2

    def features(self, texts: Sequence[str]) -> np.ndarray:
        x = np.zeros((len(texts), len(self.vocabulary)))
        for row, text in enumerate(texts):
            for word, count in Counter(words(text)).items():
                column = self.vocabulary.get(word)
                if column is not None:
                    x[row, column] = count
        # length-normalised counts: a long reply is not more of a trait than a short one
        return x / np.maximum(x.sum(1, keepdims=True), 1.0)

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        logits = self.features(texts) @ self.weights + self.bias
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(1, keepdims=True)

    def trait_scores(self, texts: Sequence[str], trait: str) -> np.ndarray:
        """``(n,)``: each text's probability of being in ``trait``'s voice."""
        return self.scores(texts)[:, TRAITS.index(trait)]


def fit_softmax(x: np.ndarray, labels: np.ndarray, n_classes: int, l2: float) -> tuple[np.ndarray, np.ndarray]:
    """Weights ``(d, k)`` and intercepts ``(k,)`` minimising mean NLL + ``l2`` * ||W||^2."""
    features, target = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(labels)
    weights = torch.zeros(x.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([weights, bias], max_iter=500, tolerance_grad=1e-10, tolerance_change=1e-12,
                                  history_size=20, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        loss = objective(weights, bias, features, target, l2)
        loss.backward()
        return loss

    optimiser.step(closure)
    return weights.detach().numpy(), bias.detach().numpy()


def objective(weights, bias, features, target, l2: float):
    """The penalised mean negative log-likelihood (module docstring)."""
    logits = features @ weights + bias
    return torch.nn.functional.cross_entropy(logits, target) + l2 * (weights**2).sum()


def _vocabulary(rows: Sequence[OpinionRow], min_count: int) -> dict[str, int]:
    counts = Counter(word for row in rows for word in set(words(row.answer)))
    return {word: i for i, word in enumerate(sorted(w for w, c in counts.items() if c >= min_count))}


def _fit(rows: Sequence[OpinionRow], l2: float, min_count: int) -> TraitClassifier:
    vocabulary = _vocabulary(rows, min_count)
    if not vocabulary:
        raise ValueError("no word occurs in enough training answers to learn from; give more rows")
    blank = TraitClassifier(vocabulary, np.zeros((len(vocabulary), len(TRAITS))), np.zeros(len(TRAITS)))
    labels = np.array([TRAITS.index(row.trait) for row in rows])
    weights, bias = fit_softmax(blank.features([r.answer for r in rows]), labels, len(TRAITS), l2)
    return TraitClassifier(vocabulary, weights, bias, l2=l2)


def _log_loss(model: TraitClassifier, rows: Sequence[OpinionRow]) -> float:
    p = model.scores([r.answer for r in rows])
    return float(-np.log(p[np.arange(len(rows)), [TRAITS.index(r.trait) for r in rows]]).mean())


def choose_l2(rows: Sequence[OpinionRow], config: ClassifierConfig) -> float:
    """The grid's penalty with the lowest log-loss over topic folds of ``rows``."""
    topics = sorted({r.topic for r in rows})
    fold_of = {topic: i % config.folds for i, topic in enumerate(np.random.default_rng(config.split_seed).permutation(topics))}
    losses = {}
    for l2 in config.l2_grid:
        folds = [([r for r in rows if fold_of[r.topic] != k], [r for r in rows if fold_of[r.topic] == k])
                 for k in range(config.folds)]
        losses[l2] = np.mean([_log_loss(_fit(train, l2, config.min_count), test) for train, test in folds])
    return min(losses, key=losses.get)


def train_classifier(rows: Sequence[OpinionRow] | None = None, config: ClassifierConfig = ClassifierConfig()) -> TraitClassifier:
    """Fit on the training topics' answers (penalty by cross-validation there); ``heldout`` is the
    accuracy on the held-out topics' answers."""
    rows = list(rows) if rows is not None else load_opinion_qa()
    split = split_by_topic(rows, config.test_fraction, config.split_seed)
    l2 = choose_l2(split.train, config) if len(config.l2_grid) > 1 else config.l2_grid[0]
    fitted = _fit(split.train, l2, config.min_count)
    predicted = fitted.scores([r.answer for r in split.test]).argmax(1)
    correct = int((predicted == np.array([TRAITS.index(r.trait) for r in split.test])).sum())
    n = len(split.test)
    interval = stats.binomtest(correct, n).proportion_ci(0.95, method="exact")
    return TraitClassifier(fitted.vocabulary, fitted.weights, fitted.bias,
                           Accuracy(correct / n, interval.low, interval.high, n), l2)
