"""The shapes of real models, as transformers config fields: nothing here loads torch or weights.

The planner (``interp.plan``) reads them by name (``interp plan --model mistral-7b``), and the
benchmarks build randomly initialised models of them (``activations.random_models``). The numbers
are the published configs' (hidden size, MLP width, layers, heads, vocabulary), so parameter and
neuron counts are exact: Mistral-7B-v0.1 has 32 x 14,336 = 458,752 MLP neurons and 7.24B parameters,
Llama-2-7B 32 x 11,008 = 352,256 and 6.74B.
"""

from __future__ import annotations

SHAPES: dict[str, dict[str, object]] = {
    "smollm2-135m": dict(model_type="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True,
                         max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-5),
    "smollm2-360m": dict(model_type="llama", hidden_size=960, intermediate_size=2560, num_hidden_layers=32,
                         num_attention_heads=15, num_key_value_heads=5, vocab_size=49152, tie_word_embeddings=True,
                         max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-5),
    "smollm2-1.7b": dict(model_type="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=24,
                         num_attention_heads=32, num_key_value_heads=32, vocab_size=49152, tie_word_embeddings=True,
                         max_position_embeddings=8192, rope_theta=130000.0, rms_norm_eps=1e-5),
    "llama-2-7b": dict(model_type="llama", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=32, vocab_size=32000, tie_word_embeddings=False,
                       max_position_embeddings=4096, rope_theta=10000.0, rms_norm_eps=1e-5),
    "mistral-7b": dict(model_type="mistral", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=8, vocab_size=32000, tie_word_embeddings=False,
                       max_position_embeddings=32768, rope_theta=10000.0, rms_norm_eps=1e-5, sliding_window=4096),
}
"""Shape name -> config fields (``model_type`` picks the transformers config class)."""
