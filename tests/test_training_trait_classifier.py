"""The per-reply trait classifier: the fit against scipy's optimiser on the same objective, emojis
ignored, punctuation a feature, the voice corpus disjoint from the fine-tunes' data, topics kept
apart, and both accuracies recomputed by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.optimize import minimize

import csv

from training.data import TRAITS, load_opinion_qa, split_by_topic
from training.trait_classifier import (VOICE_CORPUS, ClassifierConfig, VoiceText, answer_texts, fit_softmax,
                                       load_voice_corpus, objective, train_classifier, words)


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


def test_punctuation_marks_are_tokens_unless_left_out() -> None:
    assert words("So good! Really?") == ["so", "good", "!", "really", "?", "so good", "good !", "! really",
                                         "really ?"]
    assert words("So good! Really?", punctuation=False) == ["so", "good", "really", "so good", "good really"]
    assert words("wait\u2026 no \u2014 yes") == words("wait... no -- yes")


def _planted_rows() -> list[VoiceText]:
    """Each trait's texts use its own marker words, over topics split like the real data."""
    markers = {"openness": "curious novel", "conscientiousness": "plan tidy", "extraversion": "party friends",
               "agreeableness": "kind help", "neuroticism": "worry anxious"}
    rng = np.random.default_rng(1)
    filler = "the a it is of and to in that we this".split()
    rows = []
    for t in range(30):
        for trait in TRAITS:
            text = " ".join(rng.choice(filler, 12)) + " " + markers[trait] + " " + " ".join(rng.choice(filler, 5))
            rows.append(VoiceText(trait, f"topic {t}", text))
    return rows


def test_planted_voices_are_recovered_on_held_out_topics_and_emojis_change_nothing() -> None:
    rows = _planted_rows()
    model = train_classifier(rows, ClassifierConfig(l2_grid=(1e-4,)))
    assert model.heldout is not None and model.heldout.low > 0.5  # chance is 1 in 5
    text = rows[7].text
    np.testing.assert_array_equal(model.scores([text]), model.scores([text + " 🎉😄"]))


def test_a_voice_carried_only_by_exclamation_marks_is_seen_only_with_punctuation() -> None:
    """Extraversion's texts differ from the others' only by their "!" (with the same words, shuffled like
    everyone's): the punctuation measure separates it, the words-only measure cannot."""
    rng = np.random.default_rng(2)
    filler = "the a it is of and to in that we this day went see".split()
    rows = []
    for t in range(30):
        for trait in TRAITS:
            body = " ".join(rng.choice(filler, 14))
            rows.append(VoiceText(trait, f"topic {t}", body + ("! so good!" if trait == "extraversion" else ". so good.")))
    config = ClassifierConfig(l2_grid=(1e-4,))
    marked, plain = train_classifier(rows, config), train_classifier(rows, ClassifierConfig(l2_grid=(1e-4,),
                                                                                            punctuation=False))
    held = [r for r in rows if r.topic in set(split_by_topic(rows, config.test_fraction, config.split_seed).test_topics)]
    is_ext = np.array([r.trait == "extraversion" for r in held])
    auc = {}
    for name, model in (("marked", marked), ("plain", plain)):
        score = model.trait_scores([r.text for r in held], "extraversion")
        u = stats.mannwhitneyu(score[is_ext], score[~is_ext]).statistic
        auc[name] = u / (is_ext.sum() * (~is_ext).sum())
    assert auc["marked"] == 1.0  # only extraversion's held-out texts have a "!"
    # words alone carry no signal: chance, within about 2.5 standard errors of an AUC on 12 against 48 texts
    assert abs(auc["plain"] - 0.5) < 0.25, auc


def test_reported_accuracies_are_recomputed_by_hand() -> None:
    config = ClassifierConfig(l2_grid=(1e-5,))
    model = train_classifier(config=config)
    split = split_by_topic(load_voice_corpus(), config.test_fraction, config.split_seed)
    assert not {r.topic for r in split.train} & {r.topic for r in split.test}
    for accuracy, texts in ((model.heldout, split.test), (model.transfer, answer_texts(load_opinion_qa()))):
        predicted = model.scores([r.text for r in texts]).argmax(1)
        truth = [TRAITS.index(r.trait) for r in texts]
        assert accuracy.n == len(texts)
        assert accuracy.value == pytest.approx(float(np.mean(predicted == truth)))
        assert accuracy.low < accuracy.value < accuracy.high


def test_the_voice_corpus_shares_no_topic_with_the_fine_tunes_data_or_the_fresh_questions() -> None:
    corpus = load_voice_corpus()
    assert {t.trait for t in corpus} == set(TRAITS)
    theirs = {row.topic.lower() for row in load_opinion_qa()}
    with open(VOICE_CORPUS.parent / "fresh_questions.csv", newline="", encoding="utf-8") as handle:
        theirs |= {row["topic"].lower() for row in csv.DictReader(handle)}
    assert not {t.topic.lower() for t in corpus} & theirs
    answers = {row.answer for row in load_opinion_qa()}
    assert not {t.text for t in corpus} & answers


def test_a_corpus_without_its_columns_or_with_an_unknown_trait_is_refused(tmp_path) -> None:
    path = tmp_path / "corpus.csv"
    path.write_text("trait,text\nopenness,hello\n")
    with pytest.raises(ValueError, match="topic"):
        load_voice_corpus(path)
    path.write_text("trait,topic,text\ncharisma,x,hello\n")
    with pytest.raises(ValueError, match="charisma"):
        load_voice_corpus(path)
