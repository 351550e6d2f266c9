"""The sampler: per-job seeds, exact nucleus sampling, shared noise across copies, the growing cache."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from transformers.cache_utils import DynamicCache

from activations.prefix import shared_prefix
from activations.prompt_sets import apply_template
from activations.sampling import GrowingLayer, SamplingConfig, _nucleus_choice, growing_cache, sample_replies


def _prompts(tokenizer, n: int = 5) -> list[list[int]]:
    texts = ["Hi there", "What do you think of jazz?", "Tell me a story about a cat", "ok", "Why is the sky blue?"]
    return [tokenizer(apply_template(tokenizer, t, "user"), add_special_tokens=False).input_ids for t in texts[:n]]


def test_a_reply_depends_on_its_job_not_on_its_batch(tiny_llama):
    tokenizer = tiny_llama.tokenizer
    prompts, keys = _prompts(tokenizer), [f"k{i}" for i in range(5)]
    config = SamplingConfig(max_new_tokens=10, batch_size=3)
    together = sample_replies(tiny_llama.model, tokenizer, prompts, keys, config, samples=2)[0]
    alone = sample_replies(tiny_llama.model, tokenizer, prompts[3:4], keys[3:4], config, samples=2)[0]
    assert [r.tokens for r in together[6:8]] == [r.tokens for r in alone]
    assert together[0].tokens != together[1].tokens  # two samples of one prompt differ
    reseeded = sample_replies(tiny_llama.model, tokenizer, prompts[3:4], keys[3:4],
                              SamplingConfig(max_new_tokens=10, seed=1), samples=2)[0]
    assert [r.tokens for r in reseeded] != [r.tokens for r in alone]


def test_copies_share_their_random_numbers(tiny_llama):
    tokenizer = tiny_llama.tokenizer
    replies = sample_replies(tiny_llama.model, tokenizer, _prompts(tokenizer, 3), ["a", "b", "c"],
                             SamplingConfig(max_new_tokens=8), copies=3)
    assert [r.tokens for r in replies[0]] == [r.tokens for r in replies[1]] == [r.tokens for r in replies[2]]


def test_greedy_decoding_equals_generate(tiny_llama):
    tokenizer, model = tiny_llama.tokenizer, tiny_llama.model
    prompts = _prompts(tokenizer, 2)
    ours = sample_replies(model, tokenizer, prompts, ["a", "b"], SamplingConfig(max_new_tokens=7, temperature=0))[0]
    for prompt, reply in zip(prompts, ours):
        out = model.generate(torch.tensor([prompt]), max_new_tokens=7, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)[0, len(prompt):].tolist()
        eos = tokenizer.eos_token_id
        assert list(reply.tokens) == (out[: out.index(eos) + 1] if eos in out else out)


def test_nucleus_choice_samples_the_renormalised_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))  # top-p 0.9 keeps the first three
    generator = torch.Generator().manual_seed(0)
    draws = [int(_nucleus_choice(logits, torch.rand(1, 4, generator=generator), 1.0, 0.9)) for _ in range(20000)]
    frequencies = np.bincount(draws, minlength=4) / len(draws)
    np.testing.assert_allclose(frequencies, [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0], atol=0.012)


def test_growing_cache_gives_the_same_logits_as_the_default(tiny_llama):
    model = tiny_llama.model
    ids = torch.tensor([_prompts(tiny_llama.tokenizer, 1)[0]])
    results = []
    for cache in (DynamicCache(), growing_cache()):
        with torch.no_grad():
            out = model(input_ids=ids, past_key_values=cache, use_cache=True)
            logits = [out.logits[:, -1]]
            for step in range(70):  # past the buffer's first doubling
                token = logits[-1].argmax(-1, keepdim=True)
                logits.append(model(input_ids=token, past_key_values=cache, use_cache=True).logits[:, -1])
        results.append(torch.cat(logits))
    torch.testing.assert_close(results[0], results[1], rtol=1e-5, atol=1e-5)


def test_sampling_config_validates():
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=0.0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        SamplingConfig(max_new_tokens=0)


def _sharpen(model: torch.nn.Module) -> None:
    """Scale the queries and keys of a random model: its attention is then sharp, so a wrong position
    or a wrongly masked key changes the logits (at init scale attention is nearly uniform)."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                parameter.mul_(12.0)


