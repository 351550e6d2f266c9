"""Neuron sites: found for every supported architecture, counted right, and equal to act(gate)*up."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    BitsAndBytesConfig,
)

from activations import UnsupportedArchitectureError, neuron_inventory, neuron_sites
from activations.hooks import any_hooks, recording

# Small configs of each supported family; the sizes are arbitrary but the MLP widths differ from
# the hidden size so a wrong module (e.g. up_proj instead of down_proj) would show in d_mlp.
FAMILIES = {
    "llama": dict(hidden_size=32, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2),
    "mistral": dict(hidden_size=32, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2),
    "qwen2": dict(hidden_size=32, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2),
    "qwen3": dict(hidden_size=32, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2, head_dim=8),
    "gemma": dict(hidden_size=32, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2, head_dim=8),
    "gpt2": dict(n_embd=32, n_inner=48, n_head=4),
    "gpt_neox": dict(hidden_size=32, intermediate_size=48, num_attention_heads=4),
    "phi": dict(hidden_size=32, intermediate_size=48, num_attention_heads=4),
}


def _tiny(model_type: str, n_layers: int = 2) -> torch.nn.Module:
    layer_key = "n_layer" if model_type == "gpt2" else "num_hidden_layers"
    config = AutoConfig.for_model(model_type, vocab_size=64, **{layer_key: n_layers}, **FAMILIES[model_type])
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_sites_found_for_each_family(model_type: str) -> None:
    model = _tiny(model_type, n_layers=3)
    sites = neuron_sites(model)
    assert [s.layer for s in sites] == [0, 1, 2]
    assert [s.name for s in sites] == [f"blocks.{i}.mlp.hook_post" for i in range(3)]
    assert all(s.d_mlp == 48 for s in sites)
    ids = torch.randint(0, 64, (2, 5))
    with recording(sites) as acts:
        model(ids)
    assert all(acts[layer].shape == (2, 5, 48) for layer in range(3))
    assert not any_hooks(sites)


def test_gated_site_equals_manual_recomputation(tiny_llama) -> None:
    model = tiny_llama.model
    ids = tiny_llama.tokenizer(["The cat sat on the mat."], return_tensors="pt").input_ids
    mlp_inputs = {}
    handles = [
        layer.mlp.register_forward_pre_hook(lambda m, a, i=i: mlp_inputs.__setitem__(i, a[0]))
        for i, layer in enumerate(model.model.layers)
    ]
    try:
        with recording(neuron_sites(model)) as acts, torch.no_grad():
            model(ids)
    finally:
        for handle in handles:
            handle.remove()
    for i, layer in enumerate(model.model.layers):
        x = mlp_inputs[i]
        manual = layer.mlp.act_fn(layer.mlp.gate_proj(x)) * layer.mlp.up_proj(x)
        torch.testing.assert_close(acts[i], manual, rtol=0, atol=1e-6)


def test_plain_site_equals_manual_recomputation(tiny_gpt2) -> None:
    model = tiny_gpt2.model
    ids = tiny_gpt2.tokenizer(["Hello there, general."], return_tensors="pt").input_ids
    mlp_inputs = {}
    handles = [
        block.mlp.register_forward_pre_hook(lambda m, a, i=i: mlp_inputs.__setitem__(i, a[0]))
        for i, block in enumerate(model.transformer.h)
    ]
    try:
        with recording(neuron_sites(model)) as acts, torch.no_grad():
            model(ids)
    finally:
        for handle in handles:
            handle.remove()
    for i, block in enumerate(model.transformer.h):
        manual = block.mlp.act(block.mlp.c_fc(mlp_inputs[i]))
        torch.testing.assert_close(acts[i], manual, rtol=0, atol=1e-6)


def test_inventory_counts(tiny_llama, tiny_gpt2) -> None:
    assert neuron_inventory(tiny_llama.model)["n_neurons"] == 3 * 128
    assert neuron_inventory(tiny_gpt2.model)["n_neurons"] == 3 * 256


def test_layer_subset_and_out_of_range(tiny_llama) -> None:
    assert [s.layer for s in neuron_sites(tiny_llama.model, layers=[2, 0])] == [2, 0]
    with pytest.raises(ValueError, match="out of range"):
        neuron_sites(tiny_llama.model, layers=[3])


def test_unsupported_architecture_names_class_and_fix() -> None:
    config = AutoConfig.for_model("bloom", vocab_size=64, hidden_size=32, n_layer=1, n_head=4)
    model = AutoModelForCausalLM.from_config(config)
    with pytest.raises(UnsupportedArchitectureError, match=r"BloomForCausalLM.*ARCHITECTURES"):
        neuron_sites(model)


def test_peft_wrapped_model_sites_see_lora_layers(tiny_llama) -> None:
    from peft import LoraConfig, get_peft_model

    base = _tiny("llama")
    peft_model = get_peft_model(base, LoraConfig(r=2, target_modules=["down_proj", "up_proj"]))
    sites = neuron_sites(peft_model)
    assert len(sites) == 2 and all(s.d_mlp == 48 for s in sites)
    assert all(type(s.module).__name__ == "Linear" and hasattr(s.module, "lora_A") for s in sites)
    with recording(sites) as acts:
        peft_model(torch.randint(0, 64, (1, 4)))
    assert acts[0].shape == (1, 4, 48)


def test_bitsandbytes_4bit_sites(tmp_path) -> None:
    # bitsandbytes' CPU 4-bit kernels quantize in blocks of 64, so widths here are multiples of it.
    config = AutoConfig.for_model(
        "llama", vocab_size=64, num_hidden_layers=2, hidden_size=64, intermediate_size=128,
        num_attention_heads=4, num_key_value_heads=2,
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    quantized = AutoModelForCausalLM.from_pretrained(
        tmp_path, quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4")
    )
    sites = neuron_sites(quantized)
    assert type(sites[0].module).__name__ == "Linear4bit"
    assert [s.d_mlp for s in sites] == [128, 128]
    with recording(sites) as acts, torch.no_grad():
        quantized(torch.randint(0, 64, (1, 4)))
    assert acts[1].shape == (1, 4, 128)
