"""The course's small MNIST CNN (two 5x5 convs, two linear layers)."""

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["MnistCNN", "mnist_cnn"]


class MnistCNN(nn.Module):
    """Two 5x5 conv layers, each followed by max-pool 2 then ReLU, and two linears.

    Attributes, in order: ``conv1`` Conv2d(1, 10, 5), ``conv2`` Conv2d(10, 20, 5),
    ``fc1`` Linear(320, 50), ``fc2`` Linear(50, num_classes).  Pooling and
    activations are functional calls (``F.max_pool2d``, ``F.relu``).

    Input: (N, 1, 28, 28).  Shapes: conv1 (N,10,24,24) -> pool (N,10,12,12) ->
    conv2 (N,20,8,8) -> pool (N,20,4,4) -> flatten (N,320) -> fc1 (N,50) ->
    fc2 (N,num_classes).  Spatial sizes 28..31 all flatten to 320.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 28, 28) -> (N, num_classes)."""
        x = F.relu(F.max_pool2d(self.conv1(x), 2))  # (N, 10, 12, 12)
        x = F.relu(F.max_pool2d(self.conv2(x), 2))  # (N, 20, 4, 4)
        x = torch.flatten(x, 1)  # (N, 320)
        x = F.relu(self.fc1(x))  # (N, 50)
        x = self.fc2(x)  # (N, num_classes)
        return x


def mnist_cnn(*, num_classes: int = 10) -> MnistCNN:
    """Build :class:`MnistCNN`; input (N, 1, 28, 28), output (N, num_classes)."""
    return MnistCNN(num_classes=num_classes)
