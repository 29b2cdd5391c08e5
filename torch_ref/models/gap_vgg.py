"""The course's VGG-16 with global average pooling (GAP) for class activation maps."""

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["GapVGG", "gap_vgg"]

# VGG-16 (torchvision cfg "D"): ints are 3x3 conv output channels, "M" is MaxPool2d(2, 2).
VGG16_CFG: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def make_layers(cfg: list[int | str], in_channels: int = 3) -> nn.Sequential:
    """Conv stack: each int c adds Conv2d(in, c, 3, padding=1) + LeakyReLU(0.2); "M" adds MaxPool2d(2, 2).

    Sequential indices for VGG16_CFG: conv at 0, 2, 5, 7, 10, 12, 14, 17, 19, 21,
    24, 26, 28; LeakyReLU right after each conv; MaxPool at 4, 9, 16, 23, 30.
    Maps (N, in_channels, H, W) -> (N, cfg[-2], H // 32, W // 32) for VGG16_CFG.
    """
    layers: list[nn.Module] = []
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers.append(nn.Conv2d(in_channels, v, kernel_size=3, padding=1))
            layers.append(nn.LeakyReLU(0.2))
            in_channels = v
    return nn.Sequential(*layers)


class GapVGG(nn.Module):
    """VGG-16 conv stack (LeakyReLU 0.2, no batch norm), global average pool, one linear.

    Attributes, in order: ``conv`` nn.Sequential (see :func:`make_layers`),
    ``classifier`` Linear(512, num_classes).  Global average pooling is the
    functional ``F.adaptive_avg_pool2d(features, 1)`` (the course used
    ``nn.AvgPool2d(7)`` for 224x224 inputs, which is the same thing there).

    Input: (N, 3, H, W) with H, W >= 32 (the course uses 224x224 or 128x128).
    ``forward`` returns ``(logits, features)``: logits (N, num_classes) and
    features (N, 512, H // 32, W // 32), the output of ``self.conv`` -- the last
    feature map before global pooling, taken after the final LeakyReLU and
    the final MaxPool -- which is what class activation maps (CAM) weight with
    ``classifier.weight``.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv = make_layers(VGG16_CFG)
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, H, W) -> (logits (N, num_classes), features (N, 512, H // 32, W // 32))."""
        features = self.conv(x)  # (N, 512, H/32, W/32)
        x = F.adaptive_avg_pool2d(features, 1)  # (N, 512, 1, 1)
        x = torch.flatten(x, 1)  # (N, 512)
        x = self.classifier(x)  # (N, num_classes)
        return x, features


def gap_vgg(*, num_classes: int = 10) -> GapVGG:
    """Build :class:`GapVGG`; input (N, 3, H, W), H, W >= 32; returns (logits, features)."""
    return GapVGG(num_classes=num_classes)
