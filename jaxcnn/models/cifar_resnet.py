"""The course's CIFAR-10 ResNet (kuangliu/pytorch-cifar style): 3x3 stem, no max-pool.

Twin of ``torch_ref.models.cifar_resnet``: same classes, attribute names (``shortcut``,
``linear``) and forward, on NHWC data.
"""

from __future__ import annotations

import jax
from flax import nnx

from jaxcnn import nn
from jaxcnn.models.registry import register
from jaxcnn.nn import functional as F

__all__ = ["BasicBlock", "Bottleneck", "CifarResNet", "cifar_resnet18", "cifar_resnet34", "cifar_resnet50"]


class BasicBlock(nnx.Module):
    """Two 3x3 convs with batch norm plus a shortcut (ResNet-18/34 block).

    Attributes, in order: ``conv1`` Conv2d(in_planes, planes, 3, stride, padding=1,
    bias=False), ``bn1`` BatchNorm2d(planes), ``conv2`` Conv2d(planes, planes, 3, 1,
    padding=1, bias=False), ``bn2`` BatchNorm2d(planes), ``shortcut``:
    Sequential(Conv2d(in_planes, planes, 1, stride, bias=False), BatchNorm2d(planes)) when
    stride != 1 or in_planes != planes, otherwise an empty Sequential() (identity).
    ReLUs are functional.

    (N, H, W, in_planes) -> (N, ceil(H / stride), ceil(W / stride), planes).
    """

    expansion: int = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, *, rngs: nnx.Rngs):
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False, rngs=rngs)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False, rngs=rngs)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != self.expansion * planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, self.expansion * planes, kernel_size=1, stride=stride, bias=False, rngs=rngs),
                nn.BatchNorm2d(self.expansion * planes),
            )

    def __call__(self, x: jax.Array) -> jax.Array:
        """(N, H, W, in_planes) -> (N, H / stride, W / stride, planes)."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        out = F.relu(out)
        return out


class Bottleneck(nnx.Module):
    """1x1 reduce, 3x3 (carries the stride), 1x1 expand x4, with batch norm, plus a shortcut (ResNet-50 block).

    Attributes, in order: ``conv1`` Conv2d(in_planes, planes, 1, bias=False), ``bn1``,
    ``conv2`` Conv2d(planes, planes, 3, stride, padding=1, bias=False), ``bn2``, ``conv3``
    Conv2d(planes, 4 * planes, 1, bias=False), ``bn3``, ``shortcut``:
    Sequential(Conv2d(in_planes, 4 * planes, 1, stride, bias=False), BatchNorm2d(4 * planes))
    when stride != 1 or in_planes != 4 * planes, otherwise an empty Sequential(). ReLUs are
    functional.

    (N, H, W, in_planes) -> (N, ceil(H / stride), ceil(W / stride), 4 * planes).
    """

    expansion: int = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, *, rngs: nnx.Rngs):
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False, rngs=rngs)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False, rngs=rngs)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, self.expansion * planes, kernel_size=1, bias=False, rngs=rngs)
        self.bn3 = nn.BatchNorm2d(self.expansion * planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != self.expansion * planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, self.expansion * planes, kernel_size=1, stride=stride, bias=False, rngs=rngs),
                nn.BatchNorm2d(self.expansion * planes),
            )

    def __call__(self, x: jax.Array) -> jax.Array:
        """(N, H, W, in_planes) -> (N, H / stride, W / stride, 4 * planes)."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = out + self.shortcut(x)
        out = F.relu(out)
        return out


