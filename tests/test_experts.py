"""Mixture-of-experts sites (Mixtral, Qwen2-MoE with a shared expert, OLMoE, Qwen3-MoE): one site per
expert, equal to a manual recomputation of router and expert MLP, NaN exactly where the router did
not send a token; interventions equal the same edit made on the weights; captures (``interp cache``
on saved tiny random models) reduce each expert over its routed tokens only; what cannot work is
refused with the missing piece named."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from transformers import AutoConfig, AutoModelForCausalLM

import interp
from activations import load_model, neuron_sites
from activations.backends import ModelBatch, open_backend
from activations.capture import capture
from activations.experts import routed
from activations.hooks import any_hooks, recording
from activations.reader import open_cache
from activations.sites import UnsupportedArchitectureError, decoder_blocks
from interp.cli import main
from interp.interventions import NeuronSet
from interp.stats.loading import load_cache

GQA = dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2)
# Expert widths (40) differ from the shared expert's (48) and the hidden size (32), so a wrong
# module or a transposed weight shows in the shapes.
MOE = {
    "mixtral": dict(GQA, intermediate_size=40, num_local_experts=4, num_experts_per_tok=2),
    "qwen2_moe": dict(GQA, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=40,
                      shared_expert_intermediate_size=48),
    "olmoe": dict(GQA, intermediate_size=40, num_experts=4, num_experts_per_tok=2),
    "qwen3_moe": dict(GQA, head_dim=8, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=40),
}
N_EXPERTS, TOP_K, D_EXPERT = 4, 2, 40


def _build(model_type: str, vocab_size: int = 64, **special: int) -> nn.Module:
    config = AutoConfig.for_model(model_type, vocab_size=vocab_size, num_hidden_layers=2, max_position_embeddings=256,
                                  **special, **MOE[model_type])
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


@functools.cache
def _tiny(model_type: str) -> nn.Module:
    """Built once: the tests only hook these models (and unhook them), or edit deep copies."""
    return _build(model_type)


def _manual_experts(moe: nn.Module, x: Tensor) -> dict[int, Tensor]:
    """Each expert's neurons recomputed by hand from the MoE block's input ``(batch, pos, hidden)``: the
    router's top-k by softmax(x W_r^T), then act(x W_gate^T) * (x W_up^T); NaN where not routed."""
    top = torch.topk(torch.softmax(x @ moe.gate.weight.T, -1), TOP_K, dim=-1).indices
    experts = moe.experts
    values = {}
    for expert in range(N_EXPERTS):
        gate_w, up_w = experts.gate_up_proj[expert].chunk(2, dim=0)
        value = experts.act_fn(x @ gate_w.T) * (x @ up_w.T)
        values[expert] = value.masked_fill(~(top == expert).any(-1, keepdim=True), float("nan"))
    return values


@pytest.mark.parametrize("model_type", sorted(MOE))
def test_expert_sites_equal_a_manual_recomputation(model_type: str) -> None:
    model = _tiny(model_type)
    sites = neuron_sites(model)
    shared = model_type == "qwen2_moe"
    per_layer = N_EXPERTS + shared
    assert len(sites) == 2 * per_layer
    names = [f"blocks.1.mlp.experts.{e}.hook_post" for e in range(N_EXPERTS)]
    assert [s.name for s in sites[per_layer + shared:]] == names
    assert all(s.d_mlp == D_EXPERT for s in sites if s.expert is not None)
    blocks = decoder_blocks(model)
    inputs: dict[int, Tensor] = {}
    handles = [block.mlp.register_forward_pre_hook(lambda m, args, i=i: inputs.__setitem__(i, args[0]))
               for i, block in enumerate(blocks)]
    ids = torch.randint(0, 64, (2, 7))
    try:
        with torch.no_grad():
            plain_logits = model(ids).logits
            with recording(sites) as acts:
                hooked_logits = model(ids).logits
    finally:
        for handle in handles:
            handle.remove()
    assert not any_hooks(sites)
    # The dispatch that hooks experts computes what transformers' own experts module computes.
    torch.testing.assert_close(hooked_logits, plain_logits, rtol=0, atol=1e-5)
    with torch.no_grad():
        for layer, block in enumerate(blocks):
            manual = _manual_experts(block.mlp, inputs[layer])
            for expert in range(N_EXPERTS):
                got = acts[f"blocks.{layer}.mlp.experts.{expert}.hook_post"]
                assert got.shape == (2, 7, D_EXPERT)
                torch.testing.assert_close(got, manual[expert], rtol=0, atol=1e-6, equal_nan=True)
            # top-k: every token reaches exactly k experts
            reached = torch.stack([routed(acts[f"blocks.{layer}.mlp.experts.{e}.hook_post"]) for e in range(N_EXPERTS)])
            assert (reached.sum(0) == TOP_K).all()
            if shared:
                mlp = block.mlp.shared_expert
                x = inputs[layer]
                torch.testing.assert_close(acts[f"blocks.{layer}.mlp.shared_expert.hook_post"],
                                           mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x), rtol=0, atol=1e-6)


