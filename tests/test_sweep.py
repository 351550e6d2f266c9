"""`interp sweep` on the tiny model: every stage and the report, the table recomputed by hand, fresh
stages skipped and changed ones redone, the question marks of the neuron diffs, and the overlap
statistics against scipy."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from scipy import stats

from activations import load_model
from activations.roles import TokenRole, encode_prompt_set
from interp.cli import main
from interp.causal.uncertainty import paired_mean_difference
from interp.sweep.config import TraitSweepConfig
from interp.sweep.measure import Condition, RowData
from interp.sweep.neurons import FlaggedSet, arms, overlaps, question_prompts
from interp.sweep.pipeline import read_sweep_config, run_sweep, sweep_stages
from interp.sweep.table import build_rows, conditions
from training.inventory import paired_difference

TINY = ["--model", "tiny-random-llama", "--traits", "extraversion", "--train-steps", "1", "--samples", "2",
        "--questions", "4", "--max-new-tokens", "8", "--shots", "1"]


def _ran(caplog) -> list[str]:
    return [m.group(1) for r in caplog.records for m in [re.match(r"stage ([\w-]+)\s+running", r.getMessage())] if m]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    assert main(["sweep", "--out", str(out), *TINY]) == 0
    return out


def test_the_sweep_reports_every_model_of_every_trait(finished) -> None:
    summary = json.loads((finished / "sweep.json").read_text())
    assert [r["condition"] for r in summary["rows"]] == ["base", "fine-tuned: personality", "fine-tuned: injection",
                                                        "in-context: personality"]
    for row in summary["rows"]:
        for key in ("emoji_rate", "emoji_sentence_ratio", "voice", "inventory"):
            assert row[key]["low"] <= row[key]["value"] <= row[key]["high"], (row["condition"], key)
        assert (row["voice_vs_base"] is None) == (row["condition"] == "base")
    names = [s["name"] for s in summary["neurons"][0]["sets"]]
    assert names == ["fine-tuned: personality (extraversion)", "fine-tuned: injection (extraversion)",
                     "in-context: personality (extraversion)"]  # one trait swept: no other trait to control with
    assert len(summary["neurons"][0]["overlaps"]) == 3
    markdown = (finished / "sweep.md").read_text()
    assert "| trait | model | replies | emoji rate |" in markdown and "](figures/sweep.png)" in markdown
    assert "data:image/png;base64," in (finished / "report.html").read_text()
    assert read_sweep_config(finished).traits == ("extraversion",)


class _Length:
    """A stand-in classifier: the voice of a reply is its length / 100."""

    def trait_scores(self, texts, trait):
        return np.array([len(t) / 100 for t in texts])


def test_the_table_equals_a_manual_recomputation(finished) -> None:
    config = read_sweep_config(finished)
    data = [RowData.read(finished, c) for c in conditions(config)]
    rows = build_rows(data, _Length(), seed=0)
    base = data[0]

    def per_question(row, value):
        keys = sorted({r["prompt_id"] for r in row.replies})
        return np.array([np.mean([value(r) for r in row.replies if r["prompt_id"] == k]) for k in keys])

    for row, built in zip(data, rows):
        rates = per_question(row, lambda r: float(r["n_occurrences"] > 0))
        assert built.emoji_rate["value"] == pytest.approx(rates.mean())
        assert built.emoji_rate["value"] == pytest.approx(row.behavior["rate"]["value"])  # the pooled rate
        if rates.mean() == 0:  # no emoji: an exact interval over questions, not the bootstrap's [0, 0]
            upper = stats.beta.ppf(0.975, 1, len(rates))
            assert built.emoji_rate["high"] == pytest.approx(upper) and built.emoji_sentence_ratio["high"] == pytest.approx(upper)
        voice = per_question(row, lambda r: len(r["text"]) / 100)
        assert built.voice["value"] == pytest.approx(voice.mean())
        if row is base:
            continue
        expected = paired_mean_difference(voice, per_question(base, lambda r: len(r["text"]) / 100), seed=0)
        assert (built.voice_vs_base["value"], built.voice_vs_base["low"]) == pytest.approx((expected.value, expected.low))
        d = paired_difference(row.inventory, base.inventory, "extraversion")
        assert built.inventory_vs_base["value"] == pytest.approx(d.value)
        keyed = (row.inventory.items["value"] - base.inventory.items["value"]).to_numpy()
        assert d.value == pytest.approx(keyed.mean())  # balanced keys: the keyed mean difference


def test_a_rerun_skips_fresh_stages_and_a_changed_setting_reruns_what_reads_it(finished, tmp_path, caplog) -> None:
    import shutil

    out = tmp_path / "sweep"
    shutil.copytree(finished, out)
    config = read_sweep_config(out)
    caplog.set_level("INFO", logger="interp.stages")
    records = run_sweep(config, out)
    assert all(r.get("skipped") for r in records.values()) and not _ran(caplog)
    caplog.clear()
    run_sweep(TraitSweepConfig(**{**config.__dict__, "shots": 2}), out)
    assert sorted(_ran(caplog)) == ["measure-in-context-personality-extraversion", "neurons-extraversion", "report"]


def test_stages_share_the_base_per_trait_and_chain_the_fine_tunes() -> None:
    stages = {s.name: s for s in sweep_stages(TraitSweepConfig(traits=("openness", "extraversion")))}
    assert [n for n in stages if n.startswith("measure-base")] == ["measure-base-openness", "measure-base-extraversion"]
    assert stages["measure-personality-openness"].depends == ("merge-personality-openness",)
    assert stages["merge-injection-openness"].depends == ("train-injection-openness",)
    assert "shots" in stages["measure-in-context-personality-openness"].reads
    # the overlap reads the trait's fine-tunes and the control trait's (the next one, cyclically)
    assert stages["neurons-extraversion"].depends == ("merge-personality-extraversion", "merge-injection-extraversion",
                                                      "merge-personality-openness")
    assert [a.name for a in arms(TraitSweepConfig(traits=("openness", "extraversion")), "extraversion")][-2:] == [
        "in-context: personality (openness, control)", "fine-tuned: personality (openness, control)"]
    assert set(stages["report"].depends) == {n for n in stages if n.startswith(("measure-", "neurons-"))}
    assert len([n for n in stages if n.startswith("train-")]) == 4


def test_bad_settings_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="traits must list"):
        TraitSweepConfig(traits=("kindness",))
    with pytest.raises(ValueError, match="neuron_traits"):
        TraitSweepConfig(traits=("openness",))  # the default neuron trait (extraversion) is not swept
    with pytest.raises(ValueError, match="in_context"):
        TraitSweepConfig(in_context=(), neuron_traits=("extraversion",))
    with pytest.raises(ValueError, match="questions"):
        TraitSweepConfig(questions=1)
    with pytest.raises(ValueError, match="unknown condition"):
        Condition("openness", "prompted")


def test_question_marks_cover_the_same_question_tokens_with_and_without_demonstrations() -> None:
    tokenizer = load_model("tiny-random-llama").tokenizer
    config = TraitSweepConfig(questions=5, shots=2)
    plain = question_prompts(tokenizer, "openness", config, None)
    prompted = question_prompts(tokenizer, "openness", config, "personality")
    control = question_prompts(tokenizer, "openness", config, "personality", shown="neuroticism")
    assert control.texts[0] != prompted.texts[0] and control.ids == plain.ids
    assert control.texts[0].endswith(plain.texts[0][-60:])  # other demonstrations, the same question last
    assert plain.ids == prompted.ids
    for a, b, text in zip(encode_prompt_set(tokenizer, plain, "raw"), encode_prompt_set(tokenizer, prompted, "raw"),
                          plain.texts):
        marked = [[i for i, role in zip(e.ids, e.roles) if role == TokenRole.MARKED] for e in (a, b)]
        assert marked[0] == marked[1] and marked[0]
        assert len(b) > len(a) + 50  # the demonstrations come first ...
        assert b.ids[-len(marked[1]) - 5:] == a.ids[-len(marked[0]) - 5:]  # ... and the question ends both alike


def test_overlaps_equal_scipy_and_a_count_by_hand() -> None:
    universe = {(layer, index) for layer in range(4) for index in range(250)}
    rng = np.random.default_rng(0)
    pool = sorted(universe)
    picks = rng.permutation(len(pool))
    a = [list(pool[i]) for i in picks[:60]]
    b = [list(pool[i]) for i in np.concatenate([picks[:20], picks[60:100]])]  # 20 shared
    effects_a = [1.0] * len(a)
    effects_b = [1.0 if n < 15 else -1.0 for n in range(len(b))]  # 15 of the 20 shared (listed first) agree
    sets = [FlaggedSet("A", "change", 60, 0, {}, a, effects_a), FlaggedSet("B", "contrast", 60, 0, {}, b, effects_b)]
    (found,) = overlaps(sets, universe)
    assert (found.n_first, found.n_second, found.n_shared) == (60, 60, 20)
    assert found.jaccard == pytest.approx(20 / 100)
    assert found.expected_shared == pytest.approx(60 * 60 / 1000)
    table = [[20, 40], [40, 1000 - 100]]
    assert found.p_enrichment == pytest.approx(stats.fisher_exact(table, alternative="greater")[1], rel=1e-6)
    assert found.same_direction["value"] == pytest.approx(15 / 20)
    ci = stats.binomtest(15, 20).proportion_ci(0.95, method="exact")
    assert (found.same_direction["low"], found.same_direction["high"]) == pytest.approx((ci.low, ci.high))
    outside = {(9, 9)}
    (restricted,) = overlaps([FlaggedSet("A", "c", 1, 0, {}, [[9, 9]], [1.0]), sets[1]], universe - outside)
    assert restricted.n_first == 0  # a neuron outside the universe (an outlier of some diff) is not counted
