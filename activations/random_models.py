"""Randomly initialised models of real shapes (7B and up), built without ever holding a float32 copy.

For benchmarks and the pre-flight planner's checks: what a capture, a diff or an attribution costs
depends on a model's shape, not on its trained weights. ``random_model`` builds the architecture on
the meta device (no memory), allocates it once in the target dtype (``to_empty``) and fills each
parameter in place, so a 7B model in bfloat16 peaks at its 14.5 GB of weights, where
``from_config`` on the CPU would first initialise in float32.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig

from activations.shapes import SHAPES


def shape_config(name: str) -> PretrainedConfig:
    """The transformers config of a built-in shape (``activations.shapes.SHAPES``)."""
    if name not in SHAPES:
        raise ValueError(f"unknown shape {name!r}; choose one of {', '.join(SHAPES)}")
    fields = dict(SHAPES[name])
    return AutoConfig.for_model(str(fields.pop("model_type")), **fields)


@torch.no_grad()
def random_model(config: PretrainedConfig | str, *, dtype: torch.dtype = torch.bfloat16, seed: int = 0,
                 std: float = 0.02, device: str | torch.device = "cpu") -> nn.Module:
    """A causal LM of ``config`` (or a shape name) with N(0, ``std``) weights and unit norms, in eval
    mode, allocated and filled on ``device`` (a 7B model fills in seconds on a GPU, minutes on a CPU).

    Buffers that are computed rather than loaded (rotary frequencies) are rebuilt: after ``to_empty``
    they would hold whatever the allocator returned."""
    if isinstance(config, str):
        config = shape_config(config)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.to_empty(device=device)
    model.tie_weights()  # to_empty gives each module its own tensor, which unties shared embeddings
    generator = torch.Generator(device=device).manual_seed(seed)
    for name, param in model.named_parameters():
        if param.dim() == 1:  # norm scales (and biases, which Llama-family MLPs do not have)
            param.fill_(0.0 if name.endswith(".bias") else 1.0)
        else:
            param.normal_(0.0, std, generator=generator)
    for parent in list(model.modules()):
        for child_name, child in parent.named_children():
            if type(child).__name__.endswith("RotaryEmbedding"):
                setattr(parent, child_name, type(child)(config=model.config).to(device))
    return model.eval()