def _down_columns(model: nn.Module, layer: int, expert: int, columns: list[int], factor: float) -> nn.Module:
    """A copy whose expert's output projection has ``columns`` scaled by ``factor`` (0: zeroed)."""
    edited = copy.deepcopy(model)
    with torch.no_grad():
        decoder_blocks(edited)[layer].mlp.experts.down_proj[expert][:, columns] *= factor
    return edited


@pytest.mark.parametrize("model_type", ["mixtral", "qwen2_moe"])
def test_ablate_and_scale_an_expert_equal_the_same_edit_on_its_weights(model_type: str) -> None:
    model, ids = _tiny(model_type), torch.randint(0, 64, (2, 7))
    site = "blocks.0.mlp.experts.1.hook_post"
    with torch.no_grad():
        base = model(ids).logits
        with interp.ablate(model, site, [0, 3]):
            ablated = model(ids).logits
        with interp.scale(model, {site: [0, 3]}, 2.5):
            scaled = model(ids).logits
        manual_zero = _down_columns(model, 0, 1, [0, 3], 0.0)(ids).logits
        manual_scale = _down_columns(model, 0, 1, [0, 3], 2.5)(ids).logits
    assert (ablated - base).abs().max() > 1e-4
    torch.testing.assert_close(ablated, manual_zero, rtol=0, atol=1e-5)
    torch.testing.assert_close(scaled, manual_scale, rtol=0, atol=1e-5)
    assert not any_hooks(neuron_sites(model))


def test_patching_an_expert_with_its_own_values_changes_nothing_and_undefined_donors_are_refused() -> None:
    model, ids = _tiny("mixtral"), torch.randint(0, 64, (2, 7))
    site = "blocks.1.mlp.experts.2.hook_post"
    sites = [s for s in neuron_sites(model, [1]) if s.name == site]
    with torch.no_grad():
        base = model(ids).logits
        with recording(sites) as acts:
            model(ids)
        own = acts[site].clone()
        with interp.patch(model, site, {site: own}, indices=range(D_EXPERT)):
            same = model(ids).logits
        torch.testing.assert_close(same, base, rtol=0, atol=1e-5)
        # A donor whose router sent none of these tokens to the expert has no values to patch in.
        with pytest.raises(ValueError, match="NaN at tokens routed to it"):
            with interp.patch(model, site, {site: torch.full_like(own, float("nan"))}, indices=[0]):
                model(ids)
    assert not any_hooks(sites)


def test_layer_index_neurons_are_refused_on_a_mixture_of_experts_model() -> None:
    model = _tiny("mixtral")
    with pytest.raises(ValueError, match=r"\(layer, index\) neuron is ambiguous.*experts\.1\.hook_post"):
        with interp.ablate(model, NeuronSet.from_pairs([(0, 3)])):
            pass
    with pytest.raises(ValueError, match="no sites.*experts.9"):
        with interp.ablate(model, "blocks.0.mlp.experts.9.hook_post", [0]):
            pass


