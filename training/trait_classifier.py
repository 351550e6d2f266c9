"""A per-reply trait score: which Big-Five voice does a reply read as?

A multinomial logistic regression on word unigrams and bigrams and punctuation marks, trained on the
project's own voice corpus (``training/data/voice_corpus.csv``: 64 short texts per trait in eight
everyday genres, diaries, messages, reviews and so on, on topics none of the Opinion-QA questions
asks about). The fine-tunes learn from Opinion-QA answers; a measure trained on those answers would
score how closely a reply imitates them, not the trait, so it never sees them. Two accuracies say
what it measures: on the corpus's held-out topics (``split_by_topic``: no topic in both), and on the
Opinion-QA answers (texts of another genre and other topics: transfer to what the fine-tunes learn
from). ``accuracy`` scores it on any labelled texts, e.g. model replies.

Emojis are removed before the words are counted: the score must not rise because a fine-tune writes
emojis, which is exactly the effect the project studies. Punctuation is a feature (``!``, ``?``,
``...``, ``;``, ``:``, dashes): it is part of a voice, and a measure without it would hide that a
fine-tune moved style; ``ClassifierConfig(punctuation=False)`` gives the words-only measure beside
it, so a change the two disagree on is a change of punctuation, not of words. A reply's score for a
trait is the classifier's probability that the reply is in that trait's voice.

Fitting: L2-penalised negative log-likelihood (penalty ``l2`` times the squared weights, intercepts
unpenalised), minimised in float64 with L-BFGS; the objective is convex, so the fit is the unique
optimum (the tests compare it with scipy's optimiser on the same objective). The penalty is chosen
from ``ClassifierConfig.l2_grid`` by cross-validated log-loss on the *training* topics (folds by
topic), so the held-out topics are used once, for the accuracy that is reported.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from activations.prompt_sets import strip_emoji
from training.data import TRAITS, OpinionRow, load_opinion_qa, split_by_topic

_WORD = re.compile(r"[a-z']+")
_WORD_OR_MARK = re.compile(r"[a-z']+|[!?;:]|\.\.\.|\u2026|\u2014|--")
_MARKS = {"\u2026": "...", "\u2014": "--"}
VOICE_CORPUS = Path(__file__).parent / "data" / "voice_corpus.csv"


def words(text: str, punctuation: bool = True) -> list[str]:
    """Unigrams and bigrams of the lower-cased, emoji-free text; with ``punctuation`` the marks of the
    module docstring are tokens too (an ellipsis and a dash count the same however they are typed)."""
    pattern = _WORD_OR_MARK if punctuation else _WORD
    tokens = [_MARKS.get(t, t) for t in pattern.findall(strip_emoji(text).lower())]
    return tokens + [f"{a} {b}" for a, b in zip(tokens, tokens[1:])]


@dataclass(frozen=True)
class VoiceText:
    """A text labelled with the trait whose voice it is in, and its topic (the unit of the split)."""

    trait: str
    topic: str
    text: str


def load_voice_corpus(path: str | Path = VOICE_CORPUS) -> list[VoiceText]:
    """The voice corpus (module docstring), or a CSV with the same ``trait``, ``topic`` and ``text`` columns."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"trait", "topic", "text"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: a voice corpus needs the columns trait, topic and text; {sorted(missing)} missing")
        texts = [VoiceText(row["trait"].strip().lower(), row["topic"].strip(), row["text"]) for row in reader]
    unknown = sorted({t.trait for t in texts} - set(TRAITS))
    if unknown:
        raise ValueError(f"{path}: unknown traits {unknown}; use {', '.join(TRAITS)}")
    return texts


def answer_texts(rows: Sequence[OpinionRow]) -> list[VoiceText]:
    """Opinion-QA answers as labelled texts."""
    return [VoiceText(row.trait, row.topic, row.answer) for row in rows]


@dataclass(frozen=True)
class ClassifierConfig:
    l2_grid: tuple[float, ...] = (1e-3, 1e-4, 1e-5, 1e-6)
    """Penalties per squared weight (relative to the mean log-likelihood) tried by cross-validation."""
    folds: int = 3
    """Topic folds of the training split for choosing the penalty."""
    min_count: int = 2
    """Features seen fewer times in the training texts are dropped."""
    test_fraction: float = 0.4
    split_seed: int = 0
    punctuation: bool = True
    """Punctuation marks are features (module docstring)."""


