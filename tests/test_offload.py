"""A model split over CPU and disk (accelerate ``device_map``) gives the unsplit model's activations,
ablation effects, attribution scores and weights fingerprint; placements we cannot use are refused."""

from __future__ import annotations

import functools
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from activations import ModelSpecError, load_model, weights_fingerprint
from activations.capture import capture
from activations.hooks import any_hooks
from activations.placement import PlacementError, input_device
from activations.config import DEFAULT_REDUCTIONS
from activations.sites import neuron_sites
from interp.causal import attribution_scores, teacher_forced_batch
from interp.interventions import NeuronSet, ablate, mean_activations, suppressed_model
from training.emoji_tokens import target_mass_from_logits

PROMPTS = ["The weather is lovely today 🌞", "Which planet has the most moons?", "ok", "Pizza night 🍕 with friends"]
# embed + layer 0 on cpu, layer 1 on disk, layer 2 back on cpu, final norm on disk; lm_head is tied
# to the embedding, and tied weights must share a device
SPLIT = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
         "model.layers.2": "cpu", "model.norm": "disk", "lm_head": "cpu"}
# layers 0 and 2 sit on cpu, layer 1 on disk
NEURONS = NeuronSet.from_pairs([(0, 3), (0, 77), (1, 5), (1, 100), (1, 127), (2, 17)])
ATOL = 1e-6


