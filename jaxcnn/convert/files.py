"""Reading and writing torch checkpoints (``.pth``/``.pt``) and safetensors files."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from flax import nnx

from jaxcnn.errors import BadFileError, MissingFileError
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
        raise MissingFileError(f"no checkpoint file at {path}", "check the path")
    suffix = _check_suffix(path)
    if suffix in SAFETENSORS_SUFFIXES:
        from safetensors.numpy import load_file

        try:
            arrays = dict(load_file(str(path)))
        except Exception as error:  # a damaged or foreign file: safetensors' own error types vary
            raise _unreadable(path, "safetensors", error) from error
    else:
        import torch

        try:
            checkpoint = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as error:  # random bytes, a truncated zip, a pickle with foreign objects
            raise _unreadable(path, "torch", error) from error
        if not isinstance(checkpoint, Mapping):
            raise StateDictError(f"{path} holds a {type(checkpoint).__name__}, not a state dict")
        arrays = {key: value.detach().cpu().numpy() for key, value in _unwrap(checkpoint).items() if hasattr(value, "detach")}
    if strip_prefix:
        arrays = {key.removeprefix(strip_prefix): value for key, value in arrays.items()}
    return arrays


def check_format(path: str | Path) -> str:
    """The lower-case suffix of ``path`` when it names a known checkpoint format; else
    :class:`~jaxcnn.errors.BadFileError` (e.g. to check a command's files before any work)."""
    return _check_suffix(Path(path))


def _check_suffix(path: Path) -> str:
    """``path``'s lower-case suffix; :class:`~jaxcnn.errors.BadFileError` unless a known format."""
    suffix = path.suffix.lower()
    if suffix not in TORCH_SUFFIXES + SAFETENSORS_SUFFIXES:
        raise BadFileError(
            f"unknown checkpoint format {suffix or '(no suffix)'!r} of {path}",
            f"use one of {', '.join(TORCH_SUFFIXES + SAFETENSORS_SUFFIXES)}",
        )
    return suffix


def _unreadable(path: Path, kind: str, error: Exception) -> BadFileError:
    reason = " ".join(str(error).split()).split(". ")[0][:120] or type(error).__name__
    return BadFileError(
        f"cannot read {path} as a {kind} checkpoint ({type(error).__name__}: {reason})",
        "is the file complete (not truncated) and of the format its suffix says?",
    )


def write_state_dict(arrays: Mapping[str, np.ndarray], path: str | Path) -> Path:
    """Write a torch-layout state dict as ``.safetensors`` or ``.pth``/``.pt`` (needs torch)."""
    path = Path(path)
    suffix = _check_suffix(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix in SAFETENSORS_SUFFIXES:
        from safetensors.numpy import save_file

        save_file({key: np.array(value, order="C") for key, value in arrays.items()}, str(path))
    else:
        import torch
        from collections import OrderedDict

        torch.save(OrderedDict((key, torch.from_numpy(np.array(value, order="C"))) for key, value in arrays.items()), str(path))
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
