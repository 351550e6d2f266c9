"""Neuron pages (``interp.pages``) on a tiny study built in seconds (``tests/pages_helpers.py``): the page
data against independent recomputation, and the static site's files and links."""

from __future__ import annotations

import re
import sys
import types

import numpy as np
import pandas as pd
import pytest
import torch

from activations.reader import open_cache
from interp.cli import main
from interp.pages import IndexLimits, StudyPages, build_pages
from interp.pages.activity import WINDOW
from pages_helpers import CHOSEN, build_tiny_study

LIMITS = IndexLimits(flagged=6, screen=3, per_class=2)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    torch.set_num_threads(2)
    return build_tiny_study(tmp_path_factory.mktemp("pages") / "study")


@pytest.fixture(scope="module")
def site(study, tmp_path_factory):
    return build_pages(study, tmp_path_factory.mktemp("site") / "pages", LIMITS)


def _manual_acts(model, tokenizer, text: str, layer: int, index: int) -> np.ndarray:
    """The neuron's activations by a plain pre-hook on the layer's down_proj (not activations.hooks)."""
    seen = {}
    handle = model.model.layers[layer].mlp.down_proj.register_forward_pre_hook(
        lambda module, args: seen.setdefault("x", args[0].detach()))
    try:
        with torch.inference_mode():
            model(tokenizer(text, return_tensors="pt").input_ids)
    finally:
        handle.remove()
    return seen["x"][0, :, index].float().numpy()


def test_logit_effects_match_the_output_column_through_norm_and_unembedding(study):
    pages = StudyPages(study, n_tokens=5)
    page = pages.neuron(2, 7)
    for name, model in (("base", pages.models["base"][0]), ("merged", pages.models["merged"][0])):
        column = model.model.layers[2].mlp.down_proj.weight[:, 7].detach()
        by_hand = model.lm_head.weight.detach() @ (model.model.norm.weight.detach() * column)
        top, bottom = torch.topk(by_hand, 5), torch.topk(by_hand, 5, largest=False)
        promoted = page.logits.promoted_base if name == "base" else page.logits.promoted_tuned
        demoted = page.logits.demoted_base if name == "base" else page.logits.demoted_tuned
        tokenizer = pages.models[name][1]
        assert [e.token for e in promoted] == [tokenizer.decode([int(i)]) for i in top.indices]
        assert [e.token for e in demoted] == [tokenizer.decode([int(i)]) for i in bottom.indices]
        np.testing.assert_allclose([e.value for e in promoted], top.values.numpy(), rtol=1e-3, atol=1e-5)
    base_col = pages.models["base"][0].model.layers[2].mlp.down_proj.weight[:, 7].detach()
    tuned_col = pages.models["merged"][0].model.layers[2].mlp.down_proj.weight[:, 7].detach()
    assert page.logits.weight_change == pytest.approx(float((tuned_col - base_col).norm() / base_col.norm()), rel=1e-4)
    assert page.logits.weight_change > 0  # the stand-in fine-tune nudged every MLP weight


def test_top_example_is_the_caches_top_prompt_and_its_values_are_a_hooked_forwards(study):
    pages = StudyPages(study)
    page = pages.neuron(1, 5)
    for name in ("base", "merged"):
        with open_cache(study / "caches" / name / "emoji.h5") as cache:
            peaks = cache.reduction("content_max")[:, cache.layers.index(1), 5]
            texts = list(cache.texts)
        mine = [e for e in page.examples if e.model == name]
        assert len(mine) == 3
        assert mine[0].prompt == int(np.argmax(peaks))
        assert [e.peak for e in mine] == pytest.approx(sorted(peaks, reverse=True)[:3], abs=1e-4)
        model, tokenizer = pages.models[name]
        manual = _manual_acts(model, tokenizer, texts[mine[0].prompt], 1, 5)
        peak = int(np.argmax(np.abs(manual)))
        window = manual[max(0, peak - WINDOW[0]): peak + WINDOW[1] + 1]
        np.testing.assert_allclose(mine[0].values, window, rtol=1e-3, atol=1e-5)
    assert page.scale == pytest.approx(max(abs(v) for e in page.examples for v in e.values))


def test_statistics_and_causal_numbers_are_the_study_files(study):
    page = StudyPages(study).neuron(2, 7)
    row = pd.read_csv(study / "neurons.csv").set_index(["layer", "index"]).loc[(2, 7)]
    (change,) = page.stats
    assert change.name == "change"
    assert change.estimate == pytest.approx(row["change"]) and change.q == pytest.approx(row["q_change"])
    low, high = change.interval
    assert low < change.estimate < high and high - low == pytest.approx(2 * 1.959964 * row["se_change"])
    assert page.causal.patch_estimate == 0.5 and page.causal.exact_effect == 0.375
    assert page.causal.in_choice and page.causal.choice_rank == CHOSEN.index([2, 7]) + 1
    assert page.causal.screen_rank == 1
    position = CHOSEN.index([2, 7])  # where.json's leave-one-out row of this neuron, beside the whole set's share
    assert page.causal.leave_one_out == 0.5 - 0.125 * (position + 1) and page.causal.set_share == 0.5
    assert StudyPages(study).neuron(0, 4).causal.leave_one_out is None  # not in the chosen set: not measured


