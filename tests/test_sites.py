"""Neuron sites: found for every architecture with a row, inferred the same way without one, counted
right, equal to a manual recomputation of the MLP activation, and refused clearly where they cannot be."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch
from torch import Tensor, nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    BitsAndBytesConfig,
    PretrainedConfig,
)

from activations import UnsupportedArchitectureError, neuron_inventory, neuron_sites
from activations import sites as sites_module
from activations.hooks import any_hooks, hooked, recording
from activations.sites import ARCHITECTURES, ArchSpec, decoder_blocks, infer_spec, site_source

Recompute = Callable[[nn.Module, Tensor], Tensor]
"""(the module holding the MLP's parts, the MLP's input) -> the neuron vector, computed by hand."""


def gated(mlp: nn.Module, x: Tensor) -> Tensor:
    return mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x)


def fused_gated(mlp: nn.Module, x: Tensor) -> Tensor:
    # Phi-3 and GLM keep gate and up in one projection, gate first.
    gate, up = mlp.gate_up_proj(x).chunk(2, dim=-1)
    return up * mlp.activation_fn(gate)


def plain(proj: str, act: str) -> Recompute:
    return lambda mlp, x: getattr(mlp, act)(getattr(mlp, proj)(x))


def opt_rows(fc1: nn.Module, x: Tensor) -> Tensor:
    # OPT's fc1 sees (batch * pos, hidden) rows in row-major (batch, pos) order; relu is the config's
    # default activation_function. The test batch below is (2, 6).
    return torch.relu(fc1(x)).reshape(2, 6, -1)


@dataclass(frozen=True)
class Family:
    """A tiny config of one architecture and how to recompute its MLP activation by hand."""

    config: dict
    recompute: Recompute = gated
    mlp: str = "mlp"
    """Path from a block to the MLP module: its input is the MLP's input, its attributes the parts."""
    d_mlp: int = 48
    special: dict = field(default_factory=lambda: dict(pad_token_id=0, bos_token_id=1, eos_token_id=2))


# MLP widths (48) differ from the hidden size (32), so a wrong module (up_proj for down_proj, or
# attention's output) would show in d_mlp. BLOOM and MPT hard-code 4 * hidden.
GQA = dict(hidden_size=32, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2)
GQA_HD = dict(GQA, head_dim=8)
MHA = dict(hidden_size=32, intermediate_size=48, num_attention_heads=4)
GPT = dict(n_embd=32, n_inner=48, n_head=4)
FAMILIES: dict[str, Family] = {
    "llama": Family(GQA),
    "mistral": Family(GQA),
    "qwen2": Family(GQA),
    "qwen3": Family(GQA_HD),
    "gemma": Family(GQA_HD),
    "gemma2": Family(GQA_HD),
    "gemma3_text": Family(GQA_HD),
    "olmo": Family(GQA),
    "olmo2": Family(GQA),
    "olmo3": Family(GQA),
    "granite": Family(GQA),
    "cohere": Family(GQA),
    "cohere2": Family(GQA),
    "stablelm": Family(GQA),
    "smollm3": Family(GQA),
    "helium": Family(GQA_HD),
    "exaone4": Family(GQA),
    "phi3": Family(GQA, fused_gated),
    "glm": Family(GQA_HD, fused_gated),
    "glm4": Family(GQA_HD, fused_gated),
    "nemotron": Family(GQA_HD, plain("up_proj", "act_fn")),
    "phi": Family(MHA, plain("fc1", "activation_fn")),
    "starcoder2": Family(GQA, plain("c_fc", "act")),
    "persimmon": Family(MHA, plain("dense_h_to_4h", "act")),
    "gpt2": Family(GPT, plain("c_fc", "act")),
    "gpt_bigcode": Family(GPT, plain("c_fc", "act")),
    "gpt_neo": Family(dict(MHA, num_heads=4, attention_types=[[["global", "local"], 1]]), plain("c_fc", "act")),
    "gptj": Family(dict(GPT, rotary_dim=4), plain("fc_in", "act")),
    "codegen": Family(dict(GPT, rotary_dim=4), plain("fc_in", "act")),
    "falcon": Family(dict(hidden_size=32, ffn_hidden_size=48, num_attention_heads=4), plain("dense_h_to_4h", "act")),
    "bloom": Family(dict(hidden_size=32, n_head=4), plain("dense_h_to_4h", "gelu_impl"), d_mlp=128),
    "mpt": Family(dict(d_model=32, n_heads=4), plain("up_proj", "act"), mlp="ffn", d_mlp=128),
    "gpt_neox": Family(MHA, plain("dense_h_to_4h", "act")),
    "opt": Family(dict(hidden_size=32, ffn_dim=48, num_attention_heads=4, word_embed_proj_dim=32), opt_rows, mlp="fc1"),
}
N_LAYERS = 2  # gpt_neo's attention_types above spell out exactly this many layers


