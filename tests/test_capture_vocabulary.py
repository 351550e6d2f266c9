"""A tokenizer whose ids exceed the model's vocabulary is refused by name before any forward pass
(found at the 7B shape: a 32,000-id model with the project's 49,152-id tokenizer)."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from activations.capture import capture


def test_capture_refuses_token_ids_beyond_the_model_vocabulary(tiny_llama):
    torch.manual_seed(0)
    small = LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=1)).eval()
    prompts = ["What is the capital city of Australia?", "Tell me about the weather"]
    with pytest.raises(ValueError, match=r"beyond the model's vocabulary of 300 .*own tokenizer"):
        capture(small, tiny_llama.tokenizer, prompts, None, template="raw")
    cache = capture(tiny_llama.model, tiny_llama.tokenizer, prompts, None, template="raw")  # its own: accepted
    assert len(cache) == 2