def test_other_backends_and_unknown_expert_layouts_are_refused(monkeypatch) -> None:
    model = _tiny("olmoe")
    sites = neuron_sites(model)
    with pytest.raises(ValueError, match="nnsight backend sees a mixture-of-experts.*native"):
        open_backend("nnsight", model, None, sites).__enter__()
    experts = decoder_blocks(model)[1].mlp.experts
    monkeypatch.setattr(experts, "has_bias", True)
    with pytest.raises(UnsupportedArchitectureError, match=r"layer 1: OlmoeExperts.*has_bias=True"):
        neuron_sites(model)


def _saved(model_type: str, folder: Path) -> Path:
    """A tiny random model of ``model_type`` saved with the tiny Llama's tokenizer (SmolLM2's)."""
    tokenizer = load_model("tiny-random-llama").tokenizer
    special = dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                   eos_token_id=tokenizer.eos_token_id)
    _build(model_type, vocab_size=len(tokenizer), **special).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# "Hi" is one content token: with top-2 of 4 experts, two experts of each layer never see its content.
PROMPTS = ["Hello world, how are you today? 🎉 Fine.", "Hi", "A third prompt, a bit longer than the first one."]


@pytest.mark.parametrize("model_type, kind", [("mixtral", "all"), ("qwen2_moe", "experts")])
def test_interp_cache_reduces_each_expert_over_its_routed_tokens(tmp_path, capsys, model_type: str, kind: str) -> None:
    folder = _saved(model_type, tmp_path / model_type)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    out = tmp_path / "acts.h5"
    argv = ["cache", "--model", str(folder), "--prompts", str(prompts), "--out", str(out), "--batch-size", "2",
            "--reductions", "content_mean,content_max,last", "--store-tokens"]
    if kind != "all":  # Qwen2-MoE's shared expert (48) is wider than its routed ones (40): one width per file
        assert main(argv) == 2 and "--sites experts" in capsys.readouterr().err
    assert main([*argv, "--sites", kind]) == 0
    loaded = load_model(str(folder))
    sites = [s for s in neuron_sites(loaded.model) if kind == "all" or s.expert is not None]
    with open_cache(out) as cache:
        assert cache.site_names == [s.name for s in sites] and cache.layers == [s.layer for s in sites]
        assert cache.experts == [-1 if s.expert is None else s.expert for s in sites]
        content_mean, content_max, last = (cache.reduction(n) for n in ("content_mean", "content_max", "last"))
        defined = cache.defined("content_mean")
        stats = cache.token_stats()
        routed_counts = cache._file["prompts/routed_counts"][()]
        for i in range(len(PROMPTS)):
            ids, roles = cache.tokens(i)
            with recording(sites) as acts, torch.no_grad():
                loaded.model(torch.tensor(ids[None].astype(np.int64)))
            for row, site in enumerate(sites):
                values = acts[site.key][0].double().numpy()  # (pos, d): NaN where not routed
                seen = ~np.isnan(values).all(-1)
                assert routed_counts[i, row].tolist() == [int((seen & (roles == r)).sum()) for r in range(4)]
                content = seen & (roles >= 1)
                assert defined[i, row] == content.any()
                if content.any():
                    np.testing.assert_allclose(content_mean[i, row], values[content].mean(0), rtol=1e-5, atol=1e-6)
                    np.testing.assert_allclose(content_max[i, row], values[content].max(0), rtol=1e-5, atol=1e-6)
                else:
                    assert np.isnan(content_mean[i, row]).all() and np.isnan(content_max[i, row]).all()
                assert np.isnan(last[i, row]).all() != seen[-1]
                stored = cache.token_acts(i)[:, row].astype(np.float64)
                np.testing.assert_allclose(stored, values, rtol=2e-3, atol=1e-3)  # float16, NaN where not routed
        # Prompt 1's content reached two experts per layer: the others have NaN rows and count 0.
        assert (~defined[1]).sum() == 2 * 2
        # Running statistics: per row, over the routed tokens of every prompt (merged across batches).
        assert stats.per_row and stats.all.count[:, 0].tolist() == routed_counts.sum((0, 2)).tolist()
    # interp diff keys neurons by (layer, index): an expert cache is refused, naming what is missing.
    with pytest.raises(ValueError, match="mixture-of-experts sites.*no expert column"):
        load_cache(out, "base", "content_mean")


