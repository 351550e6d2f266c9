"""Shared fixtures: tiny seeded models on CPU (real SmolLM2 tokenizer, random weights)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from activations import LoadedModel, load_model

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_llama() -> LoadedModel:
    return load_model("tiny-random-llama")


@pytest.fixture(scope="session")
def tiny_gpt2() -> LoadedModel:
    return load_model("tiny-random-gpt2")


@pytest.fixture(scope="session")
def smollm2() -> LoadedModel:
    """The real embedded default model (integration tests only)."""
    return load_model("smollm2-135m-instruct")
