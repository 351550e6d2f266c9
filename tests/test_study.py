"""`interp run --quick` on the tiny model: every stage, the report, fresh stages skipped, changed ones
redone (settings and outputs), and a killed run resumed to the same numbers."""

from __future__ import annotations

import json
import math
import re

import pytest

from activations.atomic_io import read_jsonl
from activations.behaviors import Behavior
from interp.causal.capability import load_capability_items
from interp.cli import main
from interp.study import pipeline, stages_data
from interp.study.config import StudyConfig
from interp.study.pipeline import run_study
from training.behavior import fresh_prompts

QUICK = StudyConfig(model="tiny-random-llama").quick_variant()


def _numbers(summary: dict) -> dict:
    """The study's results, without wall-clock figures (which differ from run to run)."""
    return {key: summary.get(key) for key in ("behavior", "neurons", "sweep", "suppression")}


def _ran(caplog) -> list[str]:
    return [m.group(1) for r in caplog.records for m in [re.match(r"stage (\w+)\s+running", r.getMessage())] if m]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    assert main(["run", "--model", "tiny-random-llama", "--quick", "--out", str(out)]) == 0
    return out


def test_quick_study_writes_report(finished) -> None:
    summary = json.loads((finished / "summary.json").read_text())
    assert summary["study"] == "injection" and summary["quick"] is True
    for key in ("behavior", "neurons", "sweep", "suppression", "timings"):
        assert key in summary, key
    rate = summary["behavior"]["merged"]["rate"]
    assert rate["low"] <= rate["value"] <= rate["high"]
    assert set(summary["neurons"]["counts"]) >= {"activated", "amplified", "suppressed", "emoji_specific", "flagged"}
    assert summary["neurons"]["placebo"]["contrast"] == "placebo"
    assert summary["suppression"]["k"] >= 1 and {"rate_cut", "perplexity", "kl", "random_sets", "fresh_rate_cut",
                                                  "intact_capability"} <= set(summary["suppression"]["checks"])
    html = (finished / "report.html").read_text()
    assert "QUICK RUN" in html and html.count("data:image/png;base64,") >= 5
    # the neuron table shows its effect sizes: a missing column fails here instead of vanishing
    columns = ("rank", "layer", "index", "class", "emoji_reading_std", "d_emoji_reading", "q_emoji_reading",
               "emoji_writing_std", "d_emoji_writing", "q_emoji_writing", "change_std", "fold", "emoji_base_std")
    header = "| " + " | ".join(columns) + " |"
    assert header in (finished / "report.md").read_text()
    assert (finished / "report.md").read_text().count("](figures/") >= 5
    assert (finished / "suppressed" / "config.json").is_file()
    # the null fine-tune (personality, same trait and settings) diffed with the same design, in the report
    null = json.loads((finished / "null" / "comparison.json").read_text())
    assert null["null_label"] == "personality/extraversion" and summary["null"] == null
    calls = json.loads((finished / "neurons.json").read_text())["calls"]["emoji_reading"]
    assert null["study"]["changed"]["emoji_reading"] == calls.get("changed", 0)  # same contrast, same data
    assert "The null fine-tune" in (finished / "report.md").read_text()
    assert "statistics against a null fine-tune" in html


def test_the_suppressor_is_also_exported_by_reverting_and_judged_beside(finished) -> None:
    verdict = json.loads((finished / "suppression" / "verdict.json").read_text())
    other = json.loads((finished / "suppression" / "verdict-revert.json").read_text())
    assert verdict["method"] == "mean" and other["method"] == "revert" and other["neurons"] == verdict["neurons"]
    # each is paired with the merged model's replies of the same (question, sample) jobs: the compared
    # export samples fewer per question, so its merged rate is recomputed from those jobs only
    assert other["samples_per_question"] == QUICK.compare_samples < verdict["samples_per_question"]
    emoji = Behavior.emoji()
    records = [r for r in read_jsonl(finished / "behavior" / "merged.generations.jsonl")
               if r["prompt_set"].startswith("heldout") and r["sample"] < QUICK.compare_samples]
    by_question = {}
    for r in records:
        by_question.setdefault(r["prompt_id"], []).append(emoji.shows(r["text"]))
    assert other["rate"]["merged"]["value"] == pytest.approx(sum(map(sum, by_question.values())) / len(records))
    assert math.isnan(other["random_beaten"]) and not other["checks"]["random_sets"]  # measured for mean only
    assert "reverted to the base model's" in other["sentence"] and "not measured" in other["sentence"]
    assert (finished / "suppressed-revert" / "config.json").is_file()
    summary = json.loads((finished / "summary.json").read_text())
    assert set(summary["suppression_by_method"]) == {"mean", "revert"}
    assert "| revert |" in (finished / "report.md").read_text()


