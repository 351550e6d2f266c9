"""Shared fixtures: tiny seeded models on CPU (real SmolLM2 tokenizer, random weights).

Each test gets its own copy of a model and its tokenizer (deep copies of session-built originals),
so a test that sets ``padding_side`` or edits weights cannot change what another test sees, and
the suite passes in any order."""

from __future__ import annotations

import copy
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


def _copy(loaded: LoadedModel) -> LoadedModel:
    return LoadedModel(copy.deepcopy(loaded.model), copy.deepcopy(loaded.tokenizer), loaded.spec, loaded.source,
                       loaded.base_spec)


@pytest.fixture(scope="session")
def _tiny_llama() -> LoadedModel:
    return load_model("tiny-random-llama")


@pytest.fixture(scope="session")
def _tiny_gpt2() -> LoadedModel:
    return load_model("tiny-random-gpt2")


@pytest.fixture(scope="session")
def _smollm2() -> LoadedModel:
    return load_model("smollm2-135m-instruct")


@pytest.fixture
def tiny_llama(_tiny_llama) -> LoadedModel:
    return _copy(_tiny_llama)


@pytest.fixture
def tiny_gpt2(_tiny_gpt2) -> LoadedModel:
    return _copy(_tiny_gpt2)


@pytest.fixture
def smollm2(_smollm2) -> LoadedModel:
    """The real embedded default model (integration tests only); a fresh copy per test."""
    return _copy(_smollm2)
