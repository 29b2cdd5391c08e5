"""The course's CIFAR-10 ResNet (kuangliu/pytorch-cifar style): 3x3 stem, no max-pool."""

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["BasicBlock", "Bottleneck", "CifarResNet", "cifar_resnet18", "cifar_resnet34", "cifar_resnet50"]


class BasicBlock(nn.Module):
    """Two 3x3 convs with batch norm plus a shortcut (ResNet-18/34 block).

    Attributes, in order: ``conv1`` Conv2d(in_planes, planes, 3, stride,
    padding=1, bias=False), ``bn1`` BatchNorm2d(planes), ``conv2``
    Conv2d(planes, planes, 3, 1, padding=1, bias=False), ``bn2``
    BatchNorm2d(planes), ``shortcut``: nn.Sequential(Conv2d(in_planes, planes,
    1, stride, bias=False), BatchNorm2d(planes)) when stride != 1 or
    in_planes != planes, otherwise an empty nn.Sequential() (identity).
    ReLUs are functional.

    (N, in_planes, H, W) -> (N, planes, ceil(H / stride), ceil(W / stride)).
    """

    expansion: int = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != self.expansion * planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, self.expansion * planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(self.expansion * planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_planes, H, W) -> (N, planes, H / stride, W / stride)."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        out = F.relu(out)
        return out


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride), 1x1 expand x4, with batch norm, plus a shortcut (ResNet-50 block).

    Attributes, in order: ``conv1`` Conv2d(in_planes, planes, 1, bias=False),
    ``bn1``, ``conv2`` Conv2d(planes, planes, 3, stride, padding=1,
    bias=False), ``bn2``, ``conv3`` Conv2d(planes, 4 * planes, 1, bias=False),
    ``bn3``, ``shortcut``: nn.Sequential(Conv2d(in_planes, 4 * planes, 1,
    stride, bias=False), BatchNorm2d(4 * planes)) when stride != 1 or
    in_planes != 4 * planes, otherwise an empty nn.Sequential().  ReLUs are
    functional.

    (N, in_planes, H, W) -> (N, 4 * planes, ceil(H / stride), ceil(W / stride)).
    """

    expansion: int = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, self.expansion * planes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(self.expansion * planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != self.expansion * planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, self.expansion * planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(self.expansion * planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_planes, H, W) -> (N, 4 * planes, H / stride, W / stride)."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = out + self.shortcut(x)
        out = F.relu(out)
        return out


class CifarResNet(nn.Module):
    """ResNet for 32x32 images: 3x3 stride-1 stem, no max-pool, 4x4 average pool.

    Attributes, in order: ``conv1`` Conv2d(3, 64, 3, stride=1, padding=1,
    bias=False), ``bn1`` BatchNorm2d(64), ``layer1`` .. ``layer4``
    (nn.Sequential of ``block``; planes 64/128/256/512, first-block stride
    1/2/2/2, the stride sits in the first block of each layer), ``linear``
    Linear(512 * block.expansion, num_classes).  ReLU and pooling are
    functional; PyTorch default initialisation (as in the course code).

    Input: (N, 3, 32, 32).  Shapes: stem (N,64,32,32) -> layer1
    (N,64e,32,32) -> layer2 (N,128e,16,16) -> layer3 (N,256e,8,8) -> layer4
    (N,512e,4,4) -> F.avg_pool2d(4) (N,512e,1,1) -> flatten -> linear
    (N,num_classes), with e = block.expansion.  Because the pool is a fixed
    4x4 window, only inputs of 25..56 pixels per side give the 1x1 map the
    linear layer needs.
    """

    def __init__(self, block: type[BasicBlock | Bottleneck], num_blocks: list[int], num_classes: int = 10) -> None:
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(block, 64, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(block, 128, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(block, 256, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(block, 512, num_blocks[3], stride=2)
        self.linear = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(
        self, block: type[BasicBlock | Bottleneck], planes: int, num_blocks: int, stride: int
    ) -> nn.Sequential:
        """nn.Sequential of ``num_blocks`` blocks; the first has ``stride``, the rest stride 1."""
        strides = [stride] + [1] * (num_blocks - 1)
        layers = []
        for s in strides:
            layers.append(block(self.in_planes, planes, s))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, 32, 32) -> (N, num_classes)."""
        out = F.relu(self.bn1(self.conv1(x)))  # (N, 64, 32, 32)
        out = self.layer1(out)  # (N, 64e, 32, 32)
        out = self.layer2(out)  # (N, 128e, 16, 16)
        out = self.layer3(out)  # (N, 256e, 8, 8)
        out = self.layer4(out)  # (N, 512e, 4, 4)
        out = F.avg_pool2d(out, 4)  # (N, 512e, 1, 1)
        out = torch.flatten(out, 1)  # (N, 512e)
        out = self.linear(out)  # (N, num_classes)
        return out


def cifar_resnet18(*, num_classes: int = 10) -> CifarResNet:
    """CIFAR ResNet-18 (BasicBlock, [2, 2, 2, 2]); input (N, 3, 32, 32), output (N, num_classes)."""
    return CifarResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)


def cifar_resnet34(*, num_classes: int = 10) -> CifarResNet:
    """CIFAR ResNet-34 (BasicBlock, [3, 4, 6, 3]); input (N, 3, 32, 32), output (N, num_classes)."""
    return CifarResNet(BasicBlock, [3, 4, 6, 3], num_classes=num_classes)


def cifar_resnet50(*, num_classes: int = 10) -> CifarResNet:
    """CIFAR ResNet-50 (Bottleneck, [3, 4, 6, 3]); input (N, 3, 32, 32), output (N, num_classes)."""
    return CifarResNet(Bottleneck, [3, 4, 6, 3], num_classes=num_classes)
