"""LeNet-5 in its common modern form (ReLU activations, max-pooling)."""

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["LeNet5", "lenet5"]


class LeNet5(nn.Module):
    """LeNet-5 for 1x32x32 inputs (pad 28x28 MNIST digits by 2 to use it).

    Attributes, in order: ``conv1`` Conv2d(1, 6, 5), ``conv2`` Conv2d(6, 16, 5),
    ``fc1`` Linear(400, 120), ``fc2`` Linear(120, 84), ``fc3``
    Linear(84, num_classes).  ReLU and max-pooling are functional calls
    (``F.relu``, ``F.max_pool2d(x, 2)``), so they hold no module.

    Input: (N, 1, 32, 32).  Shapes: conv1 (N,6,28,28) -> relu -> pool
    (N,6,14,14) -> conv2 (N,16,10,10) -> relu -> pool (N,16,5,5) -> flatten
    (N,400) -> fc1 (N,120) -> fc2 (N,84) -> fc3 (N,num_classes).
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, kernel_size=5)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 32, 32) -> (N, num_classes)."""
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # (N, 6, 14, 14)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # (N, 16, 5, 5)
        x = torch.flatten(x, 1)  # (N, 400)
        x = F.relu(self.fc1(x))  # (N, 120)
        x = F.relu(self.fc2(x))  # (N, 84)
        x = self.fc3(x)  # (N, num_classes)
        return x


def lenet5(*, num_classes: int = 10) -> LeNet5:
    """Build :class:`LeNet5`; input (N, 1, 32, 32), output (N, num_classes)."""
    return LeNet5(num_classes=num_classes)
