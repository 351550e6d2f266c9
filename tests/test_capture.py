"""Capture: hooked values vs a manual MLP recomputation, padding, backends, resume, files, CLI, prompts."""

from __future__ import annotations

import copy
import json

import h5py
import numpy as np
import pytest
import torch

from activations import LoadedModel, load_model, neuron_sites
from activations.backends import BACKENDS, ModelBatch, run_backend
from activations.capture import CaptureConfig, capture, pad_batch
from activations.roles import encode_prompt_set
from activations.hooks import any_hooks
from activations.prompt_sets import PromptSet, apply_template, load_prompt_set, strip_emoji
from activations.reduce import REDUCTIONS
from activations.reader import open_cache
from activations.store import CacheWriter, partial_path
from interp.cli import main

PROMPTS = [
    "Hi 👋",
    "The weather is lovely today and we walked along the river ☀️",
    "Which planet has the most moons?",
    "ok",
    "Pizza night again 🍕🍕 with friends and far too much garlic bread",
]


def _with_padding(loaded: LoadedModel, side: str) -> LoadedModel:
    tokenizer = copy.deepcopy(loaded.tokenizer)
    tokenizer.padding_side = side
    return LoadedModel(loaded.model, tokenizer, loaded.spec, loaded.source)


def _batch(loaded: LoadedModel, texts: list[str], side: str = "left", template: str = "user") -> ModelBatch:
    encoded = encode_prompt_set(loaded.tokenizer, PromptSet.from_texts(texts), template)
    return pad_batch(encoded, loaded.tokenizer.pad_token_id, side, torch.device("cpu"))[0]


def _mlp_inputs(mlps: list[torch.nn.Module], model: torch.nn.Module, batch: ModelBatch) -> list[torch.Tensor]:
    """The input of each MLP, read with plain torch hooks (independent of activations.hooks)."""
    seen: list[torch.Tensor] = []
    handles = [mlp.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach())) for mlp in mlps]
    try:
        with torch.inference_mode():
            model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def test_hooked_llama_neurons_equal_manual_gated_mlp(tiny_llama) -> None:
    batch = _batch(tiny_llama, PROMPTS[:3])
    mlps = [layer.mlp for layer in tiny_llama.model.model.layers]
    inputs = _mlp_inputs(mlps, tiny_llama.model, batch)
    acts = run_backend("native", tiny_llama.model, tiny_llama.tokenizer, neuron_sites(tiny_llama.model), batch)
    for layer, (mlp, x) in enumerate(zip(mlps, inputs)):
        with torch.inference_mode():
            manual = mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x)
        torch.testing.assert_close(acts[layer], manual, rtol=1e-5, atol=1e-6)