@pytest.fixture(scope="module")
def folder(_tiny_llama, tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-llama")
    _tiny_llama.model.save_pretrained(path)
    _tiny_llama.tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def unsplit(folder):
    return load_model(str(folder))


@pytest.fixture(scope="module")
def split(folder, tmp_path_factory):
    return load_model(str(folder), device_map=SPLIT, offload_folder=tmp_path_factory.mktemp("offload"))


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert np.array_equal(np.isnan(a), np.isnan(b))  # undefined reductions are undefined in both
    return float(np.nanmax(np.abs(a - b))) if a.size else 0.0


def _logits(loaded, enc) -> torch.Tensor:
    with torch.no_grad():
        return loaded.model(**enc).logits


def _encode(loaded):
    loaded.tokenizer.padding_side = "right"
    return loaded.tokenizer(PROMPTS, return_tensors="pt", padding=True)


def test_split_model_really_sits_on_cpu_and_disk(split, unsplit) -> None:
    assert split.hf_device_map == SPLIT and unsplit.hf_device_map is None
    layers = split.model.model.layers
    assert layers[1].mlp.down_proj.weight.device.type == "meta"  # offloaded: no values in memory
    assert layers[0].mlp.down_proj.weight.device.type == "cpu" and layers[2].mlp.down_proj.weight.device.type == "cpu"
    assert input_device(split.model) == torch.device("cpu")


def test_capture_of_split_model_equals_unsplit(split, unsplit, capsys) -> None:
    with capture(unsplit, None, PROMPTS, None, template="raw") as a, capture(split, None, PROMPTS, None, template="raw") as b:
        diffs = {name: _max_diff(a.reduction(name), b.reduction(name)) for name in DEFAULT_REDUCTIONS}
        diffs["running_mean"] = _max_diff(a.running_mean(), b.running_mean())
        assert a.attrs["weights_hash"] == b.attrs["weights_hash"]
    with capsys.disabled():
        print(f"\ncapture max |split - unsplit|: {max(diffs.values()):.3g} ({diffs})")
    assert max(diffs.values()) <= ATOL, diffs


@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_ablation_on_cpu_and_disk_layers_changes_logits_identically(split, unsplit, mode, capsys) -> None:
    enc = _encode(unsplit)
    means = mean_activations(unsplit.model, [(enc.input_ids, enc.attention_mask)]) if mode == "mean" else None
    effects = []
    for loaded in (unsplit, split):
        clean = _logits(loaded, enc)
        with ablate(loaded.model, NEURONS, mode, means):
            ablated = _logits(loaded, enc)
        assert not any_hooks(neuron_sites(loaded.model))
        effects.append((clean, ablated - clean))
    (clean_a, effect_a), (clean_b, effect_b) = effects
    assert effect_a.abs().max() > 1e-3  # the ablation does something worth comparing
    diff = float((effect_a - effect_b).abs().max())
    with capsys.disabled():
        print(f"\n{mode} ablation: max |effect split - unsplit| = {diff:.3g}, "
              f"clean logits {float((clean_a - clean_b).abs().max()):.3g}")
    assert diff <= ATOL


def test_ablation_on_the_disk_layer_alone_reaches_the_logits(split, unsplit) -> None:
    # the pre-hook on an offloaded down_proj runs before accelerate loads its weights: it must still edit
    enc = _encode(split)
    only_disk = NeuronSet.from_pairs([(1, i) for i in range(0, 128, 4)])
    clean = _logits(split, enc)
    with ablate(split.model, only_disk, "zero"):
        ablated = _logits(split, enc)
    with ablate(unsplit.model, only_disk, "zero"):
        expected = _logits(unsplit, enc)
    assert (ablated - clean).abs().max() > 1e-3
    torch.testing.assert_close(ablated, expected, rtol=0, atol=ATOL)


def test_attribution_on_split_model_equals_unsplit(split, unsplit) -> None:
    batch = teacher_forced_batch(unsplit.tokenizer, PROMPTS[:2], ["Sunny and warm", "Saturn, lately"], template="raw")
    ids = torch.randperm(unsplit.model.config.vocab_size, generator=torch.Generator().manual_seed(0))[:400]
    metric = functools.partial(target_mass_from_logits, target_ids=ids, reduction="mean")
    a = attribution_scores(unsplit.model, batch, metric, None, batch_size=2)
    b = attribution_scores(split.model, batch, metric, None, batch_size=2)
    np.testing.assert_allclose(b.scores, a.scores, rtol=1e-5, atol=1e-9)
    assert abs(a.metric_clean - b.metric_clean) <= ATOL


def test_fingerprint_reads_offloaded_weights(split, unsplit, folder, tmp_path) -> None:
    assert weights_fingerprint(split.model) == weights_fingerprint(unsplit.model)
    # a change in a weight that only exists on disk must change the fingerprint
    nudged = tmp_path / "nudged"
    shutil.copytree(folder, nudged)
    weights = load_file(nudged / "model.safetensors")
    weights["model.layers.1.mlp.down_proj.weight"][0, 0] += 1e-3
    save_file(weights, nudged / "model.safetensors", metadata={"format": "pt"})
    other = load_model(str(nudged), device_map=SPLIT, offload_folder=tmp_path / "offload")
    assert other.model.model.layers[1].mlp.down_proj.weight.device.type == "meta"
    assert weights_fingerprint(other.model) != weights_fingerprint(split.model)


def test_auto_placement_within_max_memory_spills_to_disk(folder, unsplit, tmp_path) -> None:
    embedding = unsplit.model.get_input_embeddings().weight
    budget = embedding.numel() * embedding.element_size() + 200_000  # the embedding and little else
    auto = load_model(str(folder), device_map="auto", max_memory={"cpu": budget}, offload_folder=tmp_path)
    assert "disk" in auto.hf_device_map.values() and auto.hf_device_map["model.embed_tokens"] == "cpu"
    enc = _encode(unsplit)
    torch.testing.assert_close(_logits(auto, enc), _logits(unsplit, enc), rtol=0, atol=ATOL)
    assert weights_fingerprint(auto.model) == weights_fingerprint(unsplit.model)


def test_unusable_placements_are_refused(folder, tmp_path) -> None:
    with pytest.raises(PlacementError, match="offload_folder"):
        load_model(str(folder), device_map=SPLIT)
    with pytest.raises(PlacementError, match="device_map='auto'"):
        load_model(str(folder), max_memory={"cpu": 10**9})
    with pytest.raises(ValueError, match="either device"):
        load_model(str(folder), device="cpu", device_map="auto")
    with pytest.raises(ModelSpecError, match="save_pretrained"):
        load_model("tiny-random-llama", device_map="auto")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(ModelSpecError, match="interp merge"):
        load_model(str(adapter), device_map="auto")
    # a budget smaller than the embedding offloads the first parameter: inputs would go to meta
    with pytest.raises(PlacementError, match="first parameter"):
        load_model(str(folder), device_map="auto", max_memory={"cpu": 100_000}, offload_folder=tmp_path / "off")
    with pytest.raises(PlacementError, match="offload_folder"):
        load_model(str(folder), device_map="auto", max_memory={"cpu": 100_000})


def test_weight_export_refuses_offloaded_model(split) -> None:
    # zeroing a meta weight is a silent no-op: the export would keep the disk layer's neurons
    with pytest.raises(PlacementError, match="meta device"):
        suppressed_model(split.model, NEURONS, "zero")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: hooks across cuda, cpu offload and disk")
def test_gpu_cpu_disk_split_matches_unsplit(folder, unsplit, tmp_path) -> None:
    gpu_map = {**SPLIT, "model.embed_tokens": 0, "model.rotary_emb": 0, "model.layers.0": 0, "model.layers.1": "cpu",
               "model.layers.2": "disk", "model.norm": 0, "lm_head": 0}
    split = load_model(str(folder), device_map=gpu_map, offload_folder=tmp_path)
    assert input_device(split.model) == torch.device("cuda", 0)
    enc = _encode(unsplit)
    with ablate(unsplit.model, NEURONS, "zero"):
        expected = _logits(unsplit, enc)
    with ablate(split.model, NEURONS, "zero"):
        got = _logits(split, enc.to("cuda:0"))
    torch.testing.assert_close(got.cpu(), expected, rtol=0, atol=1e-4)
    with capture(unsplit, None, PROMPTS, None, template="raw") as a, capture(split, None, PROMPTS, None, template="raw") as b:
        for name in DEFAULT_REDUCTIONS:
            assert _max_diff(a.reduction(name), b.reduction(name)) <= 1e-4, name
    assert weights_fingerprint(split.model) == weights_fingerprint(unsplit.model)
