"""The course's MNIST multi-layer perceptron (sigmoid hidden activations); twin of ``torch_ref.models.mlp``."""

from __future__ import annotations

import jax
from flax import nnx

from jaxcnn import nn
from jaxcnn.models.registry import register
from jaxcnn.nn import functional as F

__all__ = ["MLP", "mlp"]


class MLP(nnx.Module):
    """784-256-128-num_classes perceptron with sigmoid activations.

    Attributes, in order: ``fc1`` Linear(784, 256), ``fc2`` Linear(256, 128),
    ``fc3`` Linear(128, num_classes). The sigmoids are functional calls
    (``F.sigmoid``), so they hold no module.

    Input: (N, 28, 28, 1) NHWC images (any shape whose trailing dims hold 784 values
    per sample, e.g. (N, 784), works too; with one channel NHWC and NCHW flatten to the
    same order). Output: (N, num_classes) logits.
    """

    def __init__(self, num_classes: int = 10, *, rngs: nnx.Rngs):
        self.fc1 = nn.Linear(784, 256, rngs=rngs)
        self.fc2 = nn.Linear(256, 128, rngs=rngs)
        self.fc3 = nn.Linear(128, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """(N, 28, 28, 1) -> (N, num_classes)."""
        x = F.flatten(x, 1, torch_order=True)  # (N, 784)
        x = F.sigmoid(self.fc1(x))  # (N, 256)
        x = F.sigmoid(self.fc2(x))  # (N, 128)
        x = self.fc3(x)  # (N, num_classes)
        return x


@register("mlp", input_size=(28, 28, 1))
def mlp(*, num_classes: int = 10, rngs: nnx.Rngs) -> MLP:
    """Build :class:`MLP`; input (N, 28, 28, 1) NHWC, output (N, num_classes)."""
    return MLP(num_classes=num_classes, rngs=rngs)
