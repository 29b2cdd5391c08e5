"""Reading and writing torch checkpoints (``.pth``/``.pt``) and safetensors files."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from flax import nnx

from jaxcnn.convert.mapping import StateDictError, load_torch_state_dict, to_torch_arrays

TORCH_SUFFIXES = (".pth", ".pt", ".bin")
SAFETENSORS_SUFFIXES = (".safetensors",)
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")


def _unwrap(checkpoint: Mapping) -> Mapping:
    """Take the state dict out of a training checkpoint such as ``{'state_dict': ..., 'epoch': ...}``."""
    for key in WRAPPER_KEYS:
        inner = checkpoint.get(key)
        if isinstance(inner, Mapping):
            return inner
    return checkpoint


def read_state_dict(path: str | Path, *, strip_prefix: str | None = None) -> dict[str, np.ndarray]:
    """Read a state dict (torch layout) from ``.pth``/``.pt``/``.bin`` or ``.safetensors``.

    ``.pth`` files need torch and are loaded with ``weights_only=True`` on the CPU; a dict
    that wraps the state dict under ``state_dict``/``model_state_dict``/``model`` is
    unwrapped. ``strip_prefix`` removes a key prefix such as ``'module.'`` (DataParallel).

    Returns:
      ``key -> numpy array``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        from safetensors.numpy import load_file

        arrays = dict(load_file(str(path)))
    elif suffix in TORCH_SUFFIXES:
        import torch

        checkpoint = torch.load(str(path), map_location="cpu", weights_only=True)
        if not isinstance(checkpoint, Mapping):
            raise StateDictError(f"{path} holds a {type(checkpoint).__name__}, not a state dict")
        arrays = {key: value.detach().cpu().numpy() for key, value in _unwrap(checkpoint).items() if hasattr(value, "detach")}
    else:
        raise ValueError(f"unknown checkpoint format {suffix!r}: use one of {TORCH_SUFFIXES + SAFETENSORS_SUFFIXES}")
    if strip_prefix:
        arrays = {key.removeprefix(strip_prefix): value for key, value in arrays.items()}
    return arrays


def write_state_dict(arrays: Mapping[str, np.ndarray], path: str | Path) -> Path:
    """Write a torch-layout state dict as ``.safetensors`` or ``.pth``/``.pt`` (needs torch)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        from safetensors.numpy import save_file

        save_file({key: np.array(value, order="C") for key, value in arrays.items()}, str(path))
    elif suffix in TORCH_SUFFIXES:
        import torch
        from collections import OrderedDict

        torch.save(OrderedDict((key, torch.from_numpy(np.array(value, order="C"))) for key, value in arrays.items()), str(path))
    else:
        raise ValueError(f"unknown checkpoint format {suffix!r}: use one of {TORCH_SUFFIXES + SAFETENSORS_SUFFIXES}")
    return path


def load_torch_checkpoint(model: nnx.Module, path: str | Path, *, strip_prefix: str | None = None) -> nnx.Module:
    """Load a torchvision/torch checkpoint or safetensors file into ``model`` in one call.

    E.g. ``load_torch_checkpoint(models.create('resnet50', rngs=nnx.Rngs(0)), 'resnet50-0676ba61.pth')``.
    Strict, as :func:`jaxcnn.convert.load_torch_state_dict`.
    """
    return load_torch_state_dict(model, read_state_dict(path, strip_prefix=strip_prefix))


def save_torch_checkpoint(model: nnx.Module, path: str | Path) -> Path:
    """Write ``model``'s weights with torch's keys and layouts (``.pth``/``.pt`` or ``.safetensors``)."""
    return write_state_dict(to_torch_arrays(model), path)
