"""One entry point for every model the project analyses: ``load_model(spec)``.

Accepted specs (checked in this order):
  ``smollm2-135m-instruct``          the embedded default (see ``embedded.py``)
  ``tiny-random-llama|gpt2``         seeded random models for tests (see ``tiny.py``)
  a local peft adapter directory     its base is loaded by the same rules, then the adapter applied
  a local HF model directory         ``config.json`` + weights
  a hub id ``org/name``              downloaded when a hub is reachable; fails fast when not

A model too large for one device loads with ``device_map`` (and ``max_memory``, ``offload_folder``)
split over GPUs, CPU and disk; see ``activations.placement``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from activations.config import DEFAULT_MODEL, EMBEDDED_NAME
from activations.embedded import embedded_model, embedded_tokenizer
from activations.placement import DeviceMap, MaxMemory, check_dispatched, offloaded_tensor, placement_kwargs
from activations.tiny import TINY_BUILDERS

log = logging.getLogger(__name__)

SPEC_FORMS = (
    f"'{EMBEDDED_NAME}', 'tiny-random-llama', 'tiny-random-gpt2', a local HF model directory, "
    "a local peft adapter directory, or a hub id 'org/name'"
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelSpecError(ValueError):
    """A model spec that cannot be resolved; the message says which forms are accepted."""


@dataclass(frozen=True)
class LoadedModel:
    """A causal LM in eval mode with its tokenizer and where it came from."""

    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    spec: str
    """The spec it was loaded from, as given."""
    source: str
    """One of: embedded, tiny, local, adapter, hub."""
    base_spec: str | None = None
    """For adapters: the spec of the base model the adapter was applied to."""
    hf_device_map: dict[str, int | str] | None = None
    """For a model loaded with a ``device_map``: module -> device (``"disk"`` for offloaded ones)."""


def _prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    if tokenizer.pad_token is None:  # batching needs one; eos is the usual stand-in
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _hub_reachable(timeout: float = 3.0) -> bool:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = urlparse(endpoint).hostname or "huggingface.co"
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _cached_snapshot(spec: str) -> Path | None:
    """The hub id's folder in the local HF cache, or None; never asks the network."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(spec, local_files_only=True))
    except Exception:  # the hub client raises several unrelated types for "not cached"
        return None


def _load_hub(spec: str, dtype: torch.dtype, placement: dict[str, object]) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    local = _cached_snapshot(spec)  # already cached: load the folder, so nothing asks the network
    if local is not None:
        # not from_pretrained(spec, local_files_only=True): transformers still looks for an
        # adapter_config.json on the hub then, retrying for ~25 s when there is no network
        return (AutoModelForCausalLM.from_pretrained(local, dtype=dtype, **placement),
                AutoTokenizer.from_pretrained(local))
    if not _hub_reachable():
        raise ModelSpecError(
            f"{spec!r} looks like a hub id, but the Hugging Face hub is unreachable from here and the "
            "model is not in the local HF cache; download it on a connected machine "
            "(`huggingface-cli download ORG/NAME --local-dir DIR`) and pass DIR"
        )
    return (
        AutoModelForCausalLM.from_pretrained(spec, dtype=dtype, **placement),
        AutoTokenizer.from_pretrained(spec),
    )


def _check_trained_base(path: Path, base_spec: str, base_model: nn.Module) -> None:
    """Refuse a base other than the one ``interp train`` recorded in ``training.json``.

    A LoRA delta applied to a different base of the same shape loads without complaint and gives a
    model nobody trained, so the recorded weights fingerprint is the check, not the spec's name."""
    record_path = path / "training.json"
    if not record_path.is_file():
        return  # an adapter from elsewhere: only its adapter_config.json speaks for it
    record = json.loads(record_path.read_text())
    recorded = record.get("base_fingerprint")
    if recorded and weights_fingerprint(base_model) != recorded:
        raise ModelSpecError(
            f"adapter {path} was trained on {record.get('base_spec')!r} (weights {recorded}), but the base "
            f"{base_spec!r} it would be applied to has other weights; point adapter_config.json back at "
            f"that base, or pass any_base=True to apply it anyway")


def _load_adapter(path: Path, dtype: torch.dtype, merge: bool, base: str | None, any_base: bool) -> LoadedModel:
    from peft import PeftModel

    adapter_config = json.loads((path / "adapter_config.json").read_text())
    trained_on = adapter_config.get("base_model_name_or_path")
    base_spec = base or trained_on
    if not base_spec:
        raise ModelSpecError(f"{path}/adapter_config.json names no base model; pass the base explicitly")
    if base and trained_on and base != trained_on:
        raise ModelSpecError(
            f"adapter {path} was trained on {trained_on!r} but the base given is {base!r}; "
            f"pass --base {trained_on} (or omit it)"
        )
    loaded = load_model(base_spec, dtype=dtype)
    if not any_base and dtype == torch.float32:  # training fingerprinted the float32 weights
        _check_trained_base(path, base_spec, loaded.model)
    model = PeftModel.from_pretrained(loaded.model, str(path)).eval()
    if merge:
        model = model.merge_and_unload().eval()
    return LoadedModel(model, loaded.tokenizer, str(path), "adapter", base_spec)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model", "vocab.txt", "tiktoken.model")
