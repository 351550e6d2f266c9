"""Copies of a model that share every tensor they do not edit: an exported 7B copy costs its edits.

``copy.deepcopy`` of a 7B model in bfloat16 needs another 14.5 GB, so exporting a suppressed copy
next to the source needs 29 GB. A sharing copy is built on the meta device and takes the source's
tensors by reference (``load_state_dict(assign=True)``, non-persistent buffers such as rotary
frequencies by name); an edit first gives the edited tensor its own storage (``own``), so the
source never changes and the copy costs only the weights it edits (one output projection per
edited layer).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PretrainedConfig


def sharing_copy(model: nn.Module, config: PretrainedConfig | None = None) -> tuple[nn.Module, list[str]]:
    """A module of ``model``'s class (built from ``config``, default its own) holding ``model``'s tensors,
    and the names of the parameters ``model`` has no tensor for (zero-filled, on ``model``'s device)."""
    with torch.device("meta"):
        clone = type(model)(config if config is not None else model.config)
    missing, unexpected = clone.load_state_dict(model.state_dict(), strict=False, assign=True)
    if unexpected:
        raise ValueError(f"{type(model).__name__} rebuilt from its config has no {unexpected[:3]}; export with method 'zero'")
    for name, buffer in model.named_buffers():  # non-persistent buffers are not in the state dict
        owner, _, leaf = name.rpartition(".")
        clone.get_submodule(owner)._buffers[leaf] = buffer
    reference = next(model.parameters())
    for name in missing:
        owner, _, leaf = name.rpartition(".")
        module = clone.get_submodule(owner)
        module._parameters[leaf] = nn.Parameter(torch.zeros(module._parameters[leaf].shape, dtype=reference.dtype,
                                                            device=reference.device), requires_grad=False)
    if getattr(clone.config, "tie_word_embeddings", False):
        clone.tie_weights()
    for param in clone.parameters():
        param.requires_grad_(False)
    return clone.eval(), list(missing)


@torch.no_grad()
def own(module: nn.Module, name: str) -> nn.Parameter:
    """Give ``module.<name>`` its own storage (a copy of its values) before an in-place edit."""
    param = getattr(module, name)
    owned = nn.Parameter(param.detach().clone(), requires_grad=False)
    setattr(module, name, owned)
    return owned