def test_hooked_gpt2_neurons_equal_manual_mlp(tiny_gpt2) -> None:
    batch = _batch(tiny_gpt2, PROMPTS[:3])
    mlps = [block.mlp for block in tiny_gpt2.model.transformer.h]
    inputs = _mlp_inputs(mlps, tiny_gpt2.model, batch)
    acts = run_backend("native", tiny_gpt2.model, tiny_gpt2.tokenizer, neuron_sites(tiny_gpt2.model), batch)
    for layer, (mlp, x) in enumerate(zip(mlps, inputs)):
        with torch.inference_mode():
            manual = mlp.act(mlp.c_fc(x))
        torch.testing.assert_close(acts[layer], manual, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("which", ["tiny_llama", "tiny_gpt2"])
def test_reductions_ignore_padding_on_either_side(which, request, tmp_path) -> None:
    loaded = request.getfixturevalue(which)
    every = tuple(REDUCTIONS)
    alone = capture(loaded, None, PROMPTS[:1], tmp_path / "alone.h5", batch_size=1, template="raw", reductions=every)
    for side in ("left", "right"):
        # "Hi 👋" is the shortest of the three, so it carries the most padding in the batch.
        batched = capture(_with_padding(loaded, side), None, PROMPTS[:3], tmp_path / f"{side}.h5", batch_size=3,
                          template="raw", reductions=every)
        assert batched.n_tokens[0] == alone.n_tokens[0] < batched.n_tokens.max()
        for name in alone.reductions:
            np.testing.assert_allclose(batched.reduction(name)[0], alone.reduction(name)[0], atol=1e-5)
        batched.close()
    alone.close()


def _three_backends(
    loaded: LoadedModel, texts: list[str], layers: list[int] | None = None
) -> dict[str, dict[int, torch.Tensor]]:
    """Each backend's neuron vectors at the real tokens of one left-padded batch (padding is never used)."""
    batch = _batch(loaded, texts, side="left")
    real = batch.attention_mask.bool()
    sites = neuron_sites(loaded.model, layers)
    before = {name: set(vars(module)) for name, module in loaded.model.named_modules()}
    results = {}
    for name in BACKENDS:
        acts = run_backend(name, loaded.model, loaded.tokenizer, sites, batch)
        results[name] = {layer: values[real] for layer, values in acts.items()}
    # Every backend leaves the model as it found it: no hooks, no instrumentation left on its modules.
    assert not any_hooks(sites)
    assert {name: set(vars(module)) for name, module in loaded.model.named_modules()} == before
    return results


@pytest.mark.parametrize("which", ["tiny_llama", "tiny_gpt2"])
def test_three_backends_agree_on_tiny_models(which, request) -> None:
    loaded = request.getfixturevalue(which)
    attention = loaded.model.config._attn_implementation
    results = _three_backends(loaded, PROMPTS[:3])
    for name in ("tlens", "nnsight"):
        for layer, acts in results["native"].items():
            torch.testing.assert_close(results[name][layer], acts, rtol=1e-4, atol=1e-5)
    assert loaded.model.config._attn_implementation == attention  # the bridge switched only its own copy
    assert loaded.tokenizer.padding_side == "right"  # nnsight set the side of a copy only


@pytest.mark.integration
def test_three_backends_agree_on_smollm2(smollm2) -> None:
    results = _three_backends(smollm2, PROMPTS[:3])
    for name in ("tlens", "nnsight"):
        for layer, acts in results["native"].items():
            # The bridge forces eager attention and the others use sdpa: float32 kernels differ ~1e-4.
            torch.testing.assert_close(results[name][layer], acts, rtol=1e-3, atol=2e-3)
    for acts in results["native"].values():
        assert torch.isfinite(acts).all()  # left padding with a real (non-zero) pad embedding


def test_peft_adapter_capture_differs_from_base(tiny_llama, tmp_path) -> None:
    from peft import LoraConfig, get_peft_model

    base_model = copy.deepcopy(tiny_llama.model)
    peft_model = get_peft_model(base_model, LoraConfig(r=4, target_modules=["up_proj", "down_proj"])).eval()
    for name, parameter in peft_model.named_parameters():
        if "lora_B" in name:  # peft initialises B to zero, which would make the adapter a no-op
            torch.nn.init.normal_(parameter, std=0.5)
    adapted = LoadedModel(peft_model, tiny_llama.tokenizer, "tiny+lora", "adapter", "tiny-random-llama")
    with capture(tiny_llama, None, PROMPTS, tmp_path / "base.h5") as base, \
            capture(adapted, None, PROMPTS, tmp_path / "lora.h5") as lora:
        assert lora.reduction("content_mean").shape == base.reduction("content_mean").shape
        assert not np.allclose(lora.reduction("content_mean"), base.reduction("content_mean"), atol=1e-3)
        assert lora.attrs["weights_hash"] != base.attrs["weights_hash"]
    # All backends see the adapter; a layer subset out of order also checks the early stops.
    results = _three_backends(adapted, PROMPTS[:3], layers=[1, 0])
    for name in ("tlens", "nnsight"):
        assert results[name].keys() == {0, 1}
        for layer, acts in results["native"].items():
            torch.testing.assert_close(results[name][layer], acts, rtol=1e-4, atol=1e-5)
    assert not any_hooks(neuron_sites(peft_model))


def _datasets(path) -> dict[str, np.ndarray]:
    found = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: found.update({name: obj[()]}) if isinstance(obj, h5py.Dataset) else None)
    return found


