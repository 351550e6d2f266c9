"""Fold a LoRA adapter into its base: a plain model folder that ``load_model(dir)`` reads.

1. The base spec comes from the adapter's ``training.json`` (or ``adapter_config.json``); ``base``
   overrides it. The base is loaded in FULL precision, even for an adapter trained on a 4-bit base
   (the QLoRA recipe: the 4-bit copy only served to save memory while training).
2. Its weights fingerprint must equal the one recorded at training time; otherwise the adapter
   was trained for other weights and the merge refuses, naming the base to pass.
3. ``merge_and_unload`` adds the scaled LoRA product to each target weight.
4. Weights (safetensors), tokenizer and ``provenance.json`` go to a temporary folder beside
   ``out_dir``, which is renamed into place when complete.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel

from activations import load_model, weights_fingerprint
from activations.atomic_io import publish_dir, refuse_existing, temporary_dir_beside, write_json_atomic
from training.qlora import PROVENANCE as TRAINING_PROVENANCE

log = logging.getLogger(__name__)

PROVENANCE = "provenance.json"
SCHEMA = "neurodiff.merged/1"


@dataclass(frozen=True)
class MergeResult:
    """Where the merged model went and what it was made of."""

    out_dir: Path
    base_spec: str
    base_fingerprint: str
    merged_fingerprint: str


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def adapter_origin(adapter_dir: Path) -> tuple[str, str | None, dict[str, Any]]:
    """(base spec, base weights fingerprint or None, training record) an adapter was trained with."""
    if not (adapter_dir / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter_dir} holds no adapter_config.json; pass the folder `interp train` wrote")
    training = _read_json(adapter_dir / TRAINING_PROVENANCE)
    spec = training.get("base_spec") or _read_json(adapter_dir / "adapter_config.json").get("base_model_name_or_path")
    if not spec:
        raise ValueError(f"{adapter_dir} records no base model; pass the base explicitly (--base SPEC)")
    return spec, training.get("base_fingerprint"), training


def merge_adapter(
    adapter_dir: str | Path,
    out_dir: str | Path,
    *,
    base: str | None = None,
    overwrite: bool = False,
) -> MergeResult:
    """Merge the adapter in ``adapter_dir`` into its full-precision base and save it to ``out_dir``."""
    adapter_dir, out_dir = Path(adapter_dir).expanduser(), Path(out_dir).expanduser()
    refuse_existing(out_dir, overwrite, folder=True)
    trained_on, trained_fingerprint, training = adapter_origin(adapter_dir)
    base_spec = base or trained_on
    loaded = load_model(base_spec, dtype=torch.float32)
    fingerprint = weights_fingerprint(loaded.model)
    if trained_fingerprint and fingerprint != trained_fingerprint:
        raise ValueError(
            f"adapter was trained on {trained_on} (weights {trained_fingerprint}) but the base is {base_spec} "
            f"(weights {fingerprint}); pass --base {trained_on}"
        )
    if base_spec != trained_on and trained_fingerprint:
        log.info("base %s has the same weights as %s, the base the adapter was trained on", base_spec, trained_on)
    elif base_spec != trained_on:
        log.warning("adapter records base %s and no weights fingerprint; trusting that %s is the same model",
                    trained_on, base_spec)
    merged = PeftModel.from_pretrained(loaded.model, str(adapter_dir)).merge_and_unload().eval()
    merged_fingerprint = weights_fingerprint(merged)
    build = temporary_dir_beside(out_dir)
    try:
        merged.save_pretrained(build, safe_serialization=True)
        loaded.tokenizer.save_pretrained(build)
        write_json_atomic(build / PROVENANCE, {
            "schema": SCHEMA,
            "base_spec": base_spec,
            "base_fingerprint": fingerprint,
            "merged_fingerprint": merged_fingerprint,
            "adapter_dir": str(adapter_dir.resolve()),
            "adapter_config": _read_json(adapter_dir / "adapter_config.json"),
            "training_config": training.get("config"),
            "data_hash": training.get("data_hash"),
            "test_topics": training.get("test_topics"),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })
        publish_dir(build, out_dir, overwrite)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    log.info("merged model saved to %s", out_dir)
    return MergeResult(out_dir, base_spec, fingerprint, merged_fingerprint)