class CifarResNet(nnx.Module):
    """ResNet for 32x32 images: 3x3 stride-1 stem, no max-pool, 4x4 average pool.

    Attributes, in order: ``conv1`` Conv2d(3, 64, 3, stride=1, padding=1, bias=False),
    ``bn1`` BatchNorm2d(64), ``layer1`` .. ``layer4`` (Sequential of ``block``; planes
    64/128/256/512, first-block stride 1/2/2/2, the stride sits in the first block of each
    layer), ``linear`` Linear(512 * block.expansion, num_classes). ReLU and pooling are
    functional; PyTorch default initialisation (as in the course code).

    Input: (N, 32, 32, 3) NHWC. Shapes: stem (N,32,32,64) -> layer1 (N,32,32,64e) -> layer2
    (N,16,16,128e) -> layer3 (N,8,8,256e) -> layer4 (N,4,4,512e) -> F.avg_pool2d(4)
    (N,1,1,512e) -> flatten -> linear (N,num_classes), with e = block.expansion. Because
    the pool is a fixed 4x4 window, only inputs of 25..56 pixels per side give the 1x1 map
    the linear layer needs.
    """

    def __init__(self, block: type[BasicBlock | Bottleneck], num_blocks: list[int], num_classes: int = 10, *, rngs: nnx.Rngs):
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False, rngs=rngs)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(block, 64, num_blocks[0], stride=1, rngs=rngs)
        self.layer2 = self._make_layer(block, 128, num_blocks[1], stride=2, rngs=rngs)
        self.layer3 = self._make_layer(block, 256, num_blocks[2], stride=2, rngs=rngs)
        self.layer4 = self._make_layer(block, 512, num_blocks[3], stride=2, rngs=rngs)
        self.linear = nn.Linear(512 * block.expansion, num_classes, rngs=rngs)

    def _make_layer(
        self, block: type[BasicBlock | Bottleneck], planes: int, num_blocks: int, stride: int, *, rngs: nnx.Rngs
    ) -> nn.Sequential:
        """Sequential of ``num_blocks`` blocks; the first has ``stride``, the rest stride 1."""
        strides = [stride] + [1] * (num_blocks - 1)
        layers = []
        for s in strides:
            layers.append(block(self.in_planes, planes, s, rngs=rngs))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def __call__(self, x: jax.Array) -> jax.Array:
        """(N, 32, 32, 3) -> (N, num_classes)."""
        out = F.relu(self.bn1(self.conv1(x)))  # (N, 32, 32, 64)
        out = self.layer1(out)  # (N, 32, 32, 64e)
        out = self.layer2(out)  # (N, 16, 16, 128e)
        out = self.layer3(out)  # (N, 8, 8, 256e)
        out = self.layer4(out)  # (N, 4, 4, 512e)
        out = F.avg_pool2d(out, 4)  # (N, 1, 1, 512e)
        out = F.flatten(out, 1, torch_order=True)  # (N, 512e)
        out = self.linear(out)  # (N, num_classes)
        return out


@register("cifar_resnet18", input_size=(32, 32, 3))
def cifar_resnet18(*, num_classes: int = 10, rngs: nnx.Rngs) -> CifarResNet:
    """CIFAR ResNet-18 (BasicBlock, [2, 2, 2, 2]); input (N, 32, 32, 3) NHWC, output (N, num_classes)."""
    return CifarResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes, rngs=rngs)


@register("cifar_resnet34", input_size=(32, 32, 3))
def cifar_resnet34(*, num_classes: int = 10, rngs: nnx.Rngs) -> CifarResNet:
    """CIFAR ResNet-34 (BasicBlock, [3, 4, 6, 3]); input (N, 32, 32, 3) NHWC, output (N, num_classes)."""
    return CifarResNet(BasicBlock, [3, 4, 6, 3], num_classes=num_classes, rngs=rngs)


@register("cifar_resnet50", input_size=(32, 32, 3))
def cifar_resnet50(*, num_classes: int = 10, rngs: nnx.Rngs) -> CifarResNet:
    """CIFAR ResNet-50 (Bottleneck, [3, 4, 6, 3]); input (N, 32, 32, 3) NHWC, output (N, num_classes)."""
    return CifarResNet(Bottleneck, [3, 4, 6, 3], num_classes=num_classes, rngs=rngs)