def test_interrupted_capture_resumes_to_an_identical_file(tiny_llama, tmp_path, monkeypatch) -> None:
    prompts = PROMPTS * 3  # 15 prompts, batches of 4: the last batch is short
    with capture(tiny_llama, None, prompts, tmp_path / "whole.h5", batch_size=4, store_tokens=True):
        pass
    original = CacheWriter.write_batch
    calls = []

    def crash_after_two(self, *args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated interruption")
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(CacheWriter, "write_batch", crash_after_two)
    out = tmp_path / "resumed.h5"
    with pytest.raises(KeyboardInterrupt):
        capture(tiny_llama, None, prompts, out, batch_size=4, store_tokens=True)
    assert not out.exists() and partial_path(out).exists()
    with pytest.raises(ValueError, match="unfinished capture"):
        open_cache(partial_path(out))
    with pytest.raises(ValueError, match="different capture_config"):
        capture(tiny_llama, None, prompts, out, batch_size=4, store_tokens=True, template="raw")

    monkeypatch.setattr(CacheWriter, "write_batch", original)
    resumed_batches = []
    monkeypatch.setattr(CacheWriter, "write_batch", lambda self, *a, **k: resumed_batches.append(1) or original(
        self, *a, **k))
    capture(tiny_llama, None, prompts, out, batch_size=4, store_tokens=True).close()
    assert len(resumed_batches) == 2  # batches 3 and 4 only
    assert not partial_path(out).exists()
    whole, resumed = _datasets(tmp_path / "whole.h5"), _datasets(out)
    assert whole.keys() == resumed.keys()
    for name in whole:
        np.testing.assert_array_equal(resumed[name], whole[name], err_msg=name)


def test_existing_output_is_never_overwritten_silently(tiny_llama, tmp_path) -> None:
    out = tmp_path / "acts.h5"
    capture(tiny_llama, None, PROMPTS[:2], out, template="raw").close()
    with pytest.raises(FileExistsError, match="--overwrite"):
        capture(tiny_llama, None, PROMPTS[:3], out)
    with open_cache(out) as cache:
        assert len(cache) == 2
    with capture(tiny_llama, None, PROMPTS[:3], out, overwrite=True) as cache:
        assert len(cache) == 3


def test_truncated_cache_gets_a_clear_error(tiny_llama, tmp_path) -> None:
    out = tmp_path / "acts.h5"
    capture(tiny_llama, None, PROMPTS[:2], out).close()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(out.read_bytes()[: out.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"cut\.h5 is damaged .*truncated"):
        open_cache(cut)


def test_flipped_bit_in_an_activation_chunk_is_caught(tiny_llama, tmp_path) -> None:
    out = tmp_path / "acts.h5"
    capture(tiny_llama, None, PROMPTS, out, template="raw").close()
    with h5py.File(out, "r") as f:
        info = f["acts/content_mean"].id.get_chunk_info(0)
    data = bytearray(out.read_bytes())
    data[info.byte_offset + info.size // 2] ^= 0x10  # one bit inside the first chunk's stored bytes
    out.write_bytes(bytes(data))
    with open_cache(out) as cache, pytest.raises(ValueError, match=r"content_mean cannot be read back.*corrupted"):
        cache.reduction("content_mean")


def test_cli_cache_writes_a_file_plain_h5py_can_read(tmp_path, capsys) -> None:
    prompts = tmp_path / "mine.txt"
    prompts.write_text("\n".join(PROMPTS[:4]) + "\n")
    out = tmp_path / "acts.h5"
    argv = ["cache", "--model", "tiny-random-llama", "--prompts", str(prompts), "--out", str(out), "--batch-size", "3"]
    assert main(argv) == 0
    with h5py.File(out, "r") as f:
        assert f.attrs["schema"] == "neurodiff.activations/2"
        assert f["acts/content_mean"].shape == (4, 3, 128)
        assert f["acts/last"].dtype == np.float32
        assert json.loads(f.attrs["reductions"]) == list(CaptureConfig().reductions)
        assert f.attrs["complete"] and f.attrs["n_done"] == 4
        assert [s.decode() for s in f["prompts/texts"][()]] == PROMPTS[:4]
        counts = f["prompts/role_counts"][()]
        assert (counts.sum(1) == f["prompts/n_tokens"][()]).all() and counts[2:, 2].tolist() == [0, 0]
        offsets = f["tokens/offsets"][()]
        assert (np.diff(offsets) == f["prompts/n_tokens"][()]).all() and len(f["tokens/roles"]) == offsets[-1]
        ids, roles = f["tokens/ids"][offsets[0] : offsets[1]], f["tokens/roles"][offsets[0] : offsets[1]]
        tokenizer = load_model("tiny-random-llama").tokenizer
        assert tokenizer.decode(ids[roles == 2]) == " 👋" and tokenizer.decode(ids[roles == 1]) == "Hi"
        assert f["running/content/count"][()] == counts[:, 1:].sum()
    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite", "--layers", "0,2", "--reductions", "content_max", "--no-histogram"]) == 0
    with open_cache(out) as cache:
        assert cache.layers == [0, 2] and cache.reductions == ("content_max",)
        assert cache.token_stats().abs_hist is None


def test_capture_config_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="unknown reductions"):
        CaptureConfig(reductions=("median",))
    with pytest.raises(ValueError, match="batch_size"):
        CaptureConfig(batch_size=0)
    with pytest.raises(ValueError, match="unknown backend"):
        CaptureConfig(backend="jax")
    with pytest.raises(ValueError, match="unknown template"):
        CaptureConfig(template="system")


def test_builtin_prompt_sets_and_emoji_free_twins() -> None:
    emoji_set, free = load_prompt_set("emoji"), load_prompt_set("emoji-free")
    assert free.ids == emoji_set.ids and free.categories == emoji_set.categories
    assert free.texts[0] == strip_emoji(emoji_set.texts[0]) != emoji_set.texts[0]
    assert all(strip_emoji(text) == text for text in free.texts)
    assert free.sha != emoji_set.sha and len(load_prompt_set("neutral")) > 0
    assert strip_emoji("Great  job 🎉🎉 team ") == "Great job team"


def test_prompt_files_in_three_formats(tmp_path) -> None:
    (tmp_path / "a.txt").write_text("first\n\nsecond\n")
    (tmp_path / "b.jsonl").write_text('{"id": "x1", "text": "first"}\n{"text": "second", "category": "c"}\n')
    (tmp_path / "c.csv").write_text("id,text\nx1,first\nx2,second\n")
    for name in ("a.txt", "b.jsonl", "c.csv"):
        prompts = load_prompt_set(tmp_path / name)
        assert prompts.texts == ("first", "second") and len(set(prompts.ids)) == 2
    assert load_prompt_set(tmp_path / "b.jsonl").ids == ("x1", "b-0002")
    assert PromptSet.from_texts(["a"]).sha != PromptSet.from_texts(["b"]).sha


def test_prompt_set_errors_say_what_to_do(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_prompt_set(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="unknown prompt set 'emojis'"):
        load_prompt_set("emojis")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="holds no prompts"):
        load_prompt_set(tmp_path / "empty.txt")
    (tmp_path / "bad.csv").write_text("prompt,label\nhello,1\n")
    with pytest.raises(ValueError, match="needs a 'text' column"):
        load_prompt_set(tmp_path / "bad.csv")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\nnot json\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2"):
        load_prompt_set(tmp_path / "bad.jsonl")
    with pytest.raises(ValueError, match="occurs twice"):
        PromptSet("dup", ("a", "a"), ("x", "y"), ("", ""))


def test_templates(tiny_llama) -> None:
    tokenizer = tiny_llama.tokenizer
    assert apply_template(tokenizer, "hello", "raw") == "hello"
    user = apply_template(tokenizer, "hello", "user")
    assert "user\nhello" in user and user.endswith("assistant\n")
    assert "assistant\nhello" in apply_template(tokenizer, "hello", "assistant")
    with pytest.raises(ValueError, match="unknown template"):
        apply_template(tokenizer, "hello", "system")


def test_in_memory_captures_can_all_stay_open(tiny_llama) -> None:
    from activations.store import CacheLayout, open_writer

    # Each in-memory file needs a name no open one has. The same layout object twice stands in for
    # a freed layout whose id() came back while the first cache was still open.
    layout = CacheLayout(2, 3, 128, ("content_mean",), False, chunk_rows=2, histogram=False)
    writers = [open_writer(None, layout, {"capture_config": "{}"}, ["a", "b"], ["x", "y"]) for _ in range(2)]
    assert len({w.file.filename for w in writers}) == 2
    for writer in writers:
        writer.close()
    caches = [capture(tiny_llama, None, PROMPTS[:2], None, template="raw") for _ in range(3)]
    for cache in caches[1:]:
        np.testing.assert_array_equal(cache.reduction("content_mean"), caches[0].reduction("content_mean"))
    for cache in caches:
        cache.close()
