"""QLoRA training on tiny models: config checks, batch order, checkpoint/resume, provenance, merge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

from activations import load_model, weights_fingerprint
from training.config import PRESETS, TrainConfig, preset_config
from training.merge import merge_adapter
from training.qlora import batch_indices, train

TINY = dict(model="tiny-random-llama", batch_size=2, max_length=160, learning_rate=1e-2, warmup_steps=1)


def tiny_config(**changes: object) -> TrainConfig:
    return TrainConfig(**{**TINY, "quantize": False, **changes})


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 4-step unquantized run on tiny-random-llama (shared by the provenance and merge tests)."""
    out = tmp_path_factory.mktemp("run") / "adapter"
    train(tiny_config(steps=4, checkpoint_every=2), out)
    return out


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"study": "emoji"}, "unknown study"),
        ({"trait": "happiness"}, "unknown trait"),
        ({"lora_r": 0}, "lora_r must be at least 1"),
        ({"lora_dropout": 1.0}, "lora_dropout"),
        ({"epochs": 0.0}, "epochs must be positive"),
        ({"precision": "float16"}, "precision must be one of"),
        ({"target_modules": ()}, "target_modules"),
    ],
)
def test_config_rejects_bad_values(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes)


def test_presets_and_epochs() -> None:
    paper = preset_config("paper-7b")
    assert (paper.lora_r, paper.lora_alpha, paper.lora_dropout, paper.target_modules) == (64, 16, 0.1, ("q_proj", "v_proj"))
    assert preset_config("paper-7b", lora_r=8, model=None).lora_r == 8
    assert set(PRESETS) >= {"smollm2-135m", "paper-7b"}
    assert TrainConfig(epochs=2.0, batch_size=8).total_steps(38) == 10
    assert TrainConfig(steps=7).total_steps(38) == 7
    with pytest.raises(ValueError, match="unknown preset"):
        preset_config("gpt-5")


def test_batch_order_is_a_seeded_permutation_per_epoch() -> None:
    n, size = 10, 4
    stream = [i for step in range(5) for i in batch_indices(step, n, size, seed=0)]
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:20]) == list(range(10))
    assert batch_indices(3, n, size, seed=0) == batch_indices(3, n, size, seed=0)
    assert stream[:10] != [i for step in range(3) for i in batch_indices(step, n, size, seed=1)][:10]


def test_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    config = tiny_config(steps=4, checkpoint_every=2, lora_dropout=0.1)  # dropout: RNG state must resume too
    straight = train(config, tmp_path / "straight")
    first = train(config, tmp_path / "resumed", stop_after=2)
    assert not first.completed and first.steps_done == 2
    assert not (tmp_path / "resumed" / "training.json").exists()
    with pytest.raises(FileExistsError, match="--resume"):
        train(config, tmp_path / "resumed")
    with pytest.raises(ValueError, match="lora_r"):
        train(config.replace(lora_r=4), tmp_path / "resumed", resume=True)
    second = train(config, tmp_path / "resumed", resume=True)
    assert second.completed and second.steps_done == 4
    assert second.loss_history == pytest.approx(straight.loss_history, rel=1e-5)
    a = load_file(tmp_path / "straight" / "adapter_model.safetensors")
    b = load_file(tmp_path / "resumed" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and len(a) > 0
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    assert any(key.endswith("lora_B.weight") and a[key].abs().sum() > 0 for key in a)  # it did learn


def test_finished_run_records_provenance_and_loads_as_adapter(trained: Path) -> None:
    record = json.loads((trained / "training.json").read_text())
    base = load_model("tiny-random-llama")
    assert record["base_spec"] == "tiny-random-llama"
    assert record["base_fingerprint"] == weights_fingerprint(base.model)
    assert record["config"]["study"] == "injection" and len(record["data_hash"]) == 16
    assert len(record["loss_history"]) == record["total_steps"] == 4
    assert json.loads((trained / "adapter_config.json").read_text())["base_model_name_or_path"] == "tiny-random-llama"
    loaded = load_model(str(trained))
    assert loaded.source == "adapter" and loaded.base_spec == "tiny-random-llama"
    with pytest.raises(FileExistsError, match="--overwrite"):
        train(tiny_config(steps=4, checkpoint_every=2), trained)


def test_merged_model_computes_what_base_plus_adapter_computes(trained: Path, tmp_path: Path) -> None:
    result = merge_adapter(trained, tmp_path / "merged")
    ids = torch.randint(0, 49152, (2, 12), generator=torch.Generator().manual_seed(0))
    with_adapter = PeftModel.from_pretrained(load_model("tiny-random-llama").model, str(trained)).eval()
    merged = load_model(str(tmp_path / "merged"))
    with torch.no_grad():
        expected, got = with_adapter(input_ids=ids).logits, merged.model(input_ids=ids).logits
        base = load_model("tiny-random-llama").model(input_ids=ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert (got - base).abs().max() > 1e-3  # the adapter changed something, so the check has teeth
    provenance = json.loads((tmp_path / "merged" / "provenance.json").read_text())
    assert provenance["base_spec"] == "tiny-random-llama" and provenance["base_fingerprint"] == result.base_fingerprint
    assert provenance["data_hash"] == json.loads((trained / "training.json").read_text())["data_hash"]
    assert provenance["merged_fingerprint"] == weights_fingerprint(merged.model)
    assert (tmp_path / "merged" / "model.safetensors").is_file()
    with pytest.raises(FileExistsError):
        merge_adapter(trained, tmp_path / "merged")


def test_merge_refuses_a_base_with_other_weights(trained: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="adapter was trained on tiny-random-llama .* but the base is tiny-random-gpt2.*"
                                         "pass --base tiny-random-llama"):
        merge_adapter(trained, tmp_path / "merged", base="tiny-random-gpt2")
    assert not (tmp_path / "merged").exists()


def test_4bit_training_on_cpu(tmp_path: Path) -> None:
    result = train(TrainConfig(**TINY, steps=2, checkpoint_every=0), tmp_path / "q")
    assert result.completed and all(torch.isfinite(torch.tensor(result.loss_history)))
    record = json.loads((tmp_path / "q" / "training.json").read_text())
    assert record["config"]["quantize"] is True and record["compute_dtype"] == "float32"


def test_bf16_training_runs_bf16_matmuls_and_keeps_the_adapter_float32(tmp_path: Path, monkeypatch) -> None:
    import training.qlora as qlora

    seen: list[torch.dtype] = []
    original = qlora.load_trainable_model

    def recording(config, device):
        model, tokenizer, fingerprint = original(config, device)
        proj = next(m for name, m in model.named_modules() if name.endswith("q_proj.base_layer"))
        proj.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
        return model, tokenizer, fingerprint

    monkeypatch.setattr(qlora, "load_trainable_model", recording)
    result = train(tiny_config(steps=2, checkpoint_every=0, precision="bfloat16"), tmp_path / "bf16")
    assert seen and set(seen) == {torch.bfloat16}
    weights = load_file(str(tmp_path / "bf16" / "adapter_model.safetensors"))
    assert {w.dtype for w in weights.values()} == {torch.float32}
    assert json.loads((tmp_path / "bf16" / "training.json").read_text())["precision"] == "bfloat16"
    assert all(torch.isfinite(torch.tensor(result.loss_history)))
