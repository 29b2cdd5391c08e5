"""Dropout with torch's scaling (kept values are divided by ``1 - p``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def dropout(input: jax.Array, p: float = 0.5, training: bool = True, *, key: jax.Array | None = None) -> jax.Array:
    """Zero each element with probability ``p`` and scale the rest by ``1 / (1 - p)``.

    Args:
      input: any shape.
      p: drop probability in ``[0, 1]``.
      training: identity when False.
      key: a ``jax.random`` key; required when training with ``0 < p``.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return input
    if p == 1.0:
        return jnp.zeros_like(input)
    if key is None:
        raise ValueError("dropout in training mode needs a random key")
    keep = jax.random.bernoulli(key, 1.0 - p, input.shape)
    return jnp.where(keep, input / (1.0 - p), jnp.zeros((), input.dtype))
