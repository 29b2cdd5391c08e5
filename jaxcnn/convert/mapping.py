"""The one general torch <-> jaxcnn mapping, driven by NNX parameter paths.

Every Param and BatchStat of a jaxcnn model sits at an NNX path that, joined with ``.``,
is the torch ``state_dict`` key (modules use torch's attribute names; ``Sequential``
children are ``'0'``, ``'1'``, ...). A variable whose JAX layout differs from torch's
carries ``torch_perm`` metadata: the axis permutation from the JAX layout to torch's
(``(3, 2, 0, 1)`` for HWIO -> OIHW conv kernels, ``(1, 0)`` for Linear weights). Nothing
else is needed, so there is no per-model table.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

COUNTER_SUFFIX = "num_batches_tracked"


class StateDictError(ValueError):
    """A state dict does not fit the model; the message lists every problem found."""


def _is_torch_state(variable) -> bool:
    return isinstance(variable, (nnx.Param, nnx.BatchStat))


def torch_variables(model: nnx.Module) -> dict[str, nnx.Variable]:
    """Map torch ``state_dict`` key -> NNX variable (Params and BatchStats only), sorted by key."""
    flat = nnx.to_flat_state(nnx.state(model))
    return {".".join(map(str, path)): variable for path, variable in flat if _is_torch_state(variable)}


def torch_permutation(variable: nnx.Variable) -> tuple[int, ...] | None:
    """The ``torch_perm`` metadata of ``variable`` (JAX layout -> torch layout), or None."""
    return variable.get_metadata().get("torch_perm")


def torch_layout(value: np.ndarray, permutation: tuple[int, ...] | None) -> np.ndarray:
    """A JAX-layout array in torch's layout (e.g. HWIO -> OIHW)."""
    return value if permutation is None else np.transpose(value, permutation)


def jax_layout(value: np.ndarray, permutation: tuple[int, ...] | None) -> np.ndarray:
    """A torch-layout array in the JAX layout (the inverse of :func:`torch_layout`)."""
    return value if permutation is None else np.transpose(value, np.argsort(permutation))


def torch_shapes(model: nnx.Module) -> dict[str, tuple[int, ...]]:
    """``state_dict`` key -> shape in torch's layout, for every Param and BatchStat of ``model``."""
    shapes = {}
    for key, variable in torch_variables(model).items():
        shape = tuple(variable.get_value().shape)
        permutation = torch_permutation(variable)
        shapes[key] = shape if permutation is None else tuple(shape[axis] for axis in permutation)
    return shapes


def _as_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch.Tensor; torch stays an optional dependency
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def load_torch_state_dict(model: nnx.Module, state_dict: Mapping[str, object]) -> nnx.Module:
    """Load a torch ``state_dict`` (tensors or arrays in torch layout) into ``model`` in place.

    Strict: every model key must be present (a missing ``num_batches_tracked`` is made as
    0, as torch does for old checkpoints), no extra keys, every shape must match torch's
    layout of the model's variable. All problems are collected and raised together as
    :class:`StateDictError`; on error nothing is modified.

    Returns:
      ``model``, for chaining.
    """
    variables = torch_variables(model)
    arrays = {key: _as_numpy(value) for key, value in state_dict.items()}
    missing, misshaped, wrong_kind = [], [], []
    converted = {}
    for key, variable in variables.items():
        current = variable.get_value()
        if key not in arrays:
            if key.endswith(COUNTER_SUFFIX):
                converted[key] = jax.device_put(np.zeros(current.shape, current.dtype))
            else:
                missing.append(key)
            continue
        array = arrays[key]
        permutation = torch_permutation(variable)
        expected = tuple(np.shape(torch_layout(np.empty(current.shape, dtype=bool), permutation)))
        if tuple(array.shape) != expected:
            misshaped.append(f"{key}: checkpoint {tuple(array.shape)}, model expects {expected} (torch layout)")
            continue
        if np.issubdtype(array.dtype, np.floating) != jnp.issubdtype(current.dtype, jnp.floating):
            wrong_kind.append(f"{key}: checkpoint dtype {array.dtype}, model dtype {current.dtype}")
            continue
        # A copy made in numpy (the dtype too: jnp.array/astype compile once per shape), then
        # transferred: the model never aliases the torch tensor's memory, which torch may update.
        converted[key] = jax.device_put(np.array(jax_layout(array, permutation), dtype=current.dtype, order="C", copy=True))
    unexpected = sorted(set(arrays) - set(variables))
    problems = []
    if missing:
        problems.append("missing keys: " + ", ".join(missing))
    if unexpected:
        problems.append("unexpected keys: " + ", ".join(unexpected))
    if misshaped:
        problems.append("mis-shaped keys: " + "; ".join(misshaped))
    if wrong_kind:
        problems.append("mis-typed keys: " + "; ".join(wrong_kind))
    if problems:
        raise StateDictError(f"cannot load state dict into {type(model).__name__}:\n  " + "\n  ".join(problems))
    for key, variable in variables.items():
        variable.set_value(converted[key])
    return model


def to_torch_arrays(model: nnx.Module) -> OrderedDict[str, np.ndarray]:
    """The model's ``state_dict`` as numpy arrays in torch layout (``num_batches_tracked`` as int64)."""
    arrays = OrderedDict()
    for key, variable in torch_variables(model).items():
        value = np.asarray(variable.get_value())
        if key.endswith(COUNTER_SUFFIX):
            value = value.astype(np.int64)
        arrays[key] = np.array(torch_layout(value, torch_permutation(variable)), order="C", copy=True)
    return arrays


def to_torch_state_dict(model: nnx.Module) -> OrderedDict:
    """The model's ``state_dict`` as torch tensors, ready for ``torch_module.load_state_dict``.

    Requires torch (the ``torch`` extra). Keys as torch names them; conv kernels OIHW,
    Linear weights ``(out, in)``.
    """
    import torch

    return OrderedDict((key, torch.from_numpy(value)) for key, value in to_torch_arrays(model).items())
