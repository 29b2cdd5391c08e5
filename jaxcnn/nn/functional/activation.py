"""Element-wise activations with torch's names and arguments."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def relu(input: jax.Array) -> jax.Array:
    """``max(x, 0)``; any shape. The gradient at 0 is 0, as in torch.

    ``jax.nn.relu`` has a custom JVP for that; ``jnp.maximum(x, 0)`` would give 0.5 at 0.
    """
    return jax.nn.relu(input)


def leaky_relu(input: jax.Array, negative_slope: float = 0.01) -> jax.Array:
    """``x`` where ``x > 0`` else ``negative_slope * x``; any shape."""
    return jnp.where(input > 0, input, input * negative_slope)


def sigmoid(input: jax.Array) -> jax.Array:
    """Logistic sigmoid ``1 / (1 + exp(-x))``; any shape."""
    return jax.nn.sigmoid(input)


def tanh(input: jax.Array) -> jax.Array:
    """Hyperbolic tangent; any shape."""
    return jnp.tanh(input)


def softmax(input: jax.Array, dim: int = -1) -> jax.Array:
    """Softmax over axis ``dim``."""
    return jax.nn.softmax(input, axis=dim)


def log_softmax(input: jax.Array, dim: int = -1) -> jax.Array:
    """Log-softmax over axis ``dim``."""
    return jax.nn.log_softmax(input, axis=dim)