def test_distributions_are_the_caches_running_statistics(study):
    page = StudyPages(study).neuron(0, 3)
    for found in page.distributions:
        with open_cache(study / "caches" / found.model / "emoji.h5") as cache:
            stats = cache.token_stats()
        assert found.mean == pytest.approx(stats.content.mean[0, 3])
        assert sum(found.hist) == found.n_tokens == int(stats.content.count)
    assert page.distributions[0].mean != page.distributions[1].mean  # base and tuned differ


def test_an_unknown_neuron_names_the_tables_range(study):
    with pytest.raises(ValueError, match=r"L9\.N0 is not in .*layers 0\.\.2"):
        StudyPages(study).neuron(9, 0)


def test_the_site_has_a_page_per_indexed_neuron_and_no_broken_link(study, site):
    listed = StudyPages(study).files.index_neurons(LIMITS)
    assert {tuple(n) for n in CHOSEN} <= set(listed)
    assert site.n_pages == len(listed)
    files = {p.name for p in site.out_dir.glob("*.html")}
    assert files == {"index.html"} | {f"L{a}_N{b}.html" for a, b in listed}
    for name in files:
        text = (site.out_dir / name).read_text()
        for link in re.findall(r"href='([^']+)'", text):
            assert (site.out_dir / link).is_file(), f"{name} links to missing {link}"
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "https://" not in text
    first, second = list(listed)[:2]
    assert f"href='L{second[0]}_N{second[1]}.html'" in (site.out_dir / f"L{first[0]}_N{first[1]}.html").read_text()


def test_the_cli_writes_the_pages(study, tmp_path, capsys):
    assert main(["pages", str(study), "--out", str(tmp_path / "p"), "--flagged", "2", "--screen", "0",
                 "--per-class", "0"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "p" / "index.html")
    assert {p.name for p in (tmp_path / "p").glob("L*.html")} >= {f"L{a}_N{b}.html" for a, b in CHOSEN}


def test_report_tables_link_a_neuron_to_its_page_only_where_it_exists(site):
    from interp.report.blocks import Link, Table, to_html, to_markdown
    from interp.report.sections import neuron_cell

    a, b = CHOSEN[0]
    cell = neuron_cell(site.out_dir.parent, a, b)
    assert cell == Link(f"L{a}.N{b}", f"pages/L{a}_N{b}.html")
    assert neuron_cell(site.out_dir.parent, 2, 10_000) == "L2.N10000"  # no page, no link
    table = [Table(["neuron"], [[cell]])]
    assert f"<a href='pages/L{a}_N{b}.html'>L{a}.N{b}</a>" in to_html("t", table)
    assert f"[L{a}.N{b}](pages/L{a}_N{b}.html)" in to_markdown("t", table, site.out_dir)


def test_show_displays_the_pages_html_in_a_notebook_and_returns_it_without_one(study, monkeypatch):
    page = StudyPages(study).neuron(2, 7)
    shown = []
    fake = types.ModuleType("IPython.display")
    fake.HTML = lambda text: ("HTML", text)
    fake.display = shown.append
    monkeypatch.setitem(sys.modules, "IPython", types.ModuleType("IPython"))
    monkeypatch.setitem(sys.modules, "IPython.display", fake)
    assert page.show() == ("HTML", page.to_html()) and shown == [("HTML", page.to_html())]
    assert "<h1>Neuron L2.N7</h1>" in page.to_html()
    monkeypatch.setitem(sys.modules, "IPython.display", None)  # no IPython: the HTML text comes back
    assert page.show() == page.to_html()


def test_gpt2_logit_effects_read_conv1d_rows_and_centre_under_layernorm(tiny_gpt2):
    from interp.pages.logits import direct_logits, output_columns

    model = tiny_gpt2.model
    row = model.transformer.h[1].mlp.c_proj.weight[9].detach()  # Conv1D stores (in, out): neuron 9's output row
    centred = row - row.mean()
    by_hand = model.lm_head.weight.detach() @ (model.transformer.ln_f.weight.detach() * centred)
    columns = output_columns(model, [(1, 9)])
    torch.testing.assert_close(columns[:, 0], row)
    torch.testing.assert_close(direct_logits(model, columns)[:, 0], by_hand, rtol=1e-4, atol=1e-6)
