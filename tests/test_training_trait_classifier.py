"""The per-reply trait classifier: the fit against scipy's optimiser on the same objective, emojis
ignored, topics kept apart, and the held-out accuracy recomputed by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from training.data import TRAITS, OpinionRow, load_opinion_qa, split_by_topic
from training.trait_classifier import ClassifierConfig, fit_softmax, objective, train_classifier, words


def test_fit_is_the_optimum_scipy_finds() -> None:
    rng = np.random.default_rng(0)
    x, labels = rng.random((60, 7)), rng.integers(0, 3, 60)
    weights, bias = fit_softmax(x, labels, 3, l2=1e-2)

    def loss(theta):
        w = torch.tensor(theta[:21].reshape(7, 3), requires_grad=True)
        b = torch.tensor(theta[21:], requires_grad=True)
        value = objective(w, b, torch.tensor(x), torch.tensor(labels), 1e-2)
        value.backward()
        return float(value), np.concatenate([w.grad.numpy().ravel(), b.grad.numpy()])

    reference = minimize(loss, np.zeros(24), jac=True, method="L-BFGS-B", options={"gtol": 1e-12, "ftol": 1e-15})
    np.testing.assert_allclose(weights, reference.x[:21].reshape(7, 3), atol=1e-5)
    np.testing.assert_allclose(bias - bias.mean(), reference.x[21:] - reference.x[21:].mean(), atol=1e-5)


def test_emojis_are_not_words() -> None:
    assert words("Parties are great 🎉🥳 fun!") == words("Parties are great fun!")


def _planted_rows() -> list[OpinionRow]:
    """Each trait's answers use its own marker words, over topics split like the real data."""
    markers = {"openness": "curious novel", "conscientiousness": "plan tidy", "extraversion": "party friends",
               "agreeableness": "kind help", "neuroticism": "worry anxious"}
    rng = np.random.default_rng(1)
    filler = "the a it is of and to in that we this".split()
    rows = []
    for t in range(30):
        for trait in TRAITS:
            text = " ".join(rng.choice(filler, 12)) + " " + markers[trait] + " " + " ".join(rng.choice(filler, 5))
            rows.append(OpinionRow(trait, f"topic {t}", "Q?", text))
    return rows


def test_planted_voices_are_recovered_on_held_out_topics_and_emojis_change_nothing() -> None:
    rows = _planted_rows()
    model = train_classifier(rows, ClassifierConfig(l2_grid=(1e-4,)))
    assert model.heldout is not None and model.heldout.low > 0.5  # chance is 1 in 5
    text = rows[7].answer
    np.testing.assert_array_equal(model.scores([text]), model.scores([text + " 🎉😄"]))


def test_reported_accuracy_is_the_held_out_topics_accuracy() -> None:
    config = ClassifierConfig(l2_grid=(1e-5,))
    model = train_classifier(config=config)
    split = split_by_topic(load_opinion_qa(), config.test_fraction, config.split_seed)
    assert not {r.topic for r in split.train} & {r.topic for r in split.test}
    predicted = model.scores([r.answer for r in split.test]).argmax(1)
    truth = [TRAITS.index(r.trait) for r in split.test]
    assert model.heldout.n == len(split.test)
    assert model.heldout.value == pytest.approx(float(np.mean(predicted == truth)))
    assert model.heldout.low < model.heldout.value < model.heldout.high
