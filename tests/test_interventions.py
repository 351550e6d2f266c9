"""Interventions edit exactly the chosen neurons, in forward and generate alike, and leave no hooks."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, contextmanager

import pytest
import torch

from activations import neuron_sites
from activations.hooks import any_hooks, hooked
from interp.interventions import NeuronSet, ablate, layer_widths, mean_activations, patch, record_neurons, scale, token_pool

PROMPTS = ["The weather today is lovely and", "My favourite food is", "Tell me about your weekend plans please"]


def _encode(loaded, texts=PROMPTS, side="right"):
    loaded.tokenizer.padding_side = side
    return loaded.tokenizer(texts, return_tensors="pt", padding=True)


@contextmanager
def _before_and_after(model):
    """Record each site's neuron vector as it enters the edit hooks and as it leaves them.

    ``hooked`` runs pre-hooks in registration order, so a spy registered before the intervention
    sees its input and one registered inside it sees its output, in the same forward pass.
    """
    sites = neuron_sites(model)
    before, after = {}, {}
    keep = lambda store, layer: (lambda acts: store.__setitem__(layer, acts.detach().clone()))  # noqa: E731
    with hooked([(s, keep(before, s.layer)) for s in sites]):
        yield before, lambda: hooked([(s, keep(after, s.layer)) for s in sites]), after


def _mixed_set(model) -> NeuronSet:
    widths = layer_widths(model)
    return NeuronSet.from_pairs([(0, 3), (0, widths[0] - 1), (1, 0), (2, 17), (2, 18), (2, 64)])


def _check_only_chosen_change(loaded, make: Callable[[], AbstractContextManager], expected: Callable) -> None:
    model = loaded.model
    enc = _encode(loaded)
    neurons = _mixed_set(model)
    chosen = neurons.by_layer()
    with torch.no_grad(), _before_and_after(model) as (before, spy_after, after), make(), spy_after():
        model(**enc)
    for layer in before:
        mask = torch.zeros(before[layer].shape[-1], dtype=torch.bool)
        if layer in chosen:
            mask[chosen[layer]] = True
        # untouched neurons: bit-identical, not merely close
        assert torch.equal(before[layer][..., ~mask], after[layer][..., ~mask]), layer
        if layer in chosen:
            torch.testing.assert_close(after[layer][..., mask], expected(layer, before[layer])[..., mask], rtol=0, atol=0)


@pytest.mark.parametrize("which", ["tiny_llama", "tiny_gpt2"])
def test_zero_mean_scale_change_exactly_the_chosen_neurons(which, request) -> None:
    loaded = request.getfixturevalue(which)
    model = loaded.model
    widths = layer_widths(model)
    means = {layer: torch.randn(width) for layer, width in widths.items()}
    neurons = _mixed_set(model)
    _check_only_chosen_change(loaded, lambda: ablate(model, neurons, "zero"), lambda layer, b: torch.zeros_like(b))
    _check_only_chosen_change(
        loaded, lambda: ablate(model, neurons, "mean", means), lambda layer, b: means[layer].expand_as(b)
    )
    _check_only_chosen_change(loaded, lambda: scale(model, neurons, 2.5), lambda layer, b: b * 2.5)
    assert not any_hooks(neuron_sites(model))


def test_patch_sets_recorded_values_and_only_those(tiny_llama) -> None:
    model = tiny_llama.model
    enc = _encode(tiny_llama)
    donor = {layer: torch.randn(*enc.input_ids.shape, width) for layer, width in layer_widths(model).items()}
    neurons = _mixed_set(model)
    _check_only_chosen_change(tiny_llama, lambda: patch(model, neurons, donor), lambda layer, b: donor[layer])


def test_resample_draws_whole_donor_tokens(tiny_llama) -> None:
    model = tiny_llama.model
    pool = token_pool(model, [tuple(_encode(tiny_llama, ["A completely different donor prompt", "x y z"]).values())])
    neurons = NeuronSet.from_pairs([(1, 5), (1, 9), (1, 40)])
    enc = _encode(tiny_llama)
    with torch.no_grad(), _before_and_after(model) as (before, spy_after, after), ablate(model, neurons, "resample", pool), spy_after():
        model(**enc)
    idx = neurons.by_layer()[1]
    written = after[1][..., idx].reshape(-1, len(idx))
    donors = pool[1][:, idx]
    # every written vector is one donor token's vector (joint over the chosen neurons)
    assert all((donors == row).all(-1).any() for row in written)
    other = torch.ones(after[1].shape[-1], dtype=torch.bool)
    other[idx] = False
    assert torch.equal(before[1][..., other], after[1][..., other])


def test_hooks_removed_on_exit_and_on_exception(tiny_llama) -> None:
    model = tiny_llama.model
    sites = neuron_sites(model)
    neurons = _mixed_set(model)
    enc = _encode(tiny_llama)
    with ablate(model, neurons):
        assert any_hooks(sites)
    assert not any_hooks(sites)
    with pytest.raises(RuntimeError, match="boom"), scale(model, neurons, 3.0):
        raise RuntimeError("boom")
    assert not any_hooks(sites)
    # a patch whose shape does not fit raises inside the forward pass; hooks still go
    wrong = {layer: torch.zeros(1, 2, width) for layer, width in layer_widths(model).items()}
    with pytest.raises(ValueError, match="Position-aligned"), patch(model, neurons, wrong), torch.no_grad():
        model(**enc)
    assert not any_hooks(sites)


def test_model_output_unchanged_after_exit(tiny_gpt2) -> None:
    model = tiny_gpt2.model
    enc = _encode(tiny_gpt2)
    with torch.no_grad():
        clean = model(**enc).logits
        with ablate(model, _mixed_set(model)):
            ablated = model(**enc).logits
        again = model(**enc).logits
    assert not torch.equal(clean, ablated)
    assert torch.equal(clean, again)


@pytest.mark.parametrize("which", ["tiny_llama", "tiny_gpt2"])
@pytest.mark.parametrize("mode", ["zero", "mean", "scale", "patch-constant"])
def test_generate_under_intervention_equals_forward_on_same_tokens(which, mode, request) -> None:
    loaded = request.getfixturevalue(which)
    model, tokenizer = loaded.model, loaded.tokenizer
    neurons = NeuronSet.from_pairs([(0, i) for i in range(0, 40, 3)] + [(2, i) for i in range(10, 30)])
    widths = layer_widths(model)
    constants = {layer: torch.randn(width) * 3 for layer, width in widths.items()}
    make = {
        "zero": lambda: ablate(model, neurons, "zero"),
        "mean": lambda: ablate(model, neurons, "mean", constants),
        "scale": lambda: scale(model, neurons, -4.0),
        "patch-constant": lambda: patch(model, neurons, constants),
    }[mode]
    enc = _encode(loaded, PROMPTS[:1])  # one prompt: no padding, so positions agree trivially
    n_prompt = enc.input_ids.shape[1]
    with torch.no_grad(), make():
        out = model.generate(**enc, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                             output_logits=True, return_dict_in_generate=True)
        forward = model(out.sequences).logits
    with torch.no_grad():
        clean = model(out.sequences).logits[:, n_prompt - 1 : -1]
    steps = torch.stack(out.logits, dim=1)  # (1, new, vocab): logits of each generate step
    teacher = forward[:, n_prompt - 1 : -1]
    torch.testing.assert_close(steps, teacher, rtol=1e-4, atol=1e-4)
    assert torch.equal(teacher.argmax(-1), out.sequences[:, n_prompt:])
    # a random tiny model may emit the same tokens either way; its logits must still move
    assert (clean - teacher).abs().max() > 1e-3, "the intervention should matter for this check to mean anything"


def test_mean_activations_are_token_means(tiny_llama) -> None:
    model = tiny_llama.model
    enc = _encode(tiny_llama)
    means = mean_activations(model, [(enc.input_ids, enc.attention_mask)])
    acts = record_neurons(model, enc.input_ids, enc.attention_mask)
    real = enc.attention_mask.bool()
    torch.testing.assert_close(means[1], acts[1][real].mean(0), rtol=1e-5, atol=1e-6)


def test_neuron_index_out_of_range_is_a_clear_error(tiny_llama) -> None:
    with pytest.raises(ValueError, match="out of range"), ablate(tiny_llama.model, NeuronSet.from_pairs([(0, 10_000)])):
        pass
    with pytest.raises(ValueError, match="layers"), ablate(tiny_llama.model, NeuronSet.from_pairs([(7, 1)])):
        pass
    with pytest.raises(ValueError, match="reference"), ablate(tiny_llama.model, NeuronSet.from_pairs([(0, 1)]), "mean"):
        pass


def test_mean_references_are_content_token_means(tiny_llama, tmp_path) -> None:
    from activations.capture import capture
    from interp.interventions import content_reference, mean_reference_from_cache

    texts = ["The weather today is lovely", "My favourite food is soup", "Tell me more"]
    capture(tiny_llama, None, texts, tmp_path / "cache.h5", template="raw", batch_size=2).close()
    from_cache = mean_reference_from_cache(tmp_path / "cache.h5")
    recorded = content_reference(tiny_llama.model, tiny_llama.tokenizer, texts, template="raw")
    enc = _encode(tiny_llama, texts)
    # by hand: every real token except each text's first (position 0 never enters a content mean)
    content = enc.attention_mask.bool().clone()
    content[:, 0] = False
    acts = record_neurons(tiny_llama.model, enc.input_ids, enc.attention_mask)
    by_hand = {layer: values[content].double().mean(0).float() for layer, values in acts.items()}
    assert sorted(from_cache) == [0, 1, 2] and recorded.n_tokens == int(content.sum())
    for layer in from_cache:
        torch.testing.assert_close(from_cache[layer], by_hand[layer], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(recorded.means[layer], by_hand[layer], rtol=1e-4, atol=1e-5)
