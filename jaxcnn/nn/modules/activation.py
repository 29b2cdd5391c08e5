"""Activation layers with torch's names (``inplace`` is accepted and ignored: JAX is pure)."""

from __future__ import annotations

import jax
from flax import nnx

from jaxcnn.nn import functional as F


class ReLU(nnx.Module):
    """``torch.nn.ReLU``; any shape."""

    def __init__(self, inplace: bool = False):
        del inplace

    def __call__(self, x: jax.Array) -> jax.Array:
        return F.relu(x)


class LeakyReLU(nnx.Module):
    """``torch.nn.LeakyReLU``; any shape."""

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False):
        del inplace
        self.negative_slope = negative_slope

    def __call__(self, x: jax.Array) -> jax.Array:
        return F.leaky_relu(x, self.negative_slope)


class Sigmoid(nnx.Module):
    """``torch.nn.Sigmoid``; any shape."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return F.sigmoid(x)


class Tanh(nnx.Module):
    """``torch.nn.Tanh``; any shape."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return F.tanh(x)
