"""LeNet-5 in its common modern form (ReLU activations, max-pooling); twin of ``torch_ref.models.lenet``."""

from __future__ import annotations

import jax
from flax import nnx

from jaxcnn import nn
from jaxcnn.models.registry import register
from jaxcnn.nn import functional as F

__all__ = ["LeNet5", "lenet5"]


class LeNet5(nnx.Module):
    """LeNet-5 for 32x32x1 inputs (pad 28x28 MNIST digits by 2 to use it).

    Attributes, in order: ``conv1`` Conv2d(1, 6, 5), ``conv2`` Conv2d(6, 16, 5),
    ``fc1`` Linear(400, 120), ``fc2`` Linear(120, 84), ``fc3``
    Linear(84, num_classes). ReLU and max-pooling are functional calls
    (``F.relu``, ``F.max_pool2d(x, 2)``), so they hold no module.

    Input: (N, 32, 32, 1) NHWC. Shapes: conv1 (N,28,28,6) -> relu -> pool
    (N,14,14,6) -> conv2 (N,10,10,16) -> relu -> pool (N,5,5,16) -> flatten in
    torch's C,H,W order (N,400) -> fc1 (N,120) -> fc2 (N,84) -> fc3 (N,num_classes).
    Spatial sizes 32..35 all flatten to 400.
    """

    def __init__(self, num_classes: int = 10, *, rngs: nnx.Rngs):
        self.conv1 = nn.Conv2d(1, 6, kernel_size=5, rngs=rngs)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5, rngs=rngs)
        self.fc1 = nn.Linear(16 * 5 * 5, 120, rngs=rngs)
        self.fc2 = nn.Linear(120, 84, rngs=rngs)
        self.fc3 = nn.Linear(84, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """(N, 32, 32, 1) -> (N, num_classes)."""
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # (N, 14, 14, 6)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # (N, 5, 5, 16)
        x = F.flatten(x, 1, torch_order=True)  # (N, 400)
        x = F.relu(self.fc1(x))  # (N, 120)
        x = F.relu(self.fc2(x))  # (N, 84)
        x = self.fc3(x)  # (N, num_classes)
        return x


@register("lenet5", input_size=(32, 32, 1))
def lenet5(*, num_classes: int = 10, rngs: nnx.Rngs) -> LeNet5:
    """Build :class:`LeNet5`; input (N, 32, 32, 1) NHWC, output (N, num_classes)."""
    return LeNet5(num_classes=num_classes, rngs=rngs)
