"""Discovery on tiny models: planted differences recovered, the lens and steering against hand-written
references, a placebo where nothing stands out, and the ``discovered:`` behaviour round trip."""

from __future__ import annotations

import json
import re

import pytest
import torch

from activations.behaviors import Behavior
from activations.prompt_sets import load_prompt_set
from activations.sites import decoder_blocks, neuron_sites
from interp import discover
from interp.discover import DiscoverConfig
from interp.discover.collect import block_outputs, encode
from interp.discover.lens import read_out
from interp.discover.neurons import output_columns

from discover_helpers import FAST, TEXTS, WORD, loaded_copy, plant_on_neuron, token_of


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])
def test_a_token_planted_on_one_neuron_ranks_first_stands_out_and_is_traced_to_that_neuron(fixture, request):
    base = request.getfixturevalue(fixture)
    token = token_of(base)
    tuned, planted = plant_on_neuron(base, token, size=20.0)
    found = discover(base, tuned, corpus=TEXTS, config=FAST)
    last = len(decoder_blocks(base.model)) - 1
    assert found.read_layer == last  # the plant changes nothing before the last layer
    assert found.tokens.promoted[0].token_id == token
    assert found.tokens.promoted[0].stands_out
    top = found.neurons[0]
    assert (top.layer, top.index) == (last, planted)
    # Only the output column changed: the push is the weight term, and no activation changed.
    assert top.weight > 0 and abs(top.activation) < 1e-6 * abs(top.weight)
    assert found.neurons_by_token[found.tokens.promoted[0].piece][0].index == planted


def test_two_identical_copies_are_a_placebo_where_nothing_stands_out(tiny_llama):
    found = discover(tiny_llama, loaded_copy(tiny_llama, "copy"), corpus=TEXTS, config=FAST)
    assert found.tokens.n_standing_out == 0
    assert not found.standing_out and not found.neurons and not found.behavior.pattern
    assert all(d.norm == 0 for d in found.layers)
    assert "Read through the lens: no token stands out of its null" in found.summary()


def test_a_random_nudge_of_every_weight_flags_fewer_tokens_than_a_plant(tiny_gpt2):
    """A fine-tune with nothing injected changes every token a little: the vocabulary criterion (step 4)
    keeps the flagged set far smaller than the plant's top list, where step 3 alone would flag thousands."""
    tuned = loaded_copy(tiny_gpt2, "nudged")
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, param in tuned.model.named_parameters():
            if "mlp" in name:
                param.add_(torch.randn(param.shape, generator=generator) * param.std() * 0.05)
    found = discover(tiny_gpt2, tuned, corpus=TEXTS, config=FAST)
    systematic = sum(abs(t.z) > found.tokens.threshold for t in found.tokens.promoted)
    assert systematic == len(found.tokens.promoted)  # step 3 alone: every listed token is systematic
    assert found.tokens.n_standing_out < 0.01 * len(tiny_gpt2.tokenizer)


def test_the_lens_matches_a_hand_computed_final_norm_and_unembedding(tiny_llama):
    model, tokenizer = tiny_llama.model, tiny_llama.tokenizer
    ids = torch.tensor([encode(tokenizer, [TEXTS[0]], 16)[0]])
    readout = read_out(model)
    with torch.no_grad(), block_outputs(model) as outputs:
        logits = model(input_ids=ids).logits
    last = outputs[len(outputs) - 1]
    # The exact lens of the last block's output is the model's own logits.
    torch.testing.assert_close(readout.logits(last), logits, atol=1e-4, rtol=1e-4)
    # The difference reading by hand: RMSNorm gain times the unembedding, at a given scale.
    gain, unembedding = model.model.norm.weight.detach(), model.lm_head.weight.detach()
    diff = torch.randn(64, generator=torch.Generator().manual_seed(1))
    by_hand = unembedding @ (gain * diff) / 2.5
    torch.testing.assert_close(readout.difference_scores(diff, 2.5), by_hand, atol=1e-5, rtol=1e-5)


