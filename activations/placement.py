"""Models larger than one device: accelerate ``device_map`` placement, CPU and disk offload.

``load_model(spec, device_map=..., max_memory=..., offload_folder=...)`` hands these to
``from_pretrained``, which splits the model over GPUs, CPU and disk and dispatches it: accelerate
wraps each placed module's ``forward`` with an ``AlignDevicesHook`` that moves the module's inputs to
its execution device and, for an offloaded module, loads its weights just for that call. Offloaded
parameters otherwise sit on the ``meta`` device (shape and dtype, no values).

Why the rest of the project works unchanged on such a model:
- neuron hooks are forward *pre*-hooks (``activations.hooks``); torch runs them before the wrapped
  ``forward``, so they read and replace the neuron vector as it arrives, whatever the device, and
  the interventions move their values to the activation's device;
- ``weights_fingerprint`` reads an offloaded tensor back from accelerate's weights map
  (``offloaded_tensor``), so a split model has the fingerprint of the same weights unsplit;
- callers send inputs to ``next(model.parameters()).device``; ``check_dispatched`` refuses a
  placement that leaves that parameter on ``meta``. ``input_device`` is the exact answer (the
  embedding's execution device) for code that can use it.
Editing weights in place does not work on offloaded modules (a write to a meta tensor is silently
lost): ``refuse_offloaded`` guards the weight exports.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

DeviceMap = str | dict[str, int | str]
"""``"auto"``/``"balanced"``/``"sequential"``, one device (``"cpu"``, ``"cuda:0"``), or module -> device/``"disk"``."""
MaxMemory = dict[int | str, int | str]
"""Per device (``0``, ``"cpu"``, ``"disk"``) a byte budget: ``10_000_000`` or ``"10GiB"``."""


class PlacementError(ValueError):
    """A device map, memory budget or offload folder that cannot be honoured; the message says the fix."""


def placement_kwargs(device_map: DeviceMap | None, max_memory: MaxMemory | None,
                     offload_folder: str | Path | None) -> dict[str, object]:
    """The ``from_pretrained`` keywords for a placement ({} for none), checked before anything loads."""
    if device_map is None:
        if max_memory is not None or offload_folder is not None:
            raise PlacementError("max_memory and offload_folder only apply to a dispatched model; pass "
                                 "device_map='auto' (or a module -> device dict) with them")
        return {}
    if isinstance(device_map, Mapping) and "disk" in device_map.values() and offload_folder is None:
        disk = [name for name, where in device_map.items() if where == "disk"]
        raise PlacementError(f"device_map puts {disk[:3]} on 'disk' but no offload_folder was given; pass "
                             "offload_folder=DIR (a folder with room for the offloaded weights)")
    kwargs: dict[str, object] = {"device_map": dict(device_map) if isinstance(device_map, Mapping) else device_map}
    if max_memory is not None:
        kwargs["max_memory"] = dict(max_memory)
    if offload_folder is not None:
        kwargs["offload_folder"] = str(offload_folder)
    return kwargs


def check_dispatched(model: nn.Module, offload_folder: str | Path | None) -> dict[str, int | str]:
    """The placement ``from_pretrained`` chose, after refusing the two it may choose that we cannot use."""
    device_map: dict[str, int | str] = dict(getattr(model, "hf_device_map", None) or {})
    if "disk" in device_map.values() and offload_folder is None:
        # transformers reads safetensors weights in place, but other formats need a folder: the
        # caller decides where offloaded weights may go, always, not only when it happens to matter
        disk = [name for name, where in device_map.items() if where == "disk"]
        raise PlacementError(f"max_memory left no room for {disk[:3]}, so they were offloaded to 'disk', but no "
                             "offload_folder was given; pass offload_folder=DIR, or raise max_memory")
    name, first = next(iter(model.named_parameters()))
    if first.device.type == "meta":
        # capture and the interventions send inputs to the first parameter's device
        module = name.rsplit(".", 1)[0]
        raise PlacementError(
            f"the placement offloads {name} (the model's first parameter, usually the input embedding), so it sits "
            f"on the meta device and inputs would be sent there; map {module!r} to a GPU (or to 'cpu' when there is "
            f"none) in device_map, or give max_memory room for its {first.numel() * first.element_size():,} bytes")
    return device_map


def is_dispatched(model: nn.Module) -> bool:
    """True for a model placed by accelerate (its modules carry ``_hf_hook``s)."""
    return any(hasattr(module, "_hf_hook") for module in model.modules())


def _align_hooks(module: nn.Module) -> list:
    hook = getattr(module, "_hf_hook", None)
    if hook is None:
        return []
    return [h for h in getattr(hook, "hooks", [hook]) if getattr(h, "weights_map", None) is not None]


def offloaded_tensor(model: nn.Module, name: str, like: Tensor) -> Tensor:
    """The real value of the offloaded (meta) state-dict entry ``name``, read from accelerate's
    weights map (disk or CPU), in ``like``'s dtype as the forward pass would see it."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, -1, -1):  # the innermost hooked module that holds it
        module_name, key = ".".join(parts[:cut]), ".".join(parts[cut:])
        for hook in _align_hooks(model.get_submodule(module_name)):
            try:
                return hook.weights_map[key].to(dtype=like.dtype, device="cpu")
            except KeyError:
                continue
    raise PlacementError(f"{name} is on the meta device but no accelerate offload hook holds its value; the "
                         "weights were never loaded (load the model again, with a device_map if it is too large)")


def refuse_offloaded(model: nn.Module, what: str) -> None:
    """Refuse in-place weight edits on a model with offloaded (meta) parameters: they would be lost."""
    offloaded = [name for name, p in model.named_parameters() if p.device.type == "meta"]
    if offloaded:
        raise PlacementError(
            f"{what} edits weights, but {len(offloaded)} parameters (e.g. {offloaded[0]}) are offloaded by the "
            "device_map and sit on the meta device, where an edit is silently lost; load the model without "
            "offload (device_map=None, or one whose max_memory holds every weight) to do this")


def input_device(model: nn.Module) -> torch.device:
    """Where input ids belong: the input embedding's execution device (a GPU even when its weights
    are offloaded to CPU), else its weight's device, else the first parameter's."""
    get_embeddings = getattr(model, "get_input_embeddings", None)
    embedding = get_embeddings() if callable(get_embeddings) else None
    if embedding is not None:
        hook = getattr(embedding, "_hf_hook", None)
        execution = getattr(hook, "execution_device", None)
        if execution is not None:
            return torch.device(execution) if not isinstance(execution, int) else torch.device("cuda", execution)
        weight = getattr(embedding, "weight", None)
        if isinstance(weight, Tensor) and weight.device.type != "meta":
            return weight.device
    return next(model.parameters()).device
