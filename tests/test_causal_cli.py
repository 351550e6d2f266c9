"""The causal subcommands end to end on tiny models: each writes JSON a report can read."""

from __future__ import annotations

import copy
import json

import pandas as pd
import pytest
import torch

from activations import load_model
from interp.cli import main
from interp.interventions.export import CHECK_FILE, PROVENANCE_FILE


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_llama):
    root = tmp_path_factory.mktemp("cli")
    pd.DataFrame({
        "layer": [2, 0, 1, 2, 0, 1],
        "index": [5, 3, 9, 1, 4, 2],
        "class": ["amplified", "activated", "", "emoji_selective", "suppressed", "amplified"],
    }).to_csv(root / "neurons.csv", index=False)
    (root / "questions.txt").write_text("What do you think about jazz?\nHow was the beach?\n")
    (root / "neutral.txt").write_text("The train leaves at nine.\nWater boils at one hundred degrees.\n")
    merged = copy.deepcopy(tiny_llama.model)  # a stand-in fine-tune on disk, loadable by spec
    with torch.no_grad():
        merged.model.layers[1].mlp.up_proj.weight.mul_(1.5)
    merged.save_pretrained(root / "merged")
    tiny_llama.tokenizer.save_pretrained(root / "merged")
    return root


def _common(root) -> list[str]:
    return ["--neurons", str(root / "neurons.csv"), "--questions", str(root / "questions.txt"),
            "--neutral", str(root / "neutral.txt"), "--batch-size", "2"]


def test_ablate_writes_dose_response(workdir) -> None:
    out = workdir / "ablate"
    args = ["ablate", "--model", "tiny-random-llama", "--top-k", "1,3,100", "--random-sets", "2",
            "--max-new-tokens", "2", "--out", str(out), *_common(workdir)]
    assert main(args) == 0
    result = json.loads((out / "dose_response.json").read_text())
    assert [p["k"] for p in result["points"]] == [1, 3, 5]  # 5 flagged rows: the grid is capped
    assert {"emoji_mass", "emoji_rate", "kl_neutral", "ppl_neutral"} <= set(result["baseline"])
    assert (out / "generations.jsonl").read_text().count("\n") == (1 + 3 * 3) * 2
    assert main(args) == 2, "refuses to overwrite without --overwrite"
    assert main([*args, "--overwrite", "--mode", "mean"]) == 0


def test_patch_writes_sufficiency_and_necessity(workdir) -> None:
    out = workdir / "patch"
    assert main(["patch", "--base", "tiny-random-llama", "--merged", str(workdir / "merged"), "--top-k", "3",
                 "--max-new-tokens", "2", "--out", str(out), *_common(workdir)]) == 0
    result = json.loads((out / "patching.json").read_text())
    point = result["points"][0]
    assert point["k"] == 3 and {"sufficiency", "necessity", "sufficiency_recovered"} <= set(point)


def test_attribute_writes_summary_and_all_scores(workdir) -> None:
    out = workdir / "attribution.json"
    assert main(["attribute", "--base", "tiny-random-llama", "--merged", str(workdir / "merged"), "--check", "5",
                 "--questions", str(workdir / "questions.txt"), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["n_neurons"] == 3 * 128 and len(result["check"]["neurons"]) == 5
    scores = pd.read_csv(out.with_suffix(".csv"))
    assert len(scores) == 3 * 128 and list(scores.columns) == ["layer", "index", "estimate"]
    # only layer 1's up_proj changed, so layers 0's neurons (upstream of it) carry no difference
    assert (scores[scores.layer == 0].estimate == 0).all()


def test_suppress_exports_a_loadable_model_that_matches_ablation(workdir) -> None:
    out = workdir / "suppressed"
    assert main(["suppress", "--model", "tiny-random-llama", "--neurons", str(workdir / "neurons.csv"),
                 "--top-k", "3", "--questions", str(workdir / "questions.txt"), "--out", str(out)]) == 0
    check = json.loads((out / CHECK_FILE).read_text())
    assert check["ok"] and check["generations_equal"]
    assert json.loads((out / PROVENANCE_FILE).read_text())["neurons"] == [[0, 3], [2, 1], [2, 5]]
    assert load_model(str(out)).model.model.layers[2].mlp.down_proj.weight[:, [1, 5]].abs().sum() == 0


def test_bad_top_k_is_one_line_error(workdir, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["ablate", "--model", "tiny-random-llama", "--top-k", "ten", "--out", "x", *_common(workdir)])
    assert "comma-separated" in capsys.readouterr().err