def _build(model_type: str, family: Family | None = None) -> nn.Module:
    family = family or FAMILIES[model_type]
    config = AutoConfig.for_model(model_type, vocab_size=64, num_hidden_layers=N_LAYERS,
                                  **family.special, **family.config)
    return AutoModelForCausalLM.from_config(config).eval()


@functools.cache
def _tiny(model_type: str) -> nn.Module:
    """Built once per run: the tests below only hook (and unhook) these models, never change them."""
    return _build(model_type)


def _without_row(monkeypatch: pytest.MonkeyPatch, model_type: str) -> None:
    """Hide one row for this test only, on a copy: the shared table is never mutated."""
    copy = {key: spec for key, spec in ARCHITECTURES.items() if key != model_type}
    monkeypatch.setattr(sites_module, "ARCHITECTURES", copy)


def test_every_row_is_tested() -> None:
    # Mixture-of-experts rows are tested in test_experts.py.
    assert set(FAMILIES) | set(MOE) == set(ARCHITECTURES) and not set(FAMILIES) & set(MOE)


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_sites_found_for_each_family(model_type: str) -> None:
    model, family = _tiny(model_type), FAMILIES[model_type]
    sites = neuron_sites(model)
    assert [s.layer for s in sites] == list(range(N_LAYERS))
    assert [s.name for s in sites] == [f"blocks.{i}.mlp.hook_post" for i in range(N_LAYERS)]
    assert all(s.d_mlp == family.d_mlp for s in sites)
    spec = ARCHITECTURES[model_type]
    blocks = decoder_blocks(model)
    assert [s.module for s in sites] == [block.get_submodule(spec.out_proj) for block in blocks]
    assert site_source(model) == "table"
    with recording(sites) as acts, torch.no_grad():
        model(torch.randint(0, 64, (2, 5)))
    assert all(acts[layer].shape == (2, 5, family.d_mlp) for layer in range(N_LAYERS))
    assert not any_hooks(sites)


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_site_equals_manual_recomputation(model_type: str) -> None:
    model, family = _tiny(model_type), FAMILIES[model_type]
    blocks = decoder_blocks(model)
    mlp_inputs: dict[int, Tensor] = {}
    handles = [
        block.get_submodule(family.mlp).register_forward_pre_hook(
            lambda m, args, i=i: mlp_inputs.__setitem__(i, args[0]))
        for i, block in enumerate(blocks)
    ]
    try:
        with recording(neuron_sites(model)) as acts, torch.no_grad():
            model(torch.randint(0, 64, (2, 6)))
    finally:
        for handle in handles:
            handle.remove()
    with torch.no_grad():
        for i, block in enumerate(blocks):
            manual = family.recompute(block.get_submodule(family.mlp), mlp_inputs[i])
            torch.testing.assert_close(acts[i], manual, rtol=0, atol=1e-6)


@pytest.mark.parametrize("model_type", sorted(set(FAMILIES) - set(sites_module.NOT_INFERABLE)))
def test_inference_finds_what_the_table_says(monkeypatch, model_type: str) -> None:
    model, row = _tiny(model_type), ARCHITECTURES[model_type]
    from_table = [s.module for s in neuron_sites(model)]
    _without_row(monkeypatch, model_type)
    assert infer_spec(model) == row
    assert [s.module for s in neuron_sites(model)] == from_table
    inventory = neuron_inventory(model)
    assert inventory["site_source"] == "inferred" and inventory["d_mlp"] == FAMILIES[model_type].d_mlp


MOE = {
    "mixtral": dict(GQA, num_local_experts=4, num_experts_per_tok=2),
    # Its shared expert is a dense MLP of exactly the intermediate size: width alone would pick it.
    "qwen2_moe": dict(GQA, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=48,
                      shared_expert_intermediate_size=48),
    "olmoe": dict(GQA, num_experts=4, num_experts_per_tok=2),
    "qwen3_moe": dict(GQA_HD, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=48),
}


@pytest.mark.parametrize("model_type", sorted(MOE))
def test_mixture_of_experts_without_a_row_is_refused_with_the_fix(monkeypatch, model_type: str) -> None:
    model = _build(model_type, Family(MOE[model_type]))
    _without_row(monkeypatch, model_type)
    with pytest.raises(UnsupportedArchitectureError, match=r"mixture-of-experts.*'mlp.experts', 'experts'\)"):
        neuron_sites(model)


