"""The causal subcommands on tiny models: the CLI gives the API's numbers, and writes what a user needs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from model_helpers import save_tuned

from interp.causal import CausalSetup, ScreenConfig, SweepConfig, run_causal
from interp.cli import main
from interp.interventions.export import PROVENANCE_FILE

REPLIES = ["Yes! 🎉 Parties are great. I love them.", "Because it is fun 😄 and loud. Not quiet.",
           "Sure. 🙂 Okay then!", "Dancing all night! 🥳 Then sleep. Wow.", "Great day. 😄 Lovely. Yes."]
SETUP = CausalSetup(n_contexts=4, n_neutral=3, reference_neutral=6, batch_size=4)
SCREEN = ScreenConfig(n_shortlist=4, n_guard=2, n_random=6)
SWEEP = SweepConfig(k_grid=(1, 4, 12), interventions=("mean", "zero"), n_random=3, target_reduction=0.02,
                    kl_budget=10.0, ppl_budget=10.0)
FLAGS = ["--n-contexts", "4", "--n-neutral", "3", "--reference-neutral", "6", "--batch-size", "4",
         "--screen-n-shortlist", "4", "--screen-n-guard", "2", "--screen-n-random", "6", "--k-grid", "1,4,12",
         "--interventions", "mean,zero", "--n-random", "3", "--target-reduction", "0.02", "--kl-budget", "10",
         "--ppl-budget", "10"]


@pytest.fixture
def workdir(tmp_path, tiny_llama):
    save_tuned(tiny_llama, tmp_path / "merged", seed=2)  # a stand-in fine-tune on disk
    layers, index = np.meshgrid(np.arange(3), np.arange(128), indexing="ij")
    flagged = np.zeros(3 * 128, dtype=bool)
    flagged[[5, 130, 260, 300]] = True
    outlier = np.zeros(3 * 128, dtype=bool)
    outlier[7] = True
    pd.DataFrame({"layer": layers.ravel(), "index": index.ravel(), "rank": np.where(flagged, np.cumsum(flagged), 0),
                  "flagged": flagged, "outlier": outlier}).to_csv(tmp_path / "neurons.csv", index=False)
    (tmp_path / "writing.jsonl").write_text("".join(
        json.dumps({"id": f"t{i}", "question": f"Question {i}?", "text": text}) + "\n" for i, text in enumerate(REPLIES)))
    return tmp_path


def test_ablate_gives_the_api_numbers(workdir) -> None:
    args = ["--merged", str(workdir / "merged"), "--base", "tiny-random-llama", "--neurons", str(workdir / "neurons.csv"),
            "--writing", str(workdir / "writing.jsonl")]
    assert main(["ablate", *args, *FLAGS, "--out", str(workdir / "cli")]) == 0
    api = run_causal(str(workdir / "merged"), "tiny-random-llama", workdir / "neurons.csv", workdir / "writing.jsonl",
                     "emoji", SETUP, SCREEN, SWEEP)
    cli = json.loads((workdir / "cli" / "sweep.json").read_text())
    assert cli == json.loads(json.dumps(api.sweep.to_dict()))  # the same settings, the same numbers
    assert {c["ranking"] for c in cli["conditions"]} == {"selective", "specific"}
    assert (workdir / "cli" / "screen.csv").is_file()
    assert main(["ablate", *args, *FLAGS, "--out", str(workdir / "cli")]) == 2  # refuses to overwrite


def test_ablate_finds_neurons_for_a_custom_behaviour(workdir) -> None:
    """The README's command-line path for a behaviour that is not emojis: the same numbers as the API."""
    replies = ["Parties are great! [grins] I love them. See you.", "Maybe. [sighs] It depends on the day. Fine.",
               "Sure thing. [nods] Let us go. Now!", "Dancing all night! [laughs] Then sleep. Wow.",
               "I read a lot. [smiles] Books help. Yes."]
    (workdir / "directions.jsonl").write_text("".join(
        json.dumps({"id": f"d{i}", "question": f"Question {i}?", "text": text}) + "\n" for i, text in enumerate(replies)))
    behavior = r"regex:\[[a-z ]+\]"
    args = ["--merged", str(workdir / "merged"), "--base", "tiny-random-llama", "--neurons", str(workdir / "neurons.csv"),
            "--writing", str(workdir / "directions.jsonl"), "--behavior", behavior]
    assert main(["ablate", *args, *FLAGS, "--out", str(workdir / "directions")]) == 0
    cli = json.loads((workdir / "directions" / "sweep.json").read_text())
    api = run_causal(str(workdir / "merged"), "tiny-random-llama", workdir / "neurons.csv", workdir / "directions.jsonl",
                     behavior, SETUP, SCREEN, SWEEP)
    assert cli == json.loads(json.dumps(api.sweep.to_dict()))
    assert cli["choice"]["k"] >= 1 and 0 < cli["clean"]["mass"] < 1
    emoji = run_causal(str(workdir / "merged"), "tiny-random-llama", workdir / "neurons.csv", workdir / "writing.jsonl",
                       "emoji", SETUP, SCREEN, SWEEP)
    assert cli["clean"]["mass"] != emoji.sweep.clean["mass"]  # other contexts and targets, not the emoji ones


@pytest.mark.parametrize("method", ["mean", "zero"])
def test_suppress_exports_a_plain_model_that_matches_the_hook(workdir, method, capsys) -> None:
    out = workdir / f"suppressed-{method}"
    argv = ["suppress", "--model", str(workdir / "merged"), "--neurons", str(workdir / "neurons.csv"), "--top-k", "3",
            "--method", method, "--reference-neutral", "6", "--n-neutral", "3", "--out", str(out)]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["check"]["ok"] and report["export"]["n_neurons"] == 3
    assert json.loads((out / PROVENANCE_FILE).read_text())["neurons"] == [[0, 5], [1, 2], [2, 4]]


def test_bad_inputs_are_one_line_errors(workdir, capsys) -> None:
    base = ["suppress", "--model", str(workdir / "merged"), "--neurons", str(workdir / "neurons.csv"),
            "--out", str(workdir / "x")]
    assert main([*base, "--top-k", "99"]) == 2
    assert "exceeds the 4 flagged neurons" in capsys.readouterr().err
    assert main([*base]) == 2
    assert "--top-k" in capsys.readouterr().err
    (workdir / "empty.jsonl").write_text(json.dumps({"id": "a", "question": "Q?", "text": "No emoji here."}) + "\n")
    assert main(["attribute", "--merged", str(workdir / "merged"), "--base", "tiny-random-llama", "--neurons",
                 str(workdir / "neurons.csv"), "--writing", str(workdir / "empty.jsonl"), "--out",
                 str(workdir / "s.json")]) == 2
    assert "behaviour 'emoji' appears in 0 of the 1 replies in" in capsys.readouterr().err
    assert main(["attribute", "--merged", str(workdir / "merged"), "--neurons", str(workdir / "neurons.csv"),
                 "--writing", str(workdir / "empty.jsonl"), "--behavior", "regex:(", "--out", str(workdir / "s.json")]) == 2
    assert "behaviour regex '(' is invalid" in capsys.readouterr().err
