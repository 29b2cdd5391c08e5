"""The course's VGG-16 with global average pooling (GAP) for class activation maps.

Twin of ``torch_ref.models.gap_vgg``; :mod:`jaxcnn.models.cam` computes the maps.
"""

from __future__ import annotations

import jax
from flax import nnx

from jaxcnn import nn
from jaxcnn.models.registry import register
from jaxcnn.nn import functional as F

__all__ = ["GapVGG", "VGG16_CFG", "gap_vgg", "make_layers"]

# VGG-16 (torchvision cfg "D"): ints are 3x3 conv output channels, "M" is MaxPool2d(2, 2).
VGG16_CFG: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def make_layers(cfg: list[int | str], in_channels: int = 3, *, rngs: nnx.Rngs) -> nn.Sequential:
    """Conv stack: each int c adds Conv2d(in, c, 3, padding=1) + LeakyReLU(0.2); "M" adds MaxPool2d(2, 2).

    Sequential indices for VGG16_CFG: conv at 0, 2, 5, 7, 10, 12, 14, 17, 19, 21,
    24, 26, 28; LeakyReLU right after each conv; MaxPool at 4, 9, 16, 23, 30.
    Maps (N, H, W, in_channels) -> (N, H // 32, W // 32, cfg[-2]) for VGG16_CFG (NHWC).
    """
    layers = []
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers.append(nn.Conv2d(in_channels, v, kernel_size=3, padding=1, rngs=rngs))
            layers.append(nn.LeakyReLU(0.2))
            in_channels = v
    return nn.Sequential(*layers)


class GapVGG(nnx.Module):
    """VGG-16 conv stack (LeakyReLU 0.2, no batch norm), global average pool, one linear.

    Attributes, in order: ``conv`` nn.Sequential (see :func:`make_layers`),
    ``classifier`` Linear(512, num_classes). Global average pooling is the
    functional ``F.adaptive_avg_pool2d(features, 1)``. PyTorch default initialisation.

    Input: (N, H, W, 3) NHWC with H, W >= 32 (the course uses 224x224 or 128x128).
    ``__call__`` returns ``(logits, features)``: logits (N, num_classes) and features
    (N, H // 32, W // 32, 512), the output of ``self.conv`` -- the last feature map
    before global pooling, taken after the final LeakyReLU and the final MaxPool --
    which is what class activation maps (CAM) weight with ``classifier.weight``.
    """

    def __init__(self, num_classes: int = 10, *, rngs: nnx.Rngs):
        self.conv = make_layers(VGG16_CFG, rngs=rngs)
        self.classifier = nn.Linear(512, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(N, H, W, 3) -> (logits (N, num_classes), features (N, H // 32, W // 32, 512))."""
        features = self.conv(x)  # (N, H/32, W/32, 512)
        x = F.adaptive_avg_pool2d(features, 1)  # (N, 1, 1, 512)
        x = F.flatten(x, 1, torch_order=True)  # (N, 512)
        x = self.classifier(x)  # (N, num_classes)
        return x, features


@register("gap_vgg")
def gap_vgg(*, num_classes: int = 10, rngs: nnx.Rngs) -> GapVGG:
    """Build :class:`GapVGG`; input (N, H, W, 3) NHWC, H, W >= 32; returns (logits, features)."""
    return GapVGG(num_classes=num_classes, rngs=rngs)