def test_the_verdict_reads_side_effects_where_the_model_writes_and_fresh_questions(finished) -> None:
    verdict = json.loads((finished / "suppression" / "verdict.json").read_text())
    intact = verdict["intactness"]
    assert set(intact["checks"]) >= {"kl_reference_answers", "kl_own_replies", "ppl_reference_answers", "capability"}
    assert {f"intact_{name}": ok for name, ok in intact["checks"].items()}.items() <= verdict["checks"].items()
    assert intact["capability"]["n_items"] == len(load_capability_items())
    assert intact["own"]["n_replies"] == verdict["n_questions"]  # the first sample of each
    assert intact["neutral_style"]["rate"]["change"]["n"] == QUICK.behavior_neutral
    fresh = fresh_prompts()
    merged_fresh = read_jsonl(finished / "suppression" / "fresh-merged.jsonl")
    assert len(merged_fresh) == len(fresh.ids) * QUICK.fresh_samples
    assert verdict["fresh"]["n_questions"] == len(fresh.ids) and "fresh_rate_cut" in verdict["checks"]
    other = json.loads((finished / "suppression" / "verdict-revert.json").read_text())
    assert other["intactness"] is None and other["fresh"] is None  # measured for the verdict's export only
    report = (finished / "report.md").read_text()
    assert "Otherwise intact, where it writes?" in report and "| intact_capability |" in report
    baselines = json.loads((finished / "causal" / "baselines.json").read_text())
    sizes = {family: s["n"] for family, s in baselines["standing"].items()}
    assert sizes == {"raw attribution": 1, "screen top": QUICK.baselines.n_top_draws, "direction": 1,
                     "random": QUICK.baselines.n_random}
    assert baselines["rank"]["out_of"] == 1 + sum(sizes.values()) and "Against baselines that could win" in report


def test_separability_compares_four_models_with_a_matched_random_set(finished) -> None:
    from collections import Counter

    import pandas as pd

    result = json.loads((finished / "separability.json").read_text())
    assert [r["model"] for r in result["rows"]] == ["base", "merged", "merged-suppressed", "random-suppressed"]
    chosen = json.loads((finished / "causal" / "sweep.json").read_text())["choice"]["neurons"]
    random_set = result["random_set"]
    # matched: the same size in the same layers, none of the chosen, flagged or outlier neurons
    assert Counter(layer for layer, _ in random_set) == Counter(layer for layer, _ in chosen)
    table = pd.read_csv(finished / "neurons.csv")
    excluded = {(int(r.layer), int(r.index)) for r in table.itertuples() if r.flagged or r.outlier}
    assert not {tuple(n) for n in random_set} & ({tuple(n) for n in chosen} | excluded)
    for row in result["rows"]:
        assert row["rate"]["low"] <= row["rate"]["value"] <= row["rate"]["high"]
        assert row["trait"]["low"] <= row["trait"]["mean"] <= row["trait"]["high"]
        assert (row["vs_merged"] is None) == (row["model"] == "merged")
        for measure, top in (("reply_trait", 1), ("reply_words", 1), ("exclamations", math.inf)):
            assert 0 <= row[measure]["low"] <= row[measure]["value"] <= row[measure]["high"] <= top
            assert ("vs_merged" in row[measure]) == (row["model"] != "merged")
    # exclamation marks per reply, recomputed by hand from the suppressed model's replies
    replies = read_jsonl(finished / "suppression" / "replies.jsonl")
    per_question = {}
    for r in replies:
        per_question.setdefault(r["key"], []).append(r["text"].count("!"))
    marks = result["rows"][2]["exclamations"]["value"]
    assert marks == pytest.approx(sum(sum(v) / len(v) for v in per_question.values()) / len(per_question))
    assert set(result["classifier"]) == {"voice", "words only"}
    # base, merged and suppressed reuse the replies the earlier stages sampled, all of them
    merged_records = [json.loads(line) for line in (finished / "behavior" / "merged.generations.jsonl").open()]
    heldout = sum(r["prompt_set"].startswith("heldout-") for r in merged_records)
    suppressed = sum(1 for _ in (finished / "suppression" / "replies.jsonl").open())
    assert [r["rate"]["replies"] for r in result["rows"][1:3]] == [heldout, suppressed]
    assert "Emojis vs personality" in (finished / "report.md").read_text()