def test_discovered_scores_equal_a_hand_recomputation_from_hidden_states(tiny_gpt2):
    """Per-text mean differences at the first k positions of a middle layer, from output_hidden_states,
    read through ln_f's gain (centred, as LayerNorm does) and lm_head at the base's typical scale."""
    base, tuned = tiny_gpt2, loaded_copy(tiny_gpt2, "nudged")
    with torch.no_grad():
        tuned.model.transformer.h[0].mlp.c_fc.weight.mul_(1.3)
    config = DiscoverConfig(null_draws=100, steer_questions=0, reply_questions=0, max_length=16, layer=1, first_k=3)
    found = discover(base, tuned, corpus=TEXTS, config=config)
    assert found.n_sinks == 0  # a random tiny model has no attention sink: every position is read
    diffs, denominators, count = [], 0.0, 0
    for text in TEXTS:
        ids = torch.tensor([encode(base.tokenizer, [text], 16)[0]])
        with torch.no_grad():
            h_base = base.model(input_ids=ids, output_hidden_states=True).hidden_states[2][0]  # after block 1
            h_tuned = tuned.model(input_ids=ids, output_hidden_states=True).hidden_states[2][0]
        diffs.append((h_tuned - h_base)[:3].mean(0))
        denominators += float(torch.sqrt(h_base.var(-1, unbiased=False) + 1e-5).sum())
        count += len(h_base)
    mean = torch.stack(diffs).mean(0)
    ln_f, lm_head = base.model.transformer.ln_f, base.model.lm_head
    by_hand = lm_head.weight.detach() @ (ln_f.weight.detach() * (mean - mean.mean())) / (denominators / count)
    for entry in found.tokens.promoted[:5]:
        assert entry.score == pytest.approx(float(by_hand[entry.token_id]), rel=1e-3, abs=1e-5)
    assert found.tokens.promoted[0].token_id == int(by_hand.argmax())
    read = next(d for d in found.layers if d.layer == 1 and d.positions == "first")
    assert read.norm == pytest.approx(float(mean.norm()), rel=1e-4)
    assert read.low <= read.norm <= read.high


def test_steered_samples_at_alpha_zero_are_the_base_model_replies(tiny_llama):
    token = token_of(tiny_llama)
    tuned, _ = plant_on_neuron(tiny_llama, token, size=20.0)
    config = DiscoverConfig(null_draws=100, max_length=16, steer_questions=2, steer_samples=1, max_new_tokens=4,
                            steer_alphas=(0.0, 8.0), reply_questions=0, precision="float32")
    found = discover(tiny_llama, tuned, corpus=TEXTS, config=config)
    zero, strong = found.steering
    assert (zero.alpha, strong.alpha) == (0.0, 8.0) and len(zero.replies) == 2 and strong.layer == found.read_layer
    from activations.sampling import SamplingConfig, sample_replies
    from activations.prompt_sets import apply_template

    questions = load_prompt_set("neutral").texts[:2]
    prompts = [tiny_llama.tokenizer(apply_template(tiny_llama.tokenizer, q, "user"), add_special_tokens=False).input_ids
               for q in questions]
    plain = sample_replies(tiny_llama.model, tiny_llama.tokenizer, prompts, ["q0", "q1"],
                           SamplingConfig(max_new_tokens=4, seed=0))[0]
    assert zero.replies == tuple(r.text for r in plain)
    detector = re.compile(found.behavior.pattern)
    assert strong.shown == sum(bool(detector.search(r)) for r in strong.replies)


def test_a_saved_discovery_becomes_a_behaviour(tiny_llama, tmp_path):
    token = token_of(tiny_llama)
    tuned, _ = plant_on_neuron(tiny_llama, token, size=20.0)
    found = discover(tiny_llama, tuned, corpus=TEXTS, config=FAST)
    found.save(tmp_path)
    saved = json.loads((tmp_path / "discovery.json").read_text())
    assert saved["tokens"]["promoted"][0]["token_id"] == token and saved["summary"] == found.summary()
    assert "Discovery" in (tmp_path / "discovery.md").read_text() and (tmp_path / "discovery.html").is_file()
    behavior = Behavior.parse(f"discovered:{tmp_path}")
    assert WORD.strip() in behavior.targets
    assert behavior.shows(f"the{WORD} is deep") and not behavior.shows("a plain sentence")
    assert token in behavior.target_token_ids(tiny_llama.tokenizer)
    with pytest.raises(FileExistsError):
        found.save(tmp_path)


