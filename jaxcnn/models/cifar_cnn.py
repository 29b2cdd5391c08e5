"""The course's plain CIFAR-10 CNN (three stages of two 3x3 convs); twin of ``torch_ref.models.cifar_cnn``."""

from __future__ import annotations

import jax
from flax import nnx

from jaxcnn import nn
from jaxcnn.models.registry import register
from jaxcnn.nn import functional as F

__all__ = ["CifarCNN", "cifar_cnn"]


class CifarCNN(nnx.Module):
    """Six 3x3/padding-1 convs with ReLU, max-pool 2 after each pair, one linear.

    Attributes, in order: ``conv1_1`` Conv2d(3, 16, 3, padding=1),
    ``conv1_2`` Conv2d(16, 16), ``conv2_1`` Conv2d(16, 32), ``conv2_2``
    Conv2d(32, 32), ``conv3_1`` Conv2d(32, 64), ``conv3_2`` Conv2d(64, 64),
    ``fc`` Linear(4 * 4 * 64, num_classes). ReLU and max-pooling are
    functional calls (``F.relu``, ``F.max_pool2d``), so they hold no module.

    Input: (N, 32, 32, 3) NHWC. Shapes: stage 1 (N,32,32,16) -> pool (N,16,16,16);
    stage 2 (N,16,16,32) -> pool (N,8,8,32); stage 3 (N,8,8,64) -> pool
    (N,4,4,64) -> flatten in torch's C,H,W order (N,1024) -> fc (N,num_classes).
    Spatial sizes 32..39 all flatten to 1024.
    """

    def __init__(self, num_classes: int = 10, *, rngs: nnx.Rngs):
        self.conv1_1 = nn.Conv2d(3, 16, kernel_size=3, stride=1, padding=1, rngs=rngs)
        self.conv1_2 = nn.Conv2d(16, 16, kernel_size=3, stride=1, padding=1, rngs=rngs)
        self.conv2_1 = nn.Conv2d(16, 32, kernel_size=3, stride=1, padding=1, rngs=rngs)
        self.conv2_2 = nn.Conv2d(32, 32, kernel_size=3, stride=1, padding=1, rngs=rngs)
        self.conv3_1 = nn.Conv2d(32, 64, kernel_size=3, stride=1, padding=1, rngs=rngs)
        self.conv3_2 = nn.Conv2d(64, 64, kernel_size=3, stride=1, padding=1, rngs=rngs)
        self.fc = nn.Linear(4 * 4 * 64, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """(N, 32, 32, 3) -> (N, num_classes)."""
        x = F.relu(self.conv1_1(x))
        x = F.relu(self.conv1_2(x))
        x = F.max_pool2d(x, 2)  # (N, 16, 16, 16)
        x = F.relu(self.conv2_1(x))
        x = F.relu(self.conv2_2(x))
        x = F.max_pool2d(x, 2)  # (N, 8, 8, 32)
        x = F.relu(self.conv3_1(x))
        x = F.relu(self.conv3_2(x))
        x = F.max_pool2d(x, 2)  # (N, 4, 4, 64)
        x = F.flatten(x, 1, torch_order=True)  # (N, 1024)
        x = self.fc(x)  # (N, num_classes)
        return x


@register("cifar_cnn", input_size=(32, 32, 3))
def cifar_cnn(*, num_classes: int = 10, rngs: nnx.Rngs) -> CifarCNN:
    """Build :class:`CifarCNN`; input (N, 32, 32, 3) NHWC, output (N, num_classes)."""
    return CifarCNN(num_classes=num_classes, rngs=rngs)