def test_opt_without_its_row_is_refused_because_it_flattens(monkeypatch) -> None:
    model = _tiny("opt")
    _without_row(monkeypatch, "opt")
    with pytest.raises(UnsupportedArchitectureError, match=r"OPTForCausalLM.*flattens.*kind='flat'"):
        neuron_sites(model)


def test_opt_edits_reach_the_right_batch_row_and_position() -> None:
    # An edit at (batch 1, pos 2) through the reshaped site lands in flat row 1 * 6 + 2 of fc2's input.
    model, ids = _tiny("opt"), torch.randint(0, 64, (2, 6))
    site = neuron_sites(model, [1])[0]

    def fc2_rows() -> Tensor:
        rows: list[Tensor] = []
        handle = site.module.register_forward_pre_hook(lambda m, args: rows.append(args[0].clone()))
        try:
            with torch.no_grad():
                model(ids)
        finally:
            handle.remove()
        return rows[0]

    before = fc2_rows()
    neuron = int(before[8].argmax())  # ReLU: pick one that is not already 0
    assert before.shape == (12, 48) and before[8, neuron] > 0

    def zero_one(acts: Tensor) -> Tensor:
        edited = acts.clone()
        edited[1, 2, neuron] = 0.0
        return edited

    with hooked([(site, zero_one)]):
        after = fc2_rows()  # registered after the edit: sees the rows fc2 gets
    expected = before.clone()
    expected[8, neuron] = 0.0
    torch.testing.assert_close(after, expected, rtol=0, atol=0)
    assert not any_hooks([site])


class ToyConfig(PretrainedConfig):
    model_type = "toy"


class Toy(nn.Module):
    """A model no table row or inference rule knows: each block's MLP is ``ffn`` of the given widths."""

    def __init__(self, widths: list[tuple[int, int]]) -> None:
        super().__init__()
        self.config = ToyConfig(num_hidden_layers=2, hidden_size=32, intermediate_size=48)
        self.layers = nn.ModuleList(
            nn.ModuleDict({f"ffn{j}": nn.Linear(d_in, d_out) for j, (d_in, d_out) in enumerate(widths)})
            for _ in range(2)
        )


@pytest.mark.parametrize("widths, found", [([(32, 40), (40, 32)], "found 0: none"),
                                           ([(48, 32), (48, 32)], "found 2: layers.0.ffn0, layers.0.ffn1")])
def test_uninferable_model_names_class_problem_and_row_to_add(monkeypatch, widths, found: str) -> None:
    model = Toy(widths)
    with pytest.raises(UnsupportedArchitectureError) as error:
        neuron_sites(model)
    message = str(error.value)
    assert "Toy (model_type='toy')" in message and found in message
    assert "ARCHITECTURES['toy'] = ArchSpec('layers', 'mlp.down_proj')" in message
    # The fix the message names works: one row, here pointing at the last projection.
    monkeypatch.setattr(sites_module, "ARCHITECTURES", {**ARCHITECTURES, "toy": ArchSpec("layers", "ffn1")})
    assert [s.d_mlp for s in neuron_sites(model)] == [widths[1][0]] * 2
    assert site_source(model) == "table"


def test_inventory_counts(tiny_llama, tiny_gpt2) -> None:
    assert neuron_inventory(tiny_llama.model)["n_neurons"] == 3 * 128
    assert neuron_inventory(tiny_gpt2.model)["n_neurons"] == 3 * 256
    assert neuron_inventory(tiny_llama.model)["site_source"] == "table"


def test_layer_subset_and_out_of_range(tiny_llama) -> None:
    assert [s.layer for s in neuron_sites(tiny_llama.model, layers=[2, 0])] == [2, 0]
    with pytest.raises(ValueError, match="out of range"):
        neuron_sites(tiny_llama.model, layers=[3])


def test_peft_wrapped_model_sites_see_lora_layers(monkeypatch) -> None:
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(_build("llama"), LoraConfig(r=2, target_modules=["down_proj", "up_proj"]))
    sites = neuron_sites(peft_model)
    assert len(sites) == 2 and all(s.d_mlp == 48 for s in sites)
    assert all(type(s.module).__name__ == "Linear" and hasattr(s.module, "lora_A") for s in sites)
    with recording(sites) as acts:
        peft_model(torch.randint(0, 64, (1, 4)))
    assert acts[0].shape == (1, 4, 48)
    # Inferred, the site is the LoRA wrapper too, not the base Linear inside it.
    _without_row(monkeypatch, "llama")
    assert [s.module for s in neuron_sites(peft_model)] == [s.module for s in sites]


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