def test_qwen2_moe_shared_experts_are_captured_as_dense_sites(tmp_path) -> None:
    folder = _saved("qwen2_moe", tmp_path / "qwen2_moe")
    cache = capture(load_model(str(folder)), None, PROMPTS, None, sites="shared", reductions=("content_mean",))
    assert cache.site_names == ["blocks.0.mlp.shared_expert.hook_post", "blocks.1.mlp.shared_expert.hook_post"]
    assert cache.d_mlp == 48 and "prompts/routed_counts" not in cache._file  # every token reaches a shared expert
    assert np.isfinite(cache.reduction("content_mean")).all()


def test_interp_cache_and_ablation_on_a_tiny_opt(tmp_path) -> None:
    tokenizer = load_model("tiny-random-llama").tokenizer
    config = AutoConfig.for_model("opt", vocab_size=len(tokenizer), num_hidden_layers=2, hidden_size=32, ffn_dim=48,
                                  num_attention_heads=4, word_embed_proj_dim=32, max_position_embeddings=256,
                                  pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                                  eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "opt")
    tokenizer.save_pretrained(tmp_path / "opt")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    out = tmp_path / "opt.h5"
    assert main(["cache", "--model", str(tmp_path / "opt"), "--prompts", str(prompts), "--out", str(out),
                 "--batch-size", "2", "--reductions", "last"]) == 0
    loaded = load_model(str(tmp_path / "opt"))
    ids = torch.tensor([tokenizer(PROMPTS[0]).input_ids])
    with torch.no_grad():
        base = loaded.model(ids).logits
        with interp.ablate(loaded.model, "blocks.1.mlp.hook_post", [0, 3]):
            ablated = loaded.model(ids).logits
        edited = copy.deepcopy(loaded.model)
        edited.model.decoder.layers[1].fc2.weight[:, [0, 3]] = 0.0
        manual = edited(ids).logits
    assert (ablated - base).abs().max() > 1e-5
    torch.testing.assert_close(ablated, manual, rtol=0, atol=1e-5)
    with open_cache(out) as cache:
        assert cache.reduction("last").shape == (3, 2, 48) and cache.site_names is None


def test_batched_native_capture_equals_one_prompt_at_a_time() -> None:
    # Padding and batching must not change which expert a real token reaches, nor its values.
    model = _tiny("qwen3_moe")
    sites = neuron_sites(model)
    ids = torch.randint(3, 64, (2, 6))
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    with torch.no_grad(), open_backend("native", model, None, sites) as run:
        batched = {k: v.clone() for k, v in run(ModelBatch(ids, mask)).items()}
        alone = run(ModelBatch(ids[1:, :4], mask[1:, :4]))
        for site in sites:
            torch.testing.assert_close(batched[site.key][1, :4], alone[site.key][0], rtol=0, atol=1e-5, equal_nan=True)


def test_a_layer_subset_captures_that_layer_s_experts_in_memory() -> None:
    tokenizer = load_model("tiny-random-llama").tokenizer
    model = _build("olmoe", vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                   bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    cache = capture(model, tokenizer, PROMPTS, None, layers=(1,), reductions=("content_mean",), template="raw")
    assert cache.layers == [1] * N_EXPERTS and cache.experts == list(range(N_EXPERTS))
    assert json.loads(cache.attrs["capture_config"])["layers"] == [1]  # the config names each layer once
    assert cache.reduction("content_mean").shape == (len(PROMPTS), N_EXPERTS, 40)