@dataclass(frozen=True)
class Accuracy:
    value: float
    low: float
    high: float
    n: int
    """Texts scored (none trained on); Clopper-Pearson interval."""


class TraitClassifier:
    """Fitted weights over a vocabulary; ``scores(texts)`` gives ``(n, 5)`` probabilities over ``TRAITS``."""

    def __init__(self, vocabulary: dict[str, int], weights: np.ndarray, bias: np.ndarray, punctuation: bool,
                 heldout: Accuracy | None = None, l2: float | None = None, transfer: Accuracy | None = None) -> None:
        self.vocabulary, self.weights, self.bias, self.punctuation = vocabulary, weights, bias, punctuation
        self.heldout, self.l2 = heldout, l2
        self.transfer = transfer
        """Accuracy on the Opinion-QA answers (what the fine-tunes learn from; never trained on)."""

    def features(self, texts: Sequence[str]) -> np.ndarray:
        x = np.zeros((len(texts), len(self.vocabulary)))
        for row, text in enumerate(texts):
            for word, count in Counter(words(text, self.punctuation)).items():
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


def _vocabulary(rows: Sequence[VoiceText], min_count: int, punctuation: bool) -> dict[str, int]:
    counts = Counter(word for row in rows for word in set(words(row.text, punctuation)))
    return {word: i for i, word in enumerate(sorted(w for w, c in counts.items() if c >= min_count))}


def _fit(rows: Sequence[VoiceText], l2: float, config: ClassifierConfig) -> TraitClassifier:
    vocabulary = _vocabulary(rows, config.min_count, config.punctuation)
    if not vocabulary:
        raise ValueError("no word occurs in enough training texts to learn from; give more rows")
    blank = TraitClassifier(vocabulary, np.zeros((len(vocabulary), len(TRAITS))), np.zeros(len(TRAITS)),
                            config.punctuation)
    labels = np.array([TRAITS.index(row.trait) for row in rows])
    weights, bias = fit_softmax(blank.features([r.text for r in rows]), labels, len(TRAITS), l2)
    return TraitClassifier(vocabulary, weights, bias, config.punctuation, l2=l2)


def _log_loss(model: TraitClassifier, rows: Sequence[VoiceText]) -> float:
    p = model.scores([r.text for r in rows])
    return float(-np.log(p[np.arange(len(rows)), [TRAITS.index(r.trait) for r in rows]]).mean())


def accuracy(model: TraitClassifier, texts: Sequence[VoiceText]) -> Accuracy:
    """Share of ``texts`` whose most probable voice is their label, with a Clopper-Pearson interval."""
    if not texts:
        raise ValueError("no texts to score")
    predicted = model.scores([t.text for t in texts]).argmax(1)
    correct = int((predicted == np.array([TRAITS.index(t.trait) for t in texts])).sum())
    interval = stats.binomtest(correct, len(texts)).proportion_ci(0.95, method="exact")
    return Accuracy(correct / len(texts), interval.low, interval.high, len(texts))


def choose_l2(rows: Sequence[VoiceText], config: ClassifierConfig) -> float:
    """The grid's penalty with the lowest log-loss over topic folds of ``rows``."""
    topics = sorted({r.topic for r in rows})
    fold_of = {topic: i % config.folds for i, topic in enumerate(np.random.default_rng(config.split_seed).permutation(topics))}
    losses = {}
    for l2 in config.l2_grid:
        folds = [([r for r in rows if fold_of[r.topic] != k], [r for r in rows if fold_of[r.topic] == k])
                 for k in range(config.folds)]
        losses[l2] = np.mean([_log_loss(_fit(train, l2, config), test) for train, test in folds])
    return min(losses, key=losses.get)


def train_classifier(texts: Sequence[VoiceText] | None = None, config: ClassifierConfig = ClassifierConfig()) -> TraitClassifier:
    """Fit on the training topics of ``texts`` (default: the voice corpus; penalty by cross-validation
    there); ``heldout`` is the accuracy on their held-out topics, ``transfer`` (default corpus only) the
    accuracy on every Opinion-QA answer."""
    default = texts is None
    texts = load_voice_corpus() if default else list(texts)
    split = split_by_topic(texts, config.test_fraction, config.split_seed)
    l2 = choose_l2(split.train, config) if len(config.l2_grid) > 1 else config.l2_grid[0]
    fitted = _fit(split.train, l2, config)
    fitted.heldout = accuracy(fitted, split.test)
    if default:
        fitted.transfer = accuracy(fitted, answer_texts(load_opinion_qa()))
    return fitted
