"""``interp diff`` and ``interp regress`` end to end on small synthetic HDF5 caches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from stats_helpers import synthetic_inputs, write_cache, write_diff_caches

from interp.cli import main

PLANTED = [3, 17]  # flat indices: layer 0 neuron 3, layer 1 neuron 7 (d_mlp 10)


@pytest.fixture
def caches(tmp_path: Path) -> tuple[Path, Path]:
    inputs = synthetic_inputs(np.random.default_rng(3), n_pairs=30, d_mlp=10, n_neutral=20,
                              planted=np.array(PLANTED), shift=2.0)
    return write_diff_caches(tmp_path / "caches", inputs)


def test_diff_directory_form(caches, tmp_path, capsys):
    base, merged = caches
    out = tmp_path / "out" / "neurons.csv"
    assert main(["diff", "--base-dir", str(base), "--merged-dir", str(merged), "--out", str(out)]) == 0
    table = pd.read_csv(out, keep_default_na=False)
    assert len(table) == 20
    assert {"layer", "index", "mean_base_emoji", "d_change", "log2fc_abs", "p_interaction", "q_interaction",
            "p_interaction_neutral", "q_change_wilcoxon", "class"} <= set(table.columns)
    # The two planted neurons lead the ranking and survive the correction.
    assert sorted(zip(table["layer"][:2], table["index"][:2])) == [(0, 3), (1, 7)]
    assert (table["q_interaction"][:2] < 0.05).all()
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["schema"] == "neurodiff.diff/1"
    assert summary["config"]["correction"] == "fdr_bh"
    assert summary["inputs"]["caches"]["merged/neutral"].endswith("neutral.h5")
    assert summary["tests"]["interaction"]["n_corrected"] >= 2
    assert "interaction" in capsys.readouterr().out


def test_diff_file_form_and_overwrite(caches, tmp_path, capsys):
    base, merged = caches
    out = tmp_path / "neurons.csv"
    argv = ["diff", "--base-emoji", str(base / "emoji.h5"), "--base-twin", str(base / "emoji-free.h5"),
            "--merged-emoji", str(merged / "emoji.h5"), "--merged-twin", str(merged / "emoji-free.h5"),
            "--correction", "bonferroni", "--alpha", "0.01", "--prompt-effects", "intercept", "--top", "0",
            "--out", str(out)]
    assert main(argv) == 0
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["config"]["correction"] == "bonferroni" and summary["config"]["alpha"] == 0.01
    assert "interaction_neutral" not in summary["tests"]
    capsys.readouterr()
    assert main(argv) == 2  # refuses to overwrite
    assert "already exist" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0


def test_diff_errors_are_one_line(caches, tmp_path, capsys):
    base, merged = caches
    (merged / "emoji-free.h5").unlink()
    assert main(["diff", "--base-dir", str(base), "--merged-dir", str(merged), "--out", str(tmp_path / "n.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("interp diff: error:") and "emoji-free" in err
    assert main(["diff", "--base-dir", str(base), "--out", str(tmp_path / "n.csv")]) == 2
    assert "no merged caches given" in capsys.readouterr().err


def _checkpoints(tmp_path: Path) -> tuple[list[Path], list[float]]:
    """Eight checkpoints; neuron (1, 2) rises with the metric, the rest wander."""
    rng = np.random.default_rng(11)
    metric = np.linspace(0.0, 0.7, 8)
    paths = []
    for t, value in enumerate(metric):
        acts = rng.normal(0, 1, (6, 2, 10)).astype(np.float32)
        acts[:, 1, 2] = 3.0 * value + rng.normal(0, 0.05, 6)
        paths.append(write_cache(tmp_path / f"ckpt{t}" / "emoji.h5", acts, [f"e{i}" for i in range(6)]))
    return paths, metric.tolist()


def test_regress_lists_and_manifest(tmp_path, caches, capsys):
    paths, metric = _checkpoints(tmp_path)
    out = tmp_path / "regress.csv"
    argv = ["regress", "--caches", *map(str, paths), "--metric", *map(str, metric), "--maxlags", "1",
            "--out", str(out)]
    assert main(argv) == 0
    table = pd.read_csv(out)
    assert (table.loc[0, "layer"], table.loc[0, "index"]) == (1, 2) and table.loc[0, "q"] < 0.05
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["maxlags"] == 1 and summary["metric"] == metric

    manifest = tmp_path / "manifest.csv"
    manifest.write_text("cache,metric\n" + "".join(f"{p.relative_to(tmp_path)},{m}\n" for p, m in zip(paths, metric)))
    diff_table = tmp_path / "neurons.csv"
    pd.DataFrame({"layer": [1, 0], "index": [2, 5], "class": ["amplified", ""],
                  "is_amplified": [True, False]}).to_csv(diff_table, index=False)
    out2 = tmp_path / "regress2.csv"
    assert main(["regress", "--manifest", str(manifest), "--compare", str(diff_table),
                 "--compare-class", "amplified", "--out", str(out2)]) == 0
    overlap = json.loads(out2.with_suffix(".json").read_text())["comparisons"][0]
    assert overlap["n_b"] == 1 and overlap["n_overlap"] == 1 and overlap["n_universe"] == 20
    assert "overlap" in capsys.readouterr().out


def test_regress_argument_errors(tmp_path, capsys):
    assert main(["regress", "--caches", "a.h5", "b.h5", "--metric", "0.1", "--out", str(tmp_path / "r.csv")]) == 2
    assert "one per cache" in capsys.readouterr().err
    assert main(["regress", "--out", str(tmp_path / "r.csv")]) == 2
    assert "--manifest" in capsys.readouterr().err
