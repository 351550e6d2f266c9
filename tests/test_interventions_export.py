"""Exported suppressors equal their hook interventions (zero, mean) or a manual recomputation (revert);
interventions work on peft-wrapped models."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from peft import LoraConfig, get_peft_model

from activations import neuron_sites, weights_fingerprint
from activations.hooks import any_hooks
from interp.interventions import (
    NeuronSet,
    ablate,
    check_export,
    content_reference,
    export_suppressed,
    suppressed_model,
    zero_neuron_weights,
)
from interp.interventions.export import PROVENANCE_FILE

PROMPTS = ["The weather today is lovely and", "Tell me about your weekend plans please"]
NEURONS = NeuronSet.from_pairs([(0, 1), (0, 100), (1, 7), (1, 8), (2, 0), (2, 127)])


def _left_padded(loaded):
    loaded.tokenizer.padding_side = "left"
    return loaded.tokenizer(PROMPTS, return_tensors="pt", padding=True)


def _peft_wrapped(loaded):
    """A base + LoRA adapter whose adapter is not a no-op (B initialised at random, not zero)."""
    config = LoraConfig(r=4, target_modules=["down_proj", "up_proj", "q_proj"], init_lora_weights=False)
    torch.manual_seed(1)
    return get_peft_model(copy.deepcopy(loaded.model), config).eval()


@pytest.mark.parametrize("which", ["tiny_llama", "tiny_gpt2"])
@pytest.mark.parametrize("method", ["zero", "mean"])
def test_export_equals_the_hook_intervention(which, method, request, tmp_path) -> None:
    loaded = request.getfixturevalue(which)
    before = weights_fingerprint(loaded.model)
    means = content_reference(loaded.model, loaded.tokenizer, ["A calm walk by the river.", "Numbers and tables."]).means
    out = tmp_path / "suppressed"
    result = export_suppressed(loaded.model, NEURONS, out, tokenizer=loaded.tokenizer, method=method, means=means,
                               source_spec=which)
    assert weights_fingerprint(loaded.model) == before, "the source model must stay untouched"
    assert result.per_layer == {0: 2, 1: 2, 2: 2} and result.method == method
    provenance = json.loads((out / PROVENANCE_FILE).read_text())
    assert provenance["neurons"] == NEURONS.to_list() and provenance["source_spec"] == which
    assert any(p.suffix == ".safetensors" for p in out.iterdir())

    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()  # transformers alone
    enc = _left_padded(loaded)
    check = check_export(loaded.model, reloaded, NEURONS, enc.input_ids, enc.attention_mask, method=method,
                         means=means, max_new_tokens=8, pad_token_id=loaded.tokenizer.pad_token_id, atol=1e-5)
    assert check.ok, check
    # and the suppression matters: the unedited model differs from the export
    with torch.no_grad():
        assert (loaded.model(**enc).logits - reloaded(**enc).logits).abs().max() > 1e-4
    if method == "mean" and which == "tiny_llama":
        assert reloaded.config.mlp_bias  # the means live in the down projections' new biases


def test_revert_export_recomputes_the_neurons_with_the_base_weights(tiny_llama) -> None:
    base = copy.deepcopy(tiny_llama.model)
    tuned = copy.deepcopy(tiny_llama.model)
    with torch.no_grad():
        for parameter in tuned.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    reverted = suppressed_model(tuned, NEURONS, "revert", base=base)
    layer, index = 1, 7
    mlp_r, mlp_b, mlp_t = (m.model.layers[layer].mlp for m in (reverted, base, tuned))
    x = torch.randn(5, 64)
    with torch.no_grad():
        by_hand = mlp_b.act_fn(x @ mlp_b.gate_proj.weight[index]) * (x @ mlp_b.up_proj.weight[index])
        neurons = mlp_r.act_fn(mlp_r.gate_proj(x)) * mlp_r.up_proj(x)
        torch.testing.assert_close(neurons[:, index], by_hand)  # the reverted neuron computes the base function
        other = mlp_t.act_fn(mlp_t.gate_proj(x)) * mlp_t.up_proj(x)
        torch.testing.assert_close(neurons[:, 6], other[:, 6])  # its neighbours keep the fine-tune
        torch.testing.assert_close(mlp_r.down_proj.weight[:, index], mlp_b.down_proj.weight[:, index])
        torch.testing.assert_close(mlp_r.down_proj.weight[:, 6], mlp_t.down_proj.weight[:, 6])
    with pytest.raises(ValueError, match="needs the base model"):
        suppressed_model(tuned, NEURONS, "revert")


def test_export_refuses_to_overwrite(tiny_gpt2, tmp_path) -> None:
    out = tmp_path / "suppressed"
    export_suppressed(tiny_gpt2.model, NEURONS, out, tokenizer=tiny_gpt2.tokenizer, method="zero")
    with pytest.raises(FileExistsError, match="overwrite"):
        export_suppressed(tiny_gpt2.model, NEURONS, out, tokenizer=tiny_gpt2.tokenizer, method="zero")
    export_suppressed(tiny_gpt2.model, NEURONS, out, tokenizer=tiny_gpt2.tokenizer, method="zero", overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["suppressed"], "no temporary folders left behind"


def test_ablation_on_peft_model_equals_ablation_on_merged(tiny_llama) -> None:
    peft_model = _peft_wrapped(tiny_llama)
    merged = copy.deepcopy(peft_model).merge_and_unload().eval()
    enc = _left_padded(tiny_llama)
    sites = neuron_sites(peft_model)
    assert type(sites[0].module).__module__.startswith("peft"), "the site should be the LoRA-wrapped down_proj"
    with torch.no_grad():
        with ablate(peft_model, NEURONS):
            assert any_hooks(sites)
            peft_logits = peft_model(**enc).logits
        with ablate(merged, NEURONS):
            merged_logits = merged(**enc).logits
        clean = peft_model(**enc).logits
    assert not any_hooks(sites)
    torch.testing.assert_close(peft_logits, merged_logits, rtol=1e-4, atol=1e-5)
    assert (peft_logits - clean).abs().max() > 1e-4
    # generation under ablation on the peft model runs through the same hooks
    with torch.no_grad(), ablate(peft_model, NEURONS):
        tokens = peft_model.generate(**enc, max_new_tokens=4, do_sample=False, pad_token_id=tiny_llama.tokenizer.pad_token_id)
    assert tokens.shape[1] == enc.input_ids.shape[1] + 4
    assert not any_hooks(sites)


def test_peft_export_merges_first_and_equals_hook_ablation(tiny_llama) -> None:
    peft_model = _peft_wrapped(tiny_llama)
    with pytest.raises(ValueError, match="peft-wrapped"):
        zero_neuron_weights(peft_model, NEURONS)
    suppressed = suppressed_model(peft_model, NEURONS, "zero")
    assert not hasattr(suppressed, "peft_config")
    enc = _left_padded(tiny_llama)
    check = check_export(peft_model, suppressed, NEURONS, enc.input_ids, enc.attention_mask,
                         pad_token_id=tiny_llama.tokenizer.pad_token_id)
    assert check.ok, check
