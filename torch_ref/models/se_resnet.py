"""Squeeze-and-Excitation ResNets built on torchvision's ResNet machinery.

The course notes only name SE networks (a slide, no code), so this follows the
paper (Hu et al., 2018, "Squeeze-and-Excitation Networks"): the SE unit
rescales the residual branch, after its last batch norm and before the
addition of the identity; its two fully connected layers carry biases.
"""

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models import resnet as tv_resnet

__all__ = ["SELayer", "SEBasicBlock", "SEBottleneck", "SEResNet", "se_resnet18", "se_resnet50"]

SE_REDUCTION = 16


class SELayer(nn.Module):
    """Squeeze-and-excitation: channel-wise gating from globally pooled features.

    Attributes, in order: ``fc1`` Linear(channels, channels // reduction),
    ``fc2`` Linear(channels // reduction, channels), both with bias.
    forward: s = mean of x over H, W (N, C) -> fc1 -> ReLU -> fc2 -> sigmoid
    -> x * s[:, :, None, None].  Pooling and activations are functional.

    (N, C, H, W) -> (N, C, H, W).
    """

    def __init__(self, channels: int, reduction: int = SE_REDUCTION) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, channels // reduction)
        self.fc2 = nn.Linear(channels // reduction, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, C, H, W)."""
        s = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # (N, C)
        s = F.relu(self.fc1(s))  # (N, C // reduction)
        s = torch.sigmoid(self.fc2(s))  # (N, C)
        return x * s[:, :, None, None]


class SEBasicBlock(tv_resnet.BasicBlock):
    """torchvision's BasicBlock plus ``se`` = SELayer(planes) on the residual branch.

    Constructor arguments are torchvision's BasicBlock's.  Attributes, in
    order: ``conv1``, ``bn1``, ``relu``, ``conv2``, ``bn2``, ``downsample``
    (None or nn.Sequential(conv1x1, BatchNorm2d)), ``se``.
    forward: relu(se(bn2(conv2(relu(bn1(conv1(x)))))) + identity), identity =
    downsample(x) if downsample else x.

    (N, inplanes, H, W) -> (N, planes, ceil(H / stride), ceil(W / stride)).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.se = SELayer(self.bn2.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, inplanes, H, W) -> (N, planes, H / stride, W / stride)."""
        identity = x

        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)

        out = self.conv2(out)
        out = self.bn2(out)
        out = self.se(out)

        if self.downsample is not None:
            identity = self.downsample(x)

        out += identity
        out = self.relu(out)

        return out


class SEBottleneck(tv_resnet.Bottleneck):
    """torchvision's Bottleneck (stride on the 3x3, "ResNet v1.5") plus ``se`` = SELayer(4 * planes).

    Constructor arguments are torchvision's Bottleneck's.  Attributes, in
    order: ``conv1``, ``bn1``, ``conv2``, ``bn2``, ``conv3``, ``bn3``,
    ``relu``, ``downsample`` (None or nn.Sequential(conv1x1, BatchNorm2d)),
    ``se``.  forward: relu(se(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))))
    + identity).

    (N, inplanes, H, W) -> (N, 4 * planes, ceil(H / stride), ceil(W / stride)).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.se = SELayer(self.bn3.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, inplanes, H, W) -> (N, 4 * planes, H / stride, W / stride)."""
        identity = x

        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)

        out = self.conv2(out)
        out = self.bn2(out)
        out = self.relu(out)

        out = self.conv3(out)
        out = self.bn3(out)
        out = self.se(out)

        if self.downsample is not None:
            identity = self.downsample(x)

        out += identity
        out = self.relu(out)

        return out


class SEResNet(tv_resnet.ResNet):
    """torchvision's ResNet with SE blocks; same attribute names and forward.

    Attributes, in order: ``conv1`` Conv2d(3, 64, 7, 2, 3, bias=False),
    ``bn1``, ``relu``, ``maxpool`` MaxPool2d(3, 2, 1), ``layer1`` ..
    ``layer4``, ``avgpool`` AdaptiveAvgPool2d(1), ``fc`` Linear(512 *
    expansion, num_classes).  Initialisation is torchvision's (Kaiming-normal
    fan_out convs, BN weight 1 / bias 0, optional ``zero_init_residual``);
    the SE linears keep PyTorch's default init.  Extra keyword arguments go
    to ``torchvision.models.resnet.ResNet``.

    Input: (N, 3, H, W), 224x224 nominal.  Output: (N, num_classes).
    """

    def __init__(
        self,
        block: type[SEBasicBlock | SEBottleneck],
        layers: list[int],
        num_classes: int = 1000,
        **kwargs: Any,
    ) -> None:
        super().__init__(block, layers, num_classes=num_classes, **kwargs)


def se_resnet18(*, num_classes: int = 1000, **kwargs: Any) -> SEResNet:
    """SE-ResNet-18 (SEBasicBlock, [2, 2, 2, 2]); input (N, 3, H, W), output (N, num_classes)."""
    return SEResNet(SEBasicBlock, [2, 2, 2, 2], num_classes=num_classes, **kwargs)


def se_resnet50(*, num_classes: int = 1000, **kwargs: Any) -> SEResNet:
    """SE-ResNet-50 (SEBottleneck, [3, 4, 6, 3]); input (N, 3, H, W), output (N, num_classes)."""
    return SEResNet(SEBottleneck, [3, 4, 6, 3], num_classes=num_classes, **kwargs)
