"""Fully connected layer."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def linear(input: jax.Array, weight: jax.Array, bias: jax.Array | None = None) -> jax.Array:
    """``input @ weight + bias`` as ``torch.nn.functional.linear``.

    Args:
      input: ``(..., in_features)``.
      weight: ``(in_features, out_features)`` — torch's ``(out, in)`` transposed.
      bias: ``(out_features,)`` or None.

    Returns:
      ``(..., out_features)``.
    """
    if input.shape[-1] != weight.shape[0]:
        raise ValueError(
            f"linear: input has {input.shape[-1]} features (shape {tuple(input.shape)}), "
            f"weight {tuple(weight.shape)} expects {weight.shape[0]}"
        )
    output = jnp.matmul(input, weight)
    if bias is not None:
        output = output + bias
    return output