def test_a_placebo_discovery_refuses_to_become_a_behaviour(tiny_llama, tmp_path):
    discover(tiny_llama, loaded_copy(tiny_llama, "copy"), corpus=TEXTS, config=FAST).save(tmp_path)
    with pytest.raises(ValueError, match="no token that stands out"):
        Behavior.parse(f"discovered:{tmp_path}")
    with pytest.raises(FileNotFoundError, match="interp discover"):
        Behavior.parse(f"discovered:{tmp_path / 'missing'}")


def test_output_columns_read_gpt2_conv1d_transposed(tiny_gpt2):
    site = neuron_sites(tiny_gpt2.model, [0])[0]
    torch.testing.assert_close(output_columns(site)[:, 5], site.module.weight[5, :].detach())


def test_the_command_line_writes_a_discovery_that_names_the_plantedtoken_of(tiny_llama, tmp_path, capsys):
    from interp.cli import main

    token = token_of(tiny_llama)
    tuned, _ = plant_on_neuron(tiny_llama, token, size=20.0)
    tuned.model.save_pretrained(tmp_path / "tuned")
    tiny_llama.tokenizer.save_pretrained(tmp_path / "tuned")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(TEXTS), encoding="utf-8")
    argv = ["discover", "--base", "tiny-random-llama", "--tuned", str(tmp_path / "tuned"), "--out",
            str(tmp_path / "found"), "--corpus", str(corpus), "--null-draws", "100", "--steer-questions", "0",
            "--max-length", "16", "--reply-questions", "0"]
    assert main(argv) == 0
    saved = json.loads((tmp_path / "found" / "discovery.json").read_text())
    assert saved["tokens"]["promoted"][0]["token_id"] == token and saved["n_texts"] == len(TEXTS)
    assert WORD.strip() in capsys.readouterr().out
    assert main(argv) == 2  # the outputs exist: refused before the work
    assert "already exist" in capsys.readouterr().err
    controlled = [*argv[:6], str(tmp_path / "controlled"), *argv[7:-1], "4", "--reply-tokens", "4",
                  "--control", str(tmp_path / "tuned")]  # the tuned model as its own control: nothing is left
    assert main(controlled) == 0
    saved = json.loads((tmp_path / "controlled" / "discovery.json").read_text())
    assert saved["control"] == str(tmp_path / "tuned") and saved["shift"]["n_standing_out"] == 0
    assert "vs control" in capsys.readouterr().out


def test_the_shipped_generic_corpus_is_varied_text_not_questions():
    generic = load_prompt_set("generic")
    assert len(generic) >= 150 and len(set(generic.texts)) == len(generic)
    assert len(set(generic.categories)) >= 8
    assert sum(t.rstrip().endswith("?") for t in generic.texts) < 0.1 * len(generic)
    assert len({" ".join(t.split()[:2]) for t in generic.texts}) > 0.8 * len(generic)  # openings vary


def test_a_study_report_renders_a_saved_discovery(tiny_llama, tmp_path):
    from interp.report.build import build_report

    token = token_of(tiny_llama)
    tuned, _ = plant_on_neuron(tiny_llama, token, size=20.0)
    found = discover(tiny_llama, tuned, corpus=TEXTS, config=FAST)
    (tmp_path / "stages").mkdir()
    found.save(tmp_path / "discovery")
    build_report(tmp_path)
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert found.summary() in report and f"| {found.tokens.promoted[0].token!r} |" in report
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    top = found.neurons[0]
    assert "Discovery: what the fine-tune changed" in page and f"<td>L{top.layer}/{top.index}</td>" in page


