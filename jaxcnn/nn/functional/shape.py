"""Flattening that can reproduce torch's channels-first element order."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def flatten(input: jax.Array, start_dim: int = 1, end_dim: int = -1, *, torch_order: bool = False) -> jax.Array:
    """Merge axes ``start_dim..end_dim`` into one, like ``torch.flatten``.

    With ``torch_order=True`` a 4-D NHWC input is first moved to NCHW so the flattened
    features come in torch's C, H, W order (``start_dim``/``end_dim`` then count in NCHW
    terms). That order is what the first Linear after a conv stack needs when its weights
    come from torch.

    Args:
      input: any shape; ``(N, H, W, C)`` when ``torch_order`` is used.

    Returns:
      The flattened array, e.g. ``(N, C*H*W)``.
    """
    if torch_order and input.ndim == 4:
        input = jnp.transpose(input, (0, 3, 1, 2))
    ndim = input.ndim
    start = start_dim % ndim if ndim else 0
    end = end_dim % ndim if ndim else 0
    if start > end:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim} for shape {tuple(input.shape)}")
    shape = input.shape[:start] + (-1,) + input.shape[end + 1 :]
    return input.reshape(shape)
