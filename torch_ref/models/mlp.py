"""The course's MNIST multi-layer perceptron (sigmoid hidden activations)."""

import torch
import torch.nn as nn

__all__ = ["MLP", "mlp"]


class MLP(nn.Module):
    """784-256-128-num_classes perceptron with sigmoid activations.

    Attributes, in order: ``fc1`` Linear(784, 256), ``fc2`` Linear(256, 128),
    ``fc3`` Linear(128, num_classes).  The sigmoids are functional calls
    (``torch.sigmoid``), so they hold no module.

    Input: (N, 1, 28, 28) images (any shape whose trailing dims hold 784 values
    per sample, e.g. (N, 784), works too).  Output: (N, num_classes) logits.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, 256)
        self.fc2 = nn.Linear(256, 128)
        self.fc3 = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 28, 28) -> (N, num_classes)."""
        x = torch.flatten(x, 1)  # (N, 784)
        x = torch.sigmoid(self.fc1(x))  # (N, 256)
        x = torch.sigmoid(self.fc2(x))  # (N, 128)
        x = self.fc3(x)  # (N, num_classes)
        return x


def mlp(*, num_classes: int = 10) -> MLP:
    """Build :class:`MLP`; input (N, 1, 28, 28), output (N, num_classes)."""
    return MLP(num_classes=num_classes)
