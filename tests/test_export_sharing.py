"""A suppressed copy shares every tensor it does not edit (a 7B copy would not fit beside its source),
leaves the source untouched, and computes what a fresh deep copy with the same edit computes."""

from __future__ import annotations

import copy

import pytest
import torch

from activations import neuron_sites, weights_fingerprint
from activations.random_models import random_model
from interp.interventions import NeuronSet, suppressed_model

NEURONS = NeuronSet.from_pairs([(1, 3), (1, 70), (2, 5)])


def _storage(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


@pytest.mark.parametrize("method", ["mean", "zero", "revert"])
@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_suppressed_copy_shares_unedited_tensors_and_leaves_the_source(method, fixture, request):
    loaded = request.getfixturevalue(fixture)
    model = loaded.model
    base = copy.deepcopy(model)
    with torch.no_grad():
        for param in base.parameters():
            param.add_(0.01)
    means = {site.layer: torch.randn(site.d_mlp) for site in neuron_sites(model)}
    before = weights_fingerprint(model)
    suppressed = suppressed_model(model, NEURONS, method, means=means, base=base)
    assert weights_fingerprint(model) == before
    source = {name: _storage(p) for name, p in model.named_parameters()}
    edited_layers = {site.module for site in neuron_sites(suppressed, layers=NEURONS.layers)}
    edited = {name for name, module in suppressed.named_modules() for p in ("weight",) if module in edited_layers}
    for name, param in suppressed.named_parameters():
        if name in source and name.rpartition(".")[0] not in edited and ("mlp" not in name or method != "revert"):
            assert _storage(param) == source[name], name  # untouched tensors are the source's own
    for site in neuron_sites(suppressed, layers=NEURONS.layers):
        assert _storage(site.module.weight) not in source.values()
    inputs = loaded.tokenizer(["The weather today is lovely and"], return_tensors="pt")
    reference = copy.deepcopy(suppressed)  # an independent copy with the same values: the sharing changes nothing
    with torch.no_grad():
        torch.testing.assert_close(suppressed(**inputs).logits, reference(**inputs).logits, rtol=0, atol=0)
        assert not torch.equal(suppressed(**inputs).logits, model(**inputs).logits)


def test_random_model_has_exact_shape_ties_and_working_rotary():
    model = random_model("smollm2-135m", dtype=torch.bfloat16)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008  # SmolLM2-135M's published count
    assert model.lm_head.weight is model.model.embed_tokens.weight
    rotary = model.model.rotary_emb
    expected = 1.0 / (100000.0 ** (torch.arange(0, 64, 2, dtype=torch.float32) / 64))
    torch.testing.assert_close(rotary.inv_freq.float(), expected)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[1, 2, 3]])).logits
    assert torch.isfinite(logits.float()).all()


def test_export_writes_bounded_shards_that_load_back_equal(tiny_llama, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    from interp.interventions import export_suppressed

    monkeypatch.setattr("interp.interventions.export.SHARD_SIZE", "200KB")  # the tiny model's 1 GB
    export_suppressed(tiny_llama.model, NEURONS, tmp_path / "out", tokenizer=tiny_llama.tokenizer, method="zero")
    shards = sorted((tmp_path / "out").glob("model-*.safetensors"))
    largest = max(p.numel() * p.element_size() for p in tiny_llama.model.parameters())  # one tensor is never split
    assert len(shards) > 1 and all(path.stat().st_size < max(400_000, largest + 100_000) for path in shards)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    reference = suppressed_model(tiny_llama.model, NEURONS, "zero")
    for (name, a), (_, b) in zip(sorted(loaded.state_dict().items()), sorted(reference.state_dict().items())):
        assert torch.equal(a, b), name
