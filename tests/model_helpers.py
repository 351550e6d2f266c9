"""A stand-in fine-tune for tests: a copy of a tiny model with its MLP weights nudged, optionally saved."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from activations import LoadedModel


def tuned_copy(model: torch.nn.Module, scale: float = 0.5, seed: int = 1) -> torch.nn.Module:
    """A copy of ``model`` whose MLP weights moved by ``scale`` of their own SD (a seeded "fine-tune")."""
    tuned = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in tuned.named_parameters():
            if "mlp" in name:
                param.add_(torch.randn(param.shape, generator=generator, dtype=param.dtype) * param.std() * scale)
    return tuned


def save_tuned(loaded: LoadedModel, folder: Path, scale: float = 0.5, seed: int = 1) -> Path:
    """``tuned_copy`` of a loaded tiny model, saved with its tokenizer as an ordinary HF folder."""
    tuned_copy(loaded.model, scale, seed).save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    return folder
