"""The course's plain CIFAR-10 CNN (three stages of two 3x3 convs)."""

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["CifarCNN", "cifar_cnn"]


class CifarCNN(nn.Module):
    """Six 3x3/padding-1 convs with ReLU, max-pool 2 after each pair, one linear.

    Attributes, in order: ``conv1_1`` Conv2d(3, 16, 3, padding=1),
    ``conv1_2`` Conv2d(16, 16), ``conv2_1`` Conv2d(16, 32), ``conv2_2``
    Conv2d(32, 32), ``conv3_1`` Conv2d(32, 64), ``conv3_2`` Conv2d(64, 64),
    ``fc`` Linear(4 * 4 * 64, num_classes).  ReLU and max-pooling are
    functional calls (the course holds them as parameter-free ``self.relu`` /
    ``self.pool`` modules; the state dict is the same either way).

    Input: (N, 3, 32, 32).  Shapes: stage 1 (N,16,32,32) -> pool (N,16,16,16);
    stage 2 (N,32,16,16) -> pool (N,32,8,8); stage 3 (N,64,8,8) -> pool
    (N,64,4,4) -> flatten (N,1024) -> fc (N,num_classes).
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1_1 = nn.Conv2d(3, 16, kernel_size=3, stride=1, padding=1)
        self.conv1_2 = nn.Conv2d(16, 16, kernel_size=3, stride=1, padding=1)
        self.conv2_1 = nn.Conv2d(16, 32, kernel_size=3, stride=1, padding=1)
        self.conv2_2 = nn.Conv2d(32, 32, kernel_size=3, stride=1, padding=1)
        self.conv3_1 = nn.Conv2d(32, 64, kernel_size=3, stride=1, padding=1)
        self.conv3_2 = nn.Conv2d(64, 64, kernel_size=3, stride=1, padding=1)
        self.fc = nn.Linear(4 * 4 * 64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, 32, 32) -> (N, num_classes)."""
        x = F.relu(self.conv1_1(x))
        x = F.relu(self.conv1_2(x))
        x = F.max_pool2d(x, 2)  # (N, 16, 16, 16)
        x = F.relu(self.conv2_1(x))
        x = F.relu(self.conv2_2(x))
        x = F.max_pool2d(x, 2)  # (N, 32, 8, 8)
        x = F.relu(self.conv3_1(x))
        x = F.relu(self.conv3_2(x))
        x = F.max_pool2d(x, 2)  # (N, 64, 4, 4)
        x = torch.flatten(x, 1)  # (N, 1024)
        x = self.fc(x)  # (N, num_classes)
        return x


def cifar_cnn(*, num_classes: int = 10) -> CifarCNN:
    """Build :class:`CifarCNN`; input (N, 3, 32, 32), output (N, num_classes)."""
    return CifarCNN(num_classes=num_classes)
