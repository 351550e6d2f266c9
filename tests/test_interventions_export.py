"""Weight-zeroed export equals hook zero-ablation; interventions work on peft-wrapped models."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from peft import LoraConfig, get_peft_model

from activations import load_model, neuron_sites, weights_fingerprint
from activations.hooks import any_hooks
from interp.interventions import NeuronSet, ablate, check_export, export_suppressed, suppressed_copy, zero_neuron_weights
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
def test_export_equals_hook_zero_ablation(which, request, tmp_path) -> None:
    loaded = request.getfixturevalue(which)
    before = weights_fingerprint(loaded.model)
    out = tmp_path / "suppressed"
    result = export_suppressed(loaded.model, NEURONS, out, tokenizer=loaded.tokenizer, source_spec=which)
    assert weights_fingerprint(loaded.model) == before, "the source model must stay untouched"
    assert result.per_layer == {0: 2, 1: 2, 2: 2}
    provenance = json.loads((out / PROVENANCE_FILE).read_text())
    assert provenance["neurons"] == NEURONS.to_list() and provenance["source_spec"] == which
    assert any(p.suffix == ".safetensors" for p in out.iterdir())

    reloaded = load_model(str(out))  # an ordinary HF directory: config, safetensors, tokenizer
    enc = _left_padded(loaded)
    check = check_export(loaded.model, reloaded.model, NEURONS, enc.input_ids, enc.attention_mask,
                         max_new_tokens=8, pad_token_id=loaded.tokenizer.pad_token_id, atol=1e-5)
    assert check.ok, check
    # and the suppression matters: the unablated model differs from the export
    with torch.no_grad():
        assert (loaded.model(**enc).logits - reloaded.model(**enc).logits).abs().max() > 1e-4


def test_export_refuses_to_overwrite(tiny_gpt2, tmp_path) -> None:
    out = tmp_path / "suppressed"
    export_suppressed(tiny_gpt2.model, NEURONS, out, tokenizer=tiny_gpt2.tokenizer)
    with pytest.raises(FileExistsError, match="overwrite"):
        export_suppressed(tiny_gpt2.model, NEURONS, out, tokenizer=tiny_gpt2.tokenizer)
    export_suppressed(tiny_gpt2.model, NEURONS, out, tokenizer=tiny_gpt2.tokenizer, overwrite=True)
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
    suppressed = suppressed_copy(peft_model, NEURONS)
    assert not hasattr(suppressed, "peft_config")
    enc = _left_padded(tiny_llama)
    check = check_export(peft_model, suppressed, NEURONS, enc.input_ids, enc.attention_mask,
                         pad_token_id=tiny_llama.tokenizer.pad_token_id)
    assert check.ok, check