def test_held_out_inputs_are_prepared_once_inside_the_block_and_again_when_a_file_changes(finished, tmp_path) -> None:
    import shutil

    from interp.causal.experiment import held_out_setup, shared_held_out

    neurons = tmp_path / "neurons.csv"
    shutil.copy(finished / "neurons.csv", neurons)
    args = (str(finished / "merged"), QUICK.model, neurons, finished / "behavior" / "writing.jsonl",
            Behavior.parse(QUICK.target_behavior), QUICK.setup)
    with shared_held_out():
        first = held_out_setup(*args)
        assert held_out_setup(*args) is first
        neurons.write_text(neurons.read_text() + "\n")  # same table, other bytes
        again = held_out_setup(*args)
        assert again is not first and again.merged is not first.merged
    assert held_out_setup(*args) is not again  # outside the block nothing is kept


def test_an_edited_voice_corpus_makes_separability_and_the_report_stale(finished, tmp_path, monkeypatch) -> None:
    import shutil

    from interp.stages import stale_stages
    from training import trait_classifier

    assert stale_stages(pipeline.STAGES, finished, QUICK) == {}
    corpus = tmp_path / "voice_corpus.csv"
    shutil.copy(trait_classifier.VOICE_CORPUS, corpus)
    corpus.write_text(corpus.read_text() + "voice-x,openness,note,a new topic,One more text about something new.\n")
    monkeypatch.setattr(trait_classifier, "VOICE_CORPUS", corpus)
    assert set(stale_stages(pipeline.STAGES, finished, QUICK)) == {"separability", "report"}


def test_rerun_skips_every_stage(finished, caplog) -> None:
    caplog.set_level("INFO")
    before = (finished / "summary.json").read_text()
    records = run_study(QUICK, finished)
    assert _ran(caplog) == []
    assert all(record.get("skipped") is True for record in records.values())
    assert (finished / "summary.json").read_text() == before


def test_report_rebuilds_without_recomputing(finished, tmp_path) -> None:
    import shutil

    study = tmp_path / "study"
    shutil.copytree(finished, study)  # `interp report` rewrites the report behind its stage record
    (study / "report.html").unlink()
    assert main(["report", str(study)]) == 0
    assert (study / "report.html").is_file()
    rebuilt, original = (json.loads((d / "summary.json").read_text()) for d in (study, finished))
    assert _numbers(rebuilt) == _numbers(original)


def test_a_changed_setting_redoes_exactly_the_stages_that_read_it(finished, caplog) -> None:
    caplog.set_level("INFO")
    run_study(QUICK.__class__(**{**QUICK.__dict__, "delta": 0.5}), finished)
    assert _ran(caplog) == ["diff", "null", "examples", "causal", "suppress", "separability", "where", "steer",
                            "baselines", "report"]
    caplog.clear()
    run_study(QUICK, finished)  # back again: the same stages, and nothing else
    assert _ran(caplog) == ["diff", "null", "examples", "causal", "suppress", "separability", "where", "steer",
                            "baselines", "report"]


def test_recomputed_caches_redo_what_reads_them_and_only_changed_bytes_go_further(finished, caplog) -> None:
    caplog.set_level("INFO")
    table = (finished / "neurons.csv").read_bytes()
    run_study(QUICK, finished, force=("cache",))  # new files (capture times differ), so new hashes
    ran = _ran(caplog)
    assert ran[:2] == ["cache", "diff"] and ran[-1] == "report"
    # the statistics came out byte-identical, so the stages that read only them stayed fresh
    assert (finished / "neurons.csv").read_bytes() == table and "causal" not in ran