"""The vocabulary files ``save_pretrained`` writes for the tokenizers transformers knows (fast, sentencepiece,
BPE, WordPiece, tiktoken); a folder with none of them has no tokenizer, whatever its config says."""


def _local_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved in a model folder; a folder without one is refused by name (transformers
    would instead try to convert a slow tokenizer and ask for sentencepiece or tiktoken)."""
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise ModelSpecError(f"{path} has model weights but no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, "
                             "...); copy them from the model it was made from, or save the tokenizer into it with "
                             "tokenizer.save_pretrained")
    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def _refuse_damaged_weights(path: Path) -> None:
    """Raise ``ModelSpecError`` naming every safetensors file of ``path`` whose header or length is
    broken (a cut-short download or copy); return quietly when all of them read."""
    from safetensors import safe_open

    damaged = []
    for file in sorted(path.glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt"):  # checks the header and that it covers the file
                pass
        except Exception as error:  # safetensors raises its own error type from Rust
            damaged.append(f"{file.name} ({error})")
    if damaged:
        raise ModelSpecError(f"{path}: damaged weight file {'; '.join(damaged)}; it was probably cut short while "
                             "copying or downloading: copy it again from the source, or save the model again with "
                             "save_pretrained")


def _refuse_placement(spec: str, path: Path, placement: dict[str, object], device: object) -> None:
    """Placements only a ``from_pretrained`` folder can take, and never together with ``device``."""
    if not placement:
        return
    if device is not None:
        raise ValueError(f"pass either device={device!r} or device_map={placement['device_map']!r}, not both; a "
                         "device_map places every module itself (device_map='cuda:0' puts the whole model on one)")
    if spec in TINY_BUILDERS:
        raise ModelSpecError(f"{spec!r} is built in memory and has no folder to load from with a device_map; "
                             "save_pretrained it (model and tokenizer) into a folder and pass the folder")
    if path.is_dir() and (path / "adapter_config.json").is_file():
        raise ModelSpecError(f"{spec!r} is a peft adapter; a device_map applies to a full model folder. Merge it "
                             "first (`interp merge --adapter ADAPTER --out DIR`) and load DIR with the device_map")


def load_model(
    spec: str = DEFAULT_MODEL,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
    merge_adapter: bool = False,
    base: str | None = None,
    any_base: bool = False,
    device_map: DeviceMap | None = None,
    max_memory: MaxMemory | None = None,
    offload_folder: str | Path | None = None,
) -> LoadedModel:
    """Load a causal LM and its tokenizer from any accepted spec (see module docstring).

    ``device`` (default cpu) moves the whole model. ``device_map`` instead splits it as accelerate
    does (``"auto"``, or module -> device/``"disk"``) within ``max_memory``; weights placed on
    ``"disk"`` need an ``offload_folder``. The chosen placement is ``LoadedModel.hf_device_map``.
    ``merge_adapter`` folds a peft adapter into its base; ``base`` overrides the base an adapter
    records (and must agree with it). An adapter written by ``interp train`` is applied only to the
    base whose weights it was trained on (``training.json``), unless ``any_base``.
    """
    path = Path(spec).expanduser()
    placement = placement_kwargs(device_map, max_memory, offload_folder)
    _refuse_placement(spec, path, placement, device)
    if spec == EMBEDDED_NAME:
        # a placement needs from_pretrained on a folder: the embedded cache is one (model_directory)
        model = (AutoModelForCausalLM.from_pretrained(model_directory(spec), dtype=dtype, **placement)
                 if placement else embedded_model(dtype))
        loaded = LoadedModel(model, _prepare_tokenizer(embedded_tokenizer()), spec, "embedded")
    elif spec in TINY_BUILDERS:
        tokenizer = _prepare_tokenizer(embedded_tokenizer())
        special = {
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        }
        model = TINY_BUILDERS[spec](len(tokenizer), special).to(dtype)
        loaded = LoadedModel(model, tokenizer, spec, "tiny")
    elif path.is_dir() and (path / "adapter_config.json").is_file():
        loaded = _load_adapter(path, dtype, merge_adapter, base, any_base)
    elif path.is_dir() and (path / "config.json").is_file():
        if not any(any(path.glob(pattern)) for pattern in ("*.safetensors", "*.bin", "*.index.json")):
            raise ModelSpecError(f"{spec!r} has a config.json but no weights (*.safetensors or *.bin); "
                                 "copy the weight files into it, or save the model again with save_pretrained")
        tokenizer = _local_tokenizer(path)  # first: it is quick, and a folder without one fails before the weights
        try:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True, **placement)
        except Exception:
            _refuse_damaged_weights(path)  # names the damaged file; otherwise the loader's own error stands
            raise
        loaded = LoadedModel(model, _prepare_tokenizer(tokenizer), spec, "local")
    elif path.exists():
        raise ModelSpecError(f"{spec!r} exists but holds neither config.json nor adapter_config.json; "
                             f"accepted: {SPEC_FORMS}")
    elif _HUB_ID.match(spec):
        model, tokenizer = _load_hub(spec, dtype, placement)
        loaded = LoadedModel(model, _prepare_tokenizer(tokenizer), spec, "hub")
    else:
        raise ModelSpecError(f"unknown model spec {spec!r}; accepted: {SPEC_FORMS}")
    if placement:  # already placed (and dispatched) by from_pretrained: moving it would undo that
        loaded = replace(loaded, hf_device_map=check_dispatched(loaded.model, offload_folder))
        loaded.model.eval()
    else:
        loaded.model.to(device if device is not None else "cpu").eval()
    return loaded


def recorded_base(spec: str) -> str | None:
    """The base a model folder says it was made from: ``provenance.json`` of a merged model
    (``training.merge``), an adapter's ``training.json`` or ``adapter_config.json``; None when it
    records none (or ``spec`` is no folder)."""
    path = Path(spec).expanduser()
    for file, key in (("provenance.json", "base_spec"), ("training.json", "base_spec"),
                      ("adapter_config.json", "base_model_name_or_path")):
        if (path / file).is_file():
            recorded = json.loads((path / file).read_text()).get(key)
            if recorded:
                return str(recorded)
    return None


def default_base(spec: str) -> str:
    """The base to compare a fine-tuned ``spec`` with when none is given: the recorded one
    (``recorded_base``), else the project's default model."""
    recorded = recorded_base(spec)
    log.info("base of %s: %s", spec, recorded or f"{DEFAULT_MODEL} (the default: {spec} records no base)")
    return recorded or DEFAULT_MODEL


