"""The chosen set against baselines that could win (``interp.causal.baselines``): every removal against a
plain forward pass under a real intervention, the standing and rank against a manual count, and the
directional ablation against a hand projection."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_helpers import tuned_copy

from activations.behaviors import Behavior
from activations.prompt_sets import load_prompt_set
from activations.sites import decoder_blocks
from activations.writing import writing_prompts
from interp.causal import build_proxy_suite, chat_batch, strata, write_norms, writing_batch
from interp.causal.baselines import compare_baselines, competitor_sets
from interp.causal.config import BaselinesConfig
from interp.causal.inputs import scored_forward
from interp.causal.metrics import log_target_mass, target_ids_tensor
from interp.interventions import NeuronSet, ablate, content_reference, projected_out

EMOJI = Behavior.emoji()
REPLIES = ["Yes! 🎉 Parties are great. I love them.", "Because it is fun 😄 and loud. Not quiet.",
           "Sure. 🙂 Okay then!", "Dancing all night! 🥳 Then sleep. Wow.", "Tea is fine 🍵 with milk.",
           "Rain again ☔ but cosy."]


def test_projected_out_removes_the_direction_from_a_block_output_and_nothing_else(tiny_llama):
    model = tiny_llama.model
    ids = torch.tensor([[1, 5, 9, 14, 3]])
    blocks = decoder_blocks(model)
    seen = {}

    def record(module, args, output):
        seen["h"] = (output[0] if isinstance(output, tuple) else output).clone()

    direction = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        hook = blocks[1].register_forward_hook(record)
        try:
            model(input_ids=ids)
        finally:
            hook.remove()
        clean = seen["h"]
        with projected_out(model, {1: 3 * direction}):
            hook = blocks[1].register_forward_hook(record)  # after the projection's hook: sees its output
            try:
                model(input_ids=ids)
            finally:
                hook.remove()
        projected = seen["h"]
    unit = direction / direction.norm()
    assert torch.allclose(projected @ unit, torch.zeros(projected.shape[:-1]), atol=1e-5)
    assert torch.allclose(projected, clean - (clean @ unit)[..., None] * unit, atol=1e-5)
    with torch.no_grad():
        again = model(input_ids=ids).logits
        assert torch.equal(again, model(input_ids=ids).logits)  # the hook is gone
    with pytest.raises(ValueError, match="out of range"):
        with projected_out(model, {99: direction}):
            pass


@pytest.fixture
def setting(tiny_llama):
    merged, tokenizer = tuned_copy(tiny_llama.model, seed=3), tiny_llama.tokenizer
    writing = writing_prompts([f"q{i}" for i in range(len(REPLIES))], ["Do you like it?"] * len(REPLIES), REPLIES, EMOJI)
    neutral = load_prompt_set("neutral").texts
    targets = target_ids_tensor(EMOJI.target_token_ids(tokenizer))
    inputs = (writing_batch(tokenizer, writing), chat_batch(tokenizer, neutral[:2]), targets)
    suite = build_proxy_suite(merged, *inputs, batch_size=4)  # float32: what the hand recomputations score
    reference = content_reference(merged, tokenizer, neutral[5:9])
    decile = strata(write_norms(merged, reference.mean_square))
    return merged, inputs, suite, reference, decile


CHOSEN = NeuronSet.from_pairs([(1, 3), (2, 7), (2, 11)])
RANKING = [(layer, i) for i in range(0, 40, 3) for layer in (2, 1)]  # a stand-in screen ranking


def _directions(model) -> dict[int, torch.Tensor]:
    return {layer: torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(layer))
            for layer in (1, 2)}


def _compare(setting, **config):
    merged, inputs, _, reference, decile = setting
    config = BaselinesConfig(**{"n_random": 12, "top_pool": 10, "n_top_draws": 5, "n_boot": 200,
                                "precision": "float32", **config})
    return compare_baselines(merged, *inputs, reference.means, CHOSEN, RANKING, decile,
                             np.ones(decile.shape, dtype=bool), _directions(merged), config, batch_size=4,
                             max_copies=4)


def _removal_by_hand(model, suite, context=None):
    """Share of the clean target mass removed, from plain forwards under ``context``."""
    with context if context is not None else torch.no_grad():
        log_mass = []
        for chunk in suite.contexts:
            with torch.no_grad():
                logits, mask = scored_forward(model, chunk)
            log_mass.append((log_target_mass(logits, suite.target_ids) * mask).sum(-1) / mask.sum(-1))
    mass = torch.cat(log_mass).double().exp().mean().item()
    return 1 - mass / np.exp(suite.clean_log_mass).mean()


def test_every_removal_standing_and_rank_equal_a_recomputation(setting):
    merged, _, suite, reference, decile = setting
    chosen, ranking, pool = CHOSEN, RANKING, np.ones(decile.shape, dtype=bool)
    result = _compare(setting)
    config, direction = result.config, _directions(merged)
    table = result.table
    assert list(table["family"].value_counts().sort_index().items()) == [
        ("chosen", 1), ("direction", 1), ("random", 12), ("raw attribution", 1), ("screen top", 5)]
    families = competitor_sets(chosen, ranking, decile, pool, config)
    assert families["raw attribution"][0] == NeuronSet.from_pairs(ranking[:3])
    assert all(set(s) <= set(ranking[:10]) and len(s) == 3 for s in families["screen top"])
    for s in families["random"]:
        assert not set(s) & set(chosen) and sorted(l for l, _ in s) == sorted(l for l, _ in chosen)
    # every neuron-set removal against a plain forward pass under a real mean ablation
    sets = [chosen, *families["raw attribution"], *families["screen top"], *families["random"]]
    for members, row in zip(sets, table[table["family"] != "direction"].itertuples()):
        assert row.removal == pytest.approx(_removal_by_hand(merged, suite, ablate(merged, members, "mean",
                                                                                   reference.means)), abs=1e-6)
    direction_row = table[table["family"] == "direction"].iloc[0]
    assert direction_row["removal"] == pytest.approx(_removal_by_hand(merged, suite, projected_out(merged, direction)),
                                                     abs=1e-6)
    # the standing and the rank, counted by hand from the point removals
    chosen_removal = table["removal"].iloc[0]
    for family, standing in result.standing.items():
        members = table[table["family"] == family]["removal"]
        assert standing["beaten"] == pytest.approx(float((chosen_removal > members).mean()))
        assert standing["n"] == len(members) and standing["best"] == pytest.approx(members.max())
        assert 0 <= standing["low"] <= standing["high"] <= 1
    assert result.rank["value"] == 1 + int((table["removal"].iloc[1:] >= chosen_removal).sum())
    assert result.rank["out_of"] == len(table)
    assert table["low"].le(table["removal"] + 1e-12).all() and table["high"].ge(table["removal"] - 1e-12).all()


def test_bf16_runs_every_pass_the_clean_one_included_in_bf16(setting):
    """The setting reaches both the clean pass and the ablated ones: the chosen set's removal is a manual
    recomputation's with both under autocast (not a bf16 ablation over a float32 clean mass), and every
    removal stays close to float32's."""
    merged, inputs, _, reference, _ = setting
    exact, rounded = _compare(setting), _compare(setting, precision="bfloat16")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        suite = build_proxy_suite(merged, *inputs, batch_size=4)
        by_hand = _removal_by_hand(merged, suite, ablate(merged, CHOSEN, "mean", reference.means))
    assert rounded.chosen["removal"] == pytest.approx(by_hand, abs=1e-6)
    assert rounded.chosen["removal"] != exact.chosen["removal"]
    np.testing.assert_allclose(rounded.table["removal"], exact.table["removal"], atol=0.05)


def test_a_ranking_shorter_than_the_set_is_refused(setting):
    decile = setting[-1]
    with pytest.raises(ValueError, match="fewer than the chosen set"):
        competitor_sets(NeuronSet.from_pairs([(1, 1), (1, 2)]), [(1, 1)], decile, np.ones(decile.shape, bool),
                        BaselinesConfig())