def test_edited_model_weights_are_recomputed_before_anything_uses_them(finished, caplog) -> None:
    from safetensors.torch import load_file, save_file

    caplog.set_level("INFO")
    weights = finished / "merged" / "model.safetensors"
    original = weights.read_bytes()
    tensors = load_file(weights)
    for name in tensors:
        if "up_proj" in name:
            tensors[name] = tensors[name] * 3
    save_file(tensors, weights, metadata={"format": "pt"})
    run_study(QUICK, finished)
    assert _ran(caplog)[0] == "merge" and weights.read_bytes() == original


def test_edited_neuron_table_is_recomputed_not_trusted(finished, caplog) -> None:
    caplog.set_level("INFO")
    table = finished / "neurons.csv"
    original = table.read_text()
    table.write_text(original.replace("True", "False"))  # unflag everything
    run_study(QUICK, finished)
    assert _ran(caplog)[0] == "diff" and table.read_text() == original


def test_killed_run_resumes_to_same_numbers(finished, tmp_path, monkeypatch) -> None:
    calls = {"n": 0}
    real_capture = stages_data.capture

    def dying_capture(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # the first cache of the merged model: a kill in the middle of the stage
            raise KeyboardInterrupt
        return real_capture(*args, **kwargs)

    monkeypatch.setattr(stages_data, "capture", dying_capture)
    with pytest.raises(KeyboardInterrupt):
        run_study(QUICK, tmp_path)
    assert not (tmp_path / "stages" / "cache.json").exists()
    monkeypatch.setattr(stages_data, "capture", real_capture)
    run_study(QUICK, tmp_path)
    resumed = json.loads((tmp_path / "summary.json").read_text())
    uninterrupted = json.loads((finished / "summary.json").read_text())
    assert _numbers(resumed) == _numbers(uninterrupted)


def test_another_trait_retrains_and_a_failed_run_leaves_no_report_of_the_old_one(finished, tmp_path,
                                                                                 monkeypatch, capsys) -> None:
    import importlib
    import shutil

    diff_module = importlib.import_module("interp.stats.diff")  # interp.stats.diff is also a function
    study = tmp_path / "study"
    shutil.copytree(finished, study)
    openness = QUICK.__class__(**{**QUICK.__dict__, "trait": "openness"})

    def failing_diff(*args, **kwargs):
        raise RuntimeError("diff dies")

    monkeypatch.setattr(diff_module, "diff_caches", failing_diff)
    with pytest.raises(RuntimeError, match="diff dies"):
        run_study(openness, study)
    # the extraversion report must not survive beside an openness fine-tune
    assert not any((study / name).exists() for name in ("report.html", "report.md", "summary.json"))
    assert main(["report", str(study)]) == 2
    assert "diff (no record)" in capsys.readouterr().err
    monkeypatch.undo()
    run_study(openness, study)
    assert json.loads((study / "adapter" / "training.json").read_text())["config"]["trait"] == "openness"
    summary = json.loads((study / "summary.json").read_text())
    assert summary["trait"] == "openness"
    assert (study / "report.md").read_text().startswith("# neurodiff study: injection / openness")


def test_report_is_refused_when_a_setting_changed_since(finished, tmp_path, capsys) -> None:
    import shutil

    study = tmp_path / "study"
    shutil.copytree(finished, study)
    settings = json.loads((study / "study.json").read_text())
    (study / "study.json").write_text(json.dumps({**settings, "delta": settings["delta"] * 2}))
    assert main(["report", str(study)]) == 2
    assert "diff (inputs or settings changed)" in capsys.readouterr().err


def test_force_unknown_stage_is_refused(finished) -> None:
    with pytest.raises(ValueError, match="no such stage"):
        run_study(QUICK, finished, force=("nonsense",))


def test_stage_names_are_the_pipeline(finished) -> None:
    assert pipeline.STAGE_NAMES == ("train", "merge", "behavior", "cache", "diff", "null_train", "null", "examples",
                                    "causal", "suppress", "separability", "where", "steer", "baselines", "report")


def test_replicate_reuses_a_finished_seed_and_compares_seeds_by_recomputation(finished, tmp_path, caplog) -> None:
    import shutil

    import numpy as np
    import pandas as pd

    caplog.set_level("INFO")
    rep = tmp_path / "rep"
    shutil.copytree(finished, rep / "seed-0")  # a copy: the shared study stays as it was
    argv = ["replicate", "--model", "tiny-random-llama", "--quick", "--seeds", "0,1", "--out", str(rep)]
    assert main(argv) == 0
    assert _ran(caplog) == list(pipeline.STAGE_NAMES)  # seed 0 was fresh; only seed 1 ran, every stage once
    result = json.loads((rep / "replication.json").read_text())
    tables = {s: pd.read_csv(rep / f"seed-{s}" / "neurons.csv") for s in (0, 1)}
    flagged = {s: set(map(tuple, t[t["flagged"]][["layer", "index"]].to_numpy().tolist())) for s, t in tables.items()}
    top = {s: set(map(tuple, t[t["flagged"]].nsmallest(100, "rank")[["layer", "index"]].to_numpy().tolist()))
           for s, t in tables.items()}
    (pair,) = result["overlaps"]
    union = flagged[0] | flagged[1]
    expected = len(flagged[0] & flagged[1]) / len(union) if union else None
    assert pair["flagged_jaccard"] == pytest.approx(expected, nan_ok=True)
    union = top[0] | top[1]
    assert pair["top100_jaccard"] == pytest.approx(len(top[0] & top[1]) / len(union) if union else None, nan_ok=True)
    for row in result["seeds"]:
        summary = json.loads((rep / f"seed-{row['seed']}" / "summary.json").read_text())
        assert row["emoji_rate"] == summary["behavior"]["merged"]["rate"]["value"]
        assert row["verdict_passed"] == summary["suppression"]["passed"]
        assert row["n_flagged"] == len(flagged[row["seed"]])
        # split-half: top-100 by |effect| on each half of the prompts, outliers excluded
        t = tables[row["seed"]]
        halves = [set(map(tuple, t[~t["outlier"]].assign(a=lambda d: d[f"emoji_reading_std_{h}"].abs())
                          .nlargest(100, "a")[["layer", "index"]].to_numpy().tolist())) for h in "ab"]
        assert row["split_half_top100_jaccard"] == pytest.approx(
            len(halves[0] & halves[1]) / len(halves[0] | halves[1]))
    for finding in result["findings"]:
        assert finding["replicates"] == (all(h is True for h in finding["held"]) and bool(finding["held"]))
    assert "replicates" in (rep / "replication.md").read_text()
    assert json.loads((rep / "seed-1" / "study.json").read_text())["seed"] == 1
    assert not np.isnan(result["seeds"][1]["emoji_rate"])
    # the study report shows the comparison while its inputs are unchanged, and calls it stale after
    from interp.report.build import build_report

    study = tmp_path / "study"
    shutil.copytree(finished, study)
    shutil.move(rep, study / "replication")
    build_report(study)
    report = (study / "report.md").read_text()
    assert "Replication across training seeds" in report and "Stale" not in report
    assert json.loads((study / "summary.json").read_text())["replication"]["findings"] == result["findings"]
    with (study / "replication" / "seed-1" / "neurons.csv").open("a") as handle:
        handle.write("\n")
    build_report(study)
    assert "**Stale:** seed-1/neurons.csv changed" in (study / "report.md").read_text()
    (study / "replication" / "seed-1" / "neurons.csv").unlink()
    (study / "replication" / "seed-0" / "neurons.csv").unlink()
    build_report(study)
    report = (study / "report.md").read_text()
    assert "Not verifiable in this checkout: 2 seed file(s)" in report and "| seeds |" not in report


def test_replicate_needs_two_seeds(tmp_path, capsys) -> None:
    assert main(["replicate", "--model", "tiny-random-llama", "--quick", "--seeds", "3", "--out", str(tmp_path)]) == 2
    assert "at least two different seeds" in capsys.readouterr().err
