"""``interp diff`` and ``interp regress`` end to end on small synthetic HDF5 caches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from stats_helpers import simulate_study, write_cache, write_sim_caches

from interp.cli import main

@pytest.fixture(scope="module")
def sim():
    return simulate_study(np.random.default_rng(3), n_prompts=30, d_mlp=10, n_planted=2, shift=3.0)


@pytest.fixture
def caches(tmp_path: Path, sim) -> tuple[Path, Path]:
    return write_sim_caches(tmp_path / "caches", sim)


def test_diff_directory_form(caches, sim, tmp_path, capsys):
    base, merged = caches
    out = tmp_path / "out" / "neurons.csv"
    assert main(["diff", "--base-dir", str(base), "--merged-dir", str(merged), "--out", str(out)]) == 0
    table = pd.read_csv(out, keep_default_na=False)
    assert len(table) == 20
    assert {"layer", "index", "rank", "flagged", "outlier", "emoji_reading", "emoji_reading_std", "d_emoji_reading",
            "q_emoji_reading", "q_equiv_emoji_reading", "call_emoji_reading", "q_placebo", "fold", "class"} <= set(table.columns)
    # The planted neurons lead the ranking, flagged, and nothing else is.
    planted = sorted(divmod(int(i), 10) for i in sim.planted)
    assert sorted(zip(table["layer"][:2], table["index"][:2])) == planted
    assert table["flagged"][:2].all() and table["rank"][:2].tolist() == [1, 2]
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["schema"] == "neurodiff.diff/2"
    assert summary["config"]["correction"] == "fdr_bh" and summary["counts"]["flagged"] == int(table["flagged"].sum())
    assert summary["inputs"]["caches"]["merged/filler-b"].endswith("filler-b.h5)")
    assert summary["placebo"]["contrast"] == "placebo"
    assert "placebo" in capsys.readouterr().out


def test_diff_pair_form_config_flags_and_overwrite(caches, tmp_path, capsys):
    base, merged = caches
    out = tmp_path / "neurons.csv"
    argv = ["diff", *[x for c in ("emoji", "filler-a", "filler-b") for x in ("--base", f"{c}={base / c}.h5")],
            "--merged-dir", str(merged), "--correction", "bonferroni", "--alpha", "0.01", "--delta", "0.5",
            "--fold", "3", "--top", "0", "--out", str(out)]
    assert main(argv) == 0
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["config"]["correction"] == "bonferroni" and summary["config"]["alpha"] == 0.01
    assert summary["config"]["delta"] == 0.5 and summary["config"]["classify"]["fold"] == 3.0
    capsys.readouterr()
    assert main(argv) == 2  # refuses to overwrite
    assert "already exist" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0


def test_diff_errors_are_one_line(caches, tmp_path, capsys):
    base, merged = caches
    (merged / "filler-a.h5").unlink()
    assert main(["diff", "--base-dir", str(base), "--merged-dir", str(merged), "--out", str(tmp_path / "n.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("interp diff: error:") and "filler-a" in err
    assert main(["diff", "--out", str(tmp_path / "n.csv")]) == 2
    assert "no caches given" in capsys.readouterr().err


def _checkpoints(tmp_path: Path) -> tuple[list[Path], list[float]]:
    """Eight checkpoints; neuron (1, 2) rises with the metric, the rest wander."""
    rng = np.random.default_rng(11)
    metric = np.linspace(0.0, 0.7, 8)
    paths = []
    for t, value in enumerate(metric):
        acts = rng.normal(0, 1, (6, 2, 10)).astype(np.float32)
        acts[:, 1, 2] = 3.0 * value + rng.normal(0, 0.05, 6)
        paths.append(write_cache(tmp_path / f"ckpt{t}" / "emoji.h5", {"content_mean": acts}, [f"e{i}" for i in range(6)]))
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