def check_same_shape(tuned: nn.Module, base: nn.Module) -> None:
    """Raise ``ModelSpecError`` when ``base`` cannot be the model ``tuned`` was fine-tuned from: a
    fine-tune keeps its base's layers and MLP widths, so differing ones mean the wrong base."""
    from activations.sites import neuron_sites  # sites import nothing from here; kept local for load time

    def shape(model: nn.Module) -> tuple[list[tuple[str, int]], str]:
        sites = neuron_sites(model)
        name = getattr(getattr(model, "config", None), "name_or_path", "") or ""
        widths = "/".join(str(w) for w in sorted({site.d_mlp for site in sites}))
        words = f"{len({site.layer for site in sites})} layers of {widths} MLP neurons" + (f" ({name})" if name else "")
        return [(site.name, site.d_mlp) for site in sites], words

    (tuned_sites, tuned_words), (base_sites, base_words) = shape(tuned), shape(base)
    if tuned_sites != base_sites:
        raise ModelSpecError(f"the fine-tuned model has {tuned_words} but the base has {base_words}; a fine-tune "
                             "keeps its base's shape, so pass the model it was fine-tuned from as the base (--base)")


def weights_fingerprint(model: nn.Module) -> str:
    """A short sha256 over parameter names, shapes and values: equal weights, equal fingerprint.

    An offloaded weight (``device_map`` with disk or CPU offload) sits on the meta device; its value
    is read back from accelerate's weights map, one tensor at a time, so a split model has the
    fingerprint of the same weights unsplit and the hash never covers placeholders."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        if tensor.device.type == "meta":
            tensor = offloaded_tensor(model, name, tensor)
        data = tensor.detach().to("cpu").contiguous()
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.dtype != torch.bool else data.numpy().tobytes())
    return digest.hexdigest()[:16]


def model_directory(spec: str = DEFAULT_MODEL) -> Path | None:
    """The on-disk HF folder (``config.json`` + weights) that ``spec`` loads from, or None.

    For loaders that need a path rather than a module, e.g. ``from_pretrained(dir,
    quantization_config=...)`` for 4-bit training. None for the tiny random models, which exist only
    in memory (``save_pretrained`` one if a folder is needed). Adapters are refused: merge them first.
    """
    from activations import embedded

    path = Path(spec).expanduser()
    if spec == EMBEDDED_NAME:
        folder = embedded._entry("model")
        if not embedded._manifest_ok(folder):
            embedded_model()  # converts the GGUF into the cache folder once
        return folder
    if spec in TINY_BUILDERS:
        return None
    if path.is_dir() and (path / "adapter_config.json").is_file():
        raise ModelSpecError(f"{spec!r} is a peft adapter, not a model folder; merge it (`interp merge`) first")
    if path.is_dir() and (path / "config.json").is_file():
        return path
    if path.exists():
        raise ModelSpecError(f"{spec!r} exists but holds no config.json; accepted: {SPEC_FORMS}")
    if _HUB_ID.match(spec):
        local = _cached_snapshot(spec)  # only what is already in the local HF cache: no network here
        if local is None:
            raise ModelSpecError(
                f"{spec!r} is not in the local HF cache; download it on a connected "
                "machine (`huggingface-cli download ORG/NAME --local-dir DIR`) and pass DIR"
            )
        return local
    raise ModelSpecError(f"unknown model spec {spec!r}; accepted: {SPEC_FORMS}")
