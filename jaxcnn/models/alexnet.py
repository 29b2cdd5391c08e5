"""AlexNet (torchvision's one-weird-trick variant); twin of ``torchvision.models.AlexNet``."""

from __future__ import annotations

import jax
from flax import nnx

from jaxcnn import nn
from jaxcnn.models.registry import register
from jaxcnn.nn import functional as F

__all__ = ["AlexNet", "alexnet"]


class AlexNet(nnx.Module):
    """AlexNet as ``torchvision.models.AlexNet`` (PyTorch default initialisation).

    Attributes, in order: ``features`` Sequential(Conv2d(3, 64, 11, stride 4, padding 2),
    ReLU, MaxPool2d(3, 2), Conv2d(64, 192, 5, padding 2), ReLU, MaxPool2d(3, 2),
    Conv2d(192, 384, 3, padding 1), ReLU, Conv2d(384, 256, 3, padding 1), ReLU,
    Conv2d(256, 256, 3, padding 1), ReLU, MaxPool2d(3, 2)) -- convs at 0, 3, 6, 8, 10,
    pools at 2, 5, 12; ``avgpool`` AdaptiveAvgPool2d((6, 6)); ``classifier``
    Sequential(Dropout, Linear(9216, 4096), ReLU, Dropout, Linear(4096, 4096), ReLU,
    Linear(4096, num_classes)).

    Input: (N, H, W, 3) NHWC, H, W >= 63 (224 nominal). Shapes at 224x224: features
    (N, 6, 6, 256) -> avgpool (N, 6, 6, 256) -> flatten in torch's C,H,W order
    (N, 9216) -> classifier (N, num_classes). Smaller feature maps are upsampled by the
    adaptive pool (torch's overlapping windows), e.g. 63x63 gives 1x1 -> 6x6.
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5, *, rngs: nnx.Rngs):
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2, rngs=rngs),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2, rngs=rngs),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1, rngs=rngs),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1, rngs=rngs),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1, rngs=rngs),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout, rngs=rngs),
            nn.Linear(256 * 6 * 6, 4096, rngs=rngs),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout, rngs=rngs),
            nn.Linear(4096, 4096, rngs=rngs),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes, rngs=rngs),
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        """(N, H, W, 3) -> (N, num_classes)."""
        x = self.features(x)  # (N, h, w, 256); 6x6 at 224x224
        x = self.avgpool(x)  # (N, 6, 6, 256)
        x = F.flatten(x, 1, torch_order=True)  # (N, 9216)
        x = self.classifier(x)  # (N, num_classes)
        return x


@register("alexnet")
def alexnet(*, num_classes: int = 1000, dropout: float = 0.5, rngs: nnx.Rngs) -> AlexNet:
    """Build :class:`AlexNet` (as ``torchvision.models.alexnet(weights=None, ...)``); input (N, H, W, 3) NHWC."""
    return AlexNet(num_classes=num_classes, dropout=dropout, rngs=rngs)
