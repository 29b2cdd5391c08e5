"""``Flatten`` that produces torch's C, H, W feature order from NHWC inputs."""

from __future__ import annotations

import jax
from flax import nnx

from jaxcnn.nn import functional as F


class Flatten(nnx.Module):
    """``torch.nn.Flatten``; on a 4-D NHWC input it flattens in torch's C, H, W order.

    That order (``torch_order=True``, the default here) is what lets a Linear after a conv
    stack use torch's weights unchanged. ``(N, H, W, C)`` -> ``(N, C*H*W)``.
    """

    def __init__(self, start_dim: int = 1, end_dim: int = -1, *, torch_order: bool = True):
        self.start_dim = start_dim
        self.end_dim = end_dim
        self.torch_order = torch_order

    def __call__(self, x: jax.Array) -> jax.Array:
        return F.flatten(x, self.start_dim, self.end_dim, torch_order=self.torch_order)