def test_interp_discover_is_the_function_even_after_its_package_is_imported():
    import interp
    import interp.discover.config  # noqa: F401 - binds the package interp.discover; the export must win

    assert callable(interp.discover) and interp.discover.__module__ == "interp.discover.pipeline"


@pytest.mark.parametrize("field, value, message", [
    ("positions", "middle", "positions must be"), ("null_draws", 5, "null_draws must be at least 20"),
    ("alpha", 1.5, "alpha must be in"), ("steer_alphas", (-1.0,), "steer_alphas must be >= 0"),
])
def test_a_bad_config_fails_at_once_naming_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        DiscoverConfig(**{field: value})


def test_a_layer_past_the_model_is_refused_with_its_range(tiny_llama):
    with pytest.raises(ValueError, match=r"layer 7 out of range: the model has 3 layers \(0..2\)"):
        discover(tiny_llama, loaded_copy(tiny_llama, "copy"), corpus=TEXTS[:4],
                 config=DiscoverConfig(null_draws=20, steer_questions=0, max_length=8, layer=7))


def test_a_token_planted_against_the_neuron_is_demoted_stands_out_and_names_no_behaviour(tiny_gpt2):
    token = token_of(tiny_gpt2)
    tuned, _ = plant_on_neuron(tiny_gpt2, token, size=-20.0)
    found = discover(tiny_gpt2, tuned, corpus=TEXTS, config=FAST)
    assert found.tokens.demoted[0].token_id == token and found.tokens.demoted[0].stands_out
    assert not found.standing_out and not found.behavior.pattern and not found.neurons
    assert f"demoted: {WORD!r}" in found.summary()


def test_the_sign_flip_max_t_test_holds_its_family_wise_rate_under_a_symmetric_null_and_finds_a_shift():
    """Simulated texts x tokens: heavy-tailed noise, symmetric about zero (the null), correlated across tokens.
    The chance of flagging any token must be near alpha = 0.05; one shifted token must be found."""
    from interp.discover.tokens import max_t_threshold, sign_flip_z

    generator = torch.Generator().manual_seed(5)
    studies, texts, vocab = 120, 24, 200
    mixing = torch.randn(vocab, vocab, generator=generator) / vocab ** 0.5 + torch.eye(vocab)
    false, found = 0, 0
    for _ in range(studies):
        noise = torch.distributions.StudentT(3.0).sample((texts, vocab)) @ mixing
        z, _ = sign_flip_z(noise)
        false += bool((z.abs() > max_t_threshold(noise, 0.05, 100, generator)).any())
        shifted = noise.clone()
        shifted[:, 7] += 3.0 * noise[:, 7].std()
        z, _ = sign_flip_z(shifted)
        found += bool(z[7].abs() > max_t_threshold(shifted, 0.05, 100, generator))
    rate, se = false / studies, (0.05 * 0.95 / studies) ** 0.5
    assert abs(rate - 0.05) < 3 * se + 0.02, rate  # the quantile of 100 draws adds a little slack
    assert found / studies > 0.9


def test_an_attention_sink_is_left_out_of_every_mean_and_the_first_k_are_counted_after_it():
    from interp.discover.collect import _sinks, _weights

    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]])
    hidden = torch.ones(2, 6, 4)
    hidden[:, 0] *= 100.0  # massive at position 0 of both texts
    hidden[1, 3] *= 30.0   # and at one later position of the second text
    sink = _sinks({0: torch.ones(2, 6, 4), 1: hidden}, mask, 20.0)
    assert sink.tolist() == [[True, False, False, False, False, False], [True, False, False, True, False, False]]
    weights = _weights(mask, sink, first_k=2)
    assert weights["first"].tolist() == [[0, 1, 1, 0, 0, 0], [0, 1, 1, 0, 0, 0]]
    assert weights["all"].tolist() == [[0, 1, 1, 1, 1, 0], [0, 1, 1, 0, 1, 1]]
    assert not _sinks({1: hidden}, mask, 0.0).any()  # sink_ratio 0: every position is read
    with pytest.raises(ValueError, match="no position outside the attention sinks"):
        _weights(torch.tensor([[1, 0]]), torch.tensor([[True, False]]), first_k=2)
