"""Tiny, seeded, randomly initialised models with SmolLM2's real tokenizer, for tests and smoke runs.

They share the embedded model's tokenizer (a byte-level BPE with a chat template), so every code
path that tokenises, templates or decodes runs for real; only the weights are random.
"""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedModel

TINY_SEED = 0
"""``special`` below holds the tokenizer's pad/bos/eos token ids, so generation stops where it should."""


def tiny_llama(vocab_size: int, special: dict[str, int], seed: int = TINY_SEED) -> PreTrainedModel:
    """3 layers, d_model 64, 128 gated-MLP neurons per layer."""
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        **special,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def tiny_gpt2(vocab_size: int, special: dict[str, int], seed: int = TINY_SEED) -> PreTrainedModel:
    """3 layers, d_model 64, 256 plain-MLP neurons per layer."""
    config = GPT2Config(
        vocab_size=vocab_size,
        n_embd=64,
        n_layer=3,
        n_head=4,
        n_positions=1024,
        **special,
    )
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config).eval()


TINY_BUILDERS = {"tiny-random-llama": tiny_llama, "tiny-random-gpt2": tiny_gpt2}
