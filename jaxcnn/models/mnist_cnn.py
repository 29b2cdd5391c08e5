"""The course's small MNIST CNN (two 5x5 convs, two linear layers); twin of ``torch_ref.models.mnist_cnn``."""

from __future__ import annotations

import jax
from flax import nnx

from jaxcnn import nn
from jaxcnn.models.registry import register
from jaxcnn.nn import functional as F

__all__ = ["MnistCNN", "mnist_cnn"]


class MnistCNN(nnx.Module):
    """Two 5x5 conv layers, each followed by max-pool 2 then ReLU, and two linears.

    Attributes, in order: ``conv1`` Conv2d(1, 10, 5), ``conv2`` Conv2d(10, 20, 5),
    ``fc1`` Linear(320, 50), ``fc2`` Linear(50, num_classes).

    Input: (N, 28, 28, 1) NHWC. Shapes: conv1 (N,24,24,10) -> pool (N,12,12,10) ->
    conv2 (N,8,8,20) -> pool (N,4,4,20) -> flatten in torch's C,H,W order (N,320) ->
    fc1 (N,50) -> fc2 (N,num_classes).
    """

    def __init__(self, num_classes: int = 10, *, rngs: nnx.Rngs):
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5, rngs=rngs)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5, rngs=rngs)
        self.fc1 = nn.Linear(320, 50, rngs=rngs)
        self.fc2 = nn.Linear(50, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """(N, 28, 28, 1) -> (N, num_classes)."""
        x = F.relu(F.max_pool2d(self.conv1(x), 2))  # (N, 12, 12, 10)
        x = F.relu(F.max_pool2d(self.conv2(x), 2))  # (N, 4, 4, 20)
        x = F.flatten(x, 1, torch_order=True)  # (N, 320)
        x = F.relu(self.fc1(x))  # (N, 50)
        x = self.fc2(x)  # (N, num_classes)
        return x


@register("mnist_cnn", input_size=(28, 28, 1))
def mnist_cnn(*, num_classes: int = 10, rngs: nnx.Rngs) -> MnistCNN:
    """Build :class:`MnistCNN`; input (N, 28, 28, 1) NHWC, output (N, num_classes)."""
    return MnistCNN(num_classes=num_classes, rngs=rngs)