def test_a_shared_prefix_prefilled_once_gives_every_row_its_own_prompt(tiny_llama, monkeypatch):
    tokenizer, model = tiny_llama.tokenizer, tiny_llama.model
    repeated = []
    original = GrowingLayer.repeat_rows
    monkeypatch.setattr(GrowingLayer, "repeat_rows", lambda self, rows: (repeated.append(rows), original(self, rows)))
    _sharpen(model)
    context = [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue, like the sea."}]
    texts = ["Hi there", "What do you think of jazz?", "Tell me a story about a cat", "ok"]
    prompts = [tokenizer(tokenizer.apply_chat_template([*context, {"role": "user", "content": t}], tokenize=False,
                                                       add_generation_prompt=True), add_special_tokens=False).input_ids
               for t in texts]
    keys = [f"k{i}" for i in range(len(texts))]
    for temperature in (0.0, 0.7):
        config = SamplingConfig(max_new_tokens=12, temperature=temperature, batch_size=3)
        full = sample_replies(model, tokenizer, prompts, keys, config, samples=2, copies=2)
        shared = sample_replies(model, tokenizer, prompts, keys, replace(config, share_prefix=True), samples=2,
                                copies=2)
        assert [[r.tokens for r in copy] for copy in shared] == [[r.tokens for r in copy] for copy in full]
    assert repeated and set(repeated) == {3, 2}  # the prefix path ran, for full batches of 3 and the last of 2


def test_a_shared_prefix_gives_the_logits_of_a_full_prefill(tiny_llama):
    tokenizer, model = tiny_llama.tokenizer, tiny_llama.model
    _sharpen(model)
    prompts = _prompts(tokenizer, 4)
    stat = lambda logits: logits.log_softmax(-1)[:, :50].sum(-1)  # noqa: E731 - a stat that sees every logit
    config = SamplingConfig(max_new_tokens=6, temperature=0, batch_size=4)
    full = sample_replies(model, tokenizer, prompts, list("abcd"), config, step_stat=stat)[0]
    shared = sample_replies(model, tokenizer, prompts, list("abcd"), replace(config, share_prefix=True), step_stat=stat)[0]
    assert shared_prefix(prompts) >= 4  # the chat template's opening is shared: the path under test runs
    for a, b in zip(full, shared):
        assert a.tokens == b.tokens
        np.testing.assert_allclose(a.step_stats, b.step_stats, rtol=1e-4, atol=1e-4)


def test_finished_rows_leave_the_batch_without_changing_any_reply(tiny_llama, monkeypatch):
    tokenizer, model = tiny_llama.tokenizer, tiny_llama.model
    _sharpen(model)
    prompts, keys = _prompts(tokenizer), [f"k{i}" for i in range(5)]
    config = SamplingConfig(max_new_tokens=16, batch_size=10)
    # make the end-of-turn token about a tenth of each step's mass at temperature 0.7 (the random
    # model's output is near uniform): replies then end at different steps, as real ones do
    eos = tokenizer.eos_token_id
    boost = lambda module, args, logits: logits + 6.0 * (torch.arange(logits.shape[-1]) == eos)  # noqa: E731
    kept = []
    original = GrowingLayer.keep_rows
    monkeypatch.setattr(GrowingLayer, "keep_rows", lambda self, index: (kept.append(len(index)), original(self, index)))
    stat = lambda logits: logits.log_softmax(-1)[:, :50].sum(-1)  # noqa: E731 - a stat that sees every logit
    handle = model.lm_head.register_forward_hook(boost)
    try:
        together = sample_replies(model, tokenizer, prompts, keys, config, samples=2, copies=2, step_stat=stat)
        alone = [sample_replies(model, tokenizer, prompts[job:job + 1], [key], replace(config, batch_size=1),
                                samples=2, step_stat=stat)[0] for job, key in enumerate(keys)]
    finally:
        handle.remove()
    assert kept  # rows left the batch
    lengths = [len(r.tokens) for r in together[0]]
    assert len(set(lengths)) > 2 and min(lengths) < config.max_new_tokens  # replies ended at different steps
    for copy in together:  # each prompt alone has nothing else in its batch to drop
        for job in range(len(keys)):
            for a, b in zip(copy[2 * job:2 * job + 2], alone[job]):
                assert a.tokens == b.tokens
                np.testing.assert_allclose(a.step_stats, b.step_stats, rtol=1e-4, atol=1e-4)


def test_bfloat16_sampling_runs_the_matmuls_in_bf16_and_leaves_the_weights(tiny_llama):
    tokenizer, model = tiny_llama.tokenizer, tiny_llama.model
    prompts = _prompts(tokenizer, 2)
    seen: list[torch.dtype] = []
    linear = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    handle = linear.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    try:
        config = SamplingConfig(max_new_tokens=6, temperature=0, precision="bfloat16")
        ours = sample_replies(model, tokenizer, prompts, ["a", "b"], config)[0]
        assert set(seen) == {torch.bfloat16}
        seen.clear()
        sample_replies(model, tokenizer, prompts, ["a", "b"], replace(config, precision="float32"))
        assert set(seen) == {torch.float32}
    finally:
        handle.remove()
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    # independent reference: transformers' greedy decoding under a hand-written autocast
    for prompt, reply in zip(prompts, ours):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model.generate(torch.tensor([prompt]), max_new_tokens=6, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)[0, len(prompt):].tolist()
        eos = tokenizer.eos_token_id
        assert list(reply.tokens) == (out[: out.index(eos) + 1] if eos in out else out)


def test_auto_precision_is_bf16_only_where_the_device_has_it(monkeypatch):
    from activations import precision as sampling

    monkeypatch.setattr(sampling, "_cpu_has_native_bf16", lambda: True)
    assert sampling.resolve_precision("auto", torch.device("cpu")) == "bfloat16"
    assert sampling.resolve_precision("float32", torch.device("cpu")) == "float32"
    monkeypatch.setattr(sampling, "_cpu_has_native_bf16", lambda: False)
    assert sampling.resolve_precision("auto", torch.device("cpu")) == "float32"
    assert sampling.resolve_precision("bfloat16", torch.device("cpu")) == "bfloat16"
    with pytest.raises(ValueError, match="precision must be one of"):
        SamplingConfig(precision="float16")
