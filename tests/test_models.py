"""load_model: every spec form, clear errors, the embedded cache's rebuild on corruption."""

from __future__ import annotations

import json
import time

import pytest
import torch

from activations import ModelSpecError, load_model, weights_fingerprint
from activations import embedded


def test_unknown_spec_lists_accepted_forms() -> None:
    with pytest.raises(ModelSpecError, match=r"unknown model spec 'gpt-17'.*accepted:.*tiny-random-llama"):
        load_model("gpt-17")


def test_directory_without_config_is_refused(tmp_path) -> None:
    with pytest.raises(ModelSpecError, match="neither config.json nor adapter_config.json"):
        load_model(str(tmp_path))


def test_hub_id_fails_fast_offline(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ModelSpecError, match="hub is unreachable"):
        load_model("some-org/some-model-that-is-not-cached")
    assert time.perf_counter() - start < 30  # fails fast rather than hanging on retries


def test_unreachable_hub_is_never_asked(monkeypatch) -> None:
    """No HF_HUB_OFFLINE, no network: the cache lookup must not send a request (transformers'
    adapter lookup used to retry a HEAD request for ~25 s even with local_files_only)."""
    import huggingface_hub.file_download

    import activations.models

    def no_network(*args, **kwargs):
        raise AssertionError("a request was sent to the hub")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.file_download, "get_hf_file_metadata", no_network)
    monkeypatch.setattr(activations.models, "_hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(ModelSpecError, match="hub is unreachable"):
        load_model("some-org/some-model-that-is-not-cached")


def test_tiny_models_are_seeded_and_use_real_tokenizer() -> None:
    a, b = load_model("tiny-random-llama"), load_model("tiny-random-llama")
    assert weights_fingerprint(a.model) == weights_fingerprint(b.model)
    assert a.tokenizer.chat_template  # SmolLM2's real template travels with the tokenizer
    assert a.tokenizer.decode(a.tokenizer("hello world").input_ids) == "hello world"


def test_local_directory_round_trip(tiny_llama, tmp_path) -> None:
    tiny_llama.model.save_pretrained(tmp_path)
    tiny_llama.tokenizer.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path))
    assert loaded.source == "local"
    assert weights_fingerprint(loaded.model) == weights_fingerprint(tiny_llama.model)


def test_peft_adapter_directory(tiny_llama, tmp_path) -> None:
    from peft import LoraConfig, get_peft_model

    base = load_model("tiny-random-llama").model
    peft_model = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.peft_config["default"].base_model_name_or_path = "tiny-random-llama"
    peft_model.save_pretrained(tmp_path)
    ids = torch.tensor([[5, 6, 7, 8]])
    expected = peft_model(ids).logits
    adapter = load_model(str(tmp_path))
    merged = load_model(str(tmp_path), merge_adapter=True)
    assert adapter.source == "adapter" and adapter.base_spec == "tiny-random-llama"
    torch.testing.assert_close(adapter.model(ids).logits, expected)
    torch.testing.assert_close(merged.model(ids).logits, expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ModelSpecError, match="trained on 'tiny-random-llama' but the base given is"):
        load_model(str(tmp_path), base="tiny-random-gpt2")


def test_adapter_is_applied_only_to_the_base_it_was_trained_on(tmp_path) -> None:
    from peft import LoraConfig, get_peft_model

    trained, other = tmp_path / "trained", tmp_path / "other"
    base = load_model("tiny-random-llama")
    for folder in (trained, other):
        base.model.save_pretrained(folder)
        base.tokenizer.save_pretrained(folder)
    impostor = load_model(str(other)).model  # same shapes, one weight nudged: a different base
    with torch.no_grad():
        next(impostor.parameters()).add_(1e-3)
    impostor.save_pretrained(other)
    peft_model = get_peft_model(load_model(str(trained)).model,
                                LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    adapter = tmp_path / "adapter"
    peft_model.peft_config["default"].base_model_name_or_path = str(trained)
    peft_model.save_pretrained(adapter)
    (adapter / "training.json").write_text(json.dumps({"base_spec": str(trained),
                                                        "base_fingerprint": weights_fingerprint(base.model)}))
    assert load_model(str(adapter)).base_spec == str(trained)
    config_path = adapter / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "base_model_name_or_path": str(other)}))
    with pytest.raises(ModelSpecError, match="has other weights.*any_base=True"):
        load_model(str(adapter))
    assert load_model(str(adapter), any_base=True).base_spec == str(other)


def test_config_without_weights_is_one_clear_error(tiny_llama, tmp_path) -> None:
    tiny_llama.model.config.save_pretrained(tmp_path)
    with pytest.raises(ModelSpecError, match="config.json but no weights"):
        load_model(str(tmp_path))


def test_corrupt_embedded_cache_is_detected(tmp_path, monkeypatch) -> None:
    # A cache entry whose files no longer match the manifest (truncated write) must not be trusted.
    folder = tmp_path / "entry"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"x" * 100)
    (folder / embedded.MANIFEST).write_text(json.dumps({"files": {"model.safetensors": 100}}))
    assert embedded._manifest_ok(folder)
    (folder / "model.safetensors").write_bytes(b"x" * 50)
    assert not embedded._manifest_ok(folder)
    (folder / embedded.MANIFEST).write_text("{not json")
    assert not embedded._manifest_ok(folder)


def test_cache_root_honours_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("NEURODIFF_CACHE", str(tmp_path / "c"))
    assert embedded.cache_root() == tmp_path / "c"
    monkeypatch.delenv("NEURODIFF_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert embedded.cache_root() == tmp_path / "x" / "neurodiff"


@pytest.mark.integration
def test_embedded_default_model(smollm2) -> None:
    from activations import neuron_inventory

    inventory = neuron_inventory(smollm2.model)
    assert (inventory["n_layers"], inventory["d_mlp"], inventory["n_neurons"]) == (30, 1536, 46_080)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = smollm2.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = smollm2.model.generate(**ids, max_new_tokens=12, do_sample=False)
    text = smollm2.tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert text.strip() and "Paris" in text


def test_the_recorded_base_comes_from_provenance_training_or_adapter_config(tmp_path) -> None:
    from activations.models import DEFAULT_MODEL, default_base, recorded_base

    merged, adapter, bare, plain = (tmp_path / name for name in ("merged", "adapter", "bare", "plain"))
    for folder in (merged, adapter, bare, plain):
        folder.mkdir()
    (merged / "provenance.json").write_text(json.dumps({"base_spec": "tiny-random-llama"}))
    (adapter / "training.json").write_text(json.dumps({"base_spec": "tiny-random-gpt2"}))
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "ignored/when-training-says"}))
    (bare / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "org/base"}))
    (plain / "config.json").write_text("{}")
    assert [recorded_base(str(f)) for f in (merged, adapter, bare, plain)] == [
        "tiny-random-llama", "tiny-random-gpt2", "org/base", None]
    assert default_base(str(plain)) == DEFAULT_MODEL and default_base(str(merged)) == "tiny-random-llama"


def test_a_base_of_another_shape_is_refused(tiny_llama, tiny_gpt2) -> None:
    from activations.models import check_same_shape

    check_same_shape(tiny_llama.model, load_model("tiny-random-llama").model)  # same shape: no error
    with pytest.raises(ModelSpecError, match="3 layers of 128 MLP neurons but the base has 3 layers of 256"):
        check_same_shape(tiny_llama.model, tiny_gpt2.model)
