"""torchvision's ResNets (ResNet-18/34/50/101/152, ResNeXt, wide ResNets) in Flax NNX; twins of ``torchvision.models.resnet``.

Same helpers (``conv3x3``, ``conv1x1``), blocks (``BasicBlock``, ``Bottleneck`` with the stride
on the 3x3 conv, "ResNet v1.5"), ``ResNet._make_layer`` and attribute names as torchvision's
``resnet.py``, so torchvision ``state_dict``s (e.g. ``layer1.0.downsample.0.weight``) load
unchanged. Every constructor takes ``rngs`` as an extra keyword. Data is NHWC.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
from flax import nnx

from jaxcnn import nn
from jaxcnn.models.registry import register
from jaxcnn.nn import functional as F
from jaxcnn.nn import init

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "conv1x1",
    "conv3x3",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "wide_resnet50_2",
    "wide_resnet101_2",
]


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1, dilation: int = 1, *, rngs: nnx.Rngs) -> nn.Conv2d:
    """3x3 convolution with padding (= dilation), no bias."""
    return nn.Conv2d(
        in_planes,
        out_planes,
        kernel_size=3,
        stride=stride,
        padding=dilation,
        groups=groups,
        bias=False,
        dilation=dilation,
        rngs=rngs,
    )


def conv1x1(in_planes: int, out_planes: int, stride: int = 1, *, rngs: nnx.Rngs) -> nn.Conv2d:
    """1x1 convolution, no bias."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False, rngs=rngs)


class BasicBlock(nnx.Module):
    """Two 3x3 convs with batch norm plus the identity (ResNet-18/34 block).

    Attributes, in order: ``conv1`` conv3x3(inplanes, planes, stride), ``bn1``, ``relu``,
    ``conv2`` conv3x3(planes, planes), ``bn2``, ``downsample`` (None or
    Sequential(conv1x1(inplanes, planes, stride), BatchNorm2d(planes))), ``stride``.
    forward: relu(bn2(conv2(relu(bn1(conv1(x))))) + identity), identity = downsample(x)
    if downsample else x.

    (N, H, W, inplanes) -> (N, ceil(H / stride), ceil(W / stride), planes).
    """

    expansion: int = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nnx.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        norm_layer: Callable[..., nnx.Module] | None = None,
        *,
        rngs: nnx.Rngs,
    ):
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock only supports groups=1 and base_width=64")
        if dilation > 1:
            raise NotImplementedError("Dilation > 1 not supported in BasicBlock")
        # Both self.conv1 and self.downsample layers downsample the input when stride != 1
        self.conv1 = conv3x3(inplanes, planes, stride, rngs=rngs)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, rngs=rngs)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.stride = stride

    def __call__(self, x: jax.Array) -> jax.Array:
        """(N, H, W, inplanes) -> (N, H / stride, W / stride, planes)."""
        identity = x

        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)

        out = self.conv2(out)
        out = self.bn2(out)

        if self.downsample is not None:
            identity = self.downsample(x)

        out = out + identity
        out = self.relu(out)

        return out


class Bottleneck(nnx.Module):
    """1x1 reduce, 3x3 (carries the stride), 1x1 expand x4, with batch norm, plus the identity.

    torchvision places the stride on the 3x3 conv (``conv2``), not on the first 1x1 as the
    original paper does ("ResNet v1.5"). ``width = int(planes * base_width / 64) * groups``.

    Attributes, in order: ``conv1`` conv1x1(inplanes, width), ``bn1``, ``conv2``
    conv3x3(width, width, stride, groups, dilation), ``bn2``, ``conv3`` conv1x1(width,
    4 * planes), ``bn3``, ``relu``, ``downsample`` (None or Sequential(conv1x1, BatchNorm2d)),
    ``stride``. forward: relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))) + identity).

    (N, H, W, inplanes) -> (N, ceil(H / stride), ceil(W / stride), 4 * planes).
    """

    expansion: int = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nnx.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        norm_layer: Callable[..., nnx.Module] | None = None,
        *,
        rngs: nnx.Rngs,
    ):
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        width = int(planes * (base_width / 64.0)) * groups
        # Both self.conv2 and self.downsample layers downsample the input when stride != 1
        self.conv1 = conv1x1(inplanes, width, rngs=rngs)
        self.bn1 = norm_layer(width)
        self.conv2 = conv3x3(width, width, stride, groups, dilation, rngs=rngs)
        self.bn2 = norm_layer(width)
        self.conv3 = conv1x1(width, planes * self.expansion, rngs=rngs)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def __call__(self, x: jax.Array) -> jax.Array:
        """(N, H, W, inplanes) -> (N, H / stride, W / stride, 4 * planes)."""
        identity = x

        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)

        out = self.conv2(out)
        out = self.bn2(out)
        out = self.relu(out)

        out = self.conv3(out)
        out = self.bn3(out)

        if self.downsample is not None:
            identity = self.downsample(x)

        out = out + identity
        out = self.relu(out)

        return out


class ResNet(nnx.Module):
    """torchvision's ResNet: 7x7/2 stem, 3x3/2 max-pool, four stages of blocks, global average pool, fc.

    Attributes, in order: ``conv1`` Conv2d(3, 64, 7, 2, 3, bias=False), ``bn1``, ``relu``,
    ``maxpool`` MaxPool2d(3, 2, 1), ``layer1`` .. ``layer4`` (Sequential of ``block``; planes
    64/128/256/512, stride 1/2/2/2 in the first block of each stage), ``avgpool``
    AdaptiveAvgPool2d((1, 1)), ``fc`` Linear(512 * block.expansion, num_classes).

    Initialisation is torchvision's: Kaiming-normal (fan_out, relu) conv kernels, BatchNorm
    weight 1 / bias 0, ``fc`` torch's default; ``zero_init_residual`` zeroes the last
    BatchNorm weight of every block (``bn3`` of a Bottleneck, ``bn2`` of a BasicBlock).
    ``groups`` / ``width_per_group`` give ResNeXt / wide ResNets, ``replace_stride_with_dilation``
    (three bools for layer2..layer4) dilates instead of striding; both as torchvision.

    Input: (N, H, W, 3) NHWC, 224x224 nominal (any H, W >= 1). Shapes for 224: stem
    (N,112,112,64) -> maxpool (N,56,56,64) -> layer1 (N,56,56,64e) -> layer2 (N,28,28,128e)
    -> layer3 (N,14,14,256e) -> layer4 (N,7,7,512e) -> avgpool (N,1,1,512e) -> flatten
    (N,512e) -> fc (N,num_classes), with e = block.expansion.
    """

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: list[int],
        num_classes: int = 1000,
        zero_init_residual: bool = False,
        groups: int = 1,
        width_per_group: int = 64,
        replace_stride_with_dilation: list[bool] | None = None,
        norm_layer: Callable[..., nnx.Module] | None = None,
        *,
        rngs: nnx.Rngs,
    ):
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        self._norm_layer = norm_layer

        self.inplanes = 64
        self.dilation = 1
        if replace_stride_with_dilation is None:
            # each element in the tuple indicates if we should replace
            # the 2x2 stride with a dilated convolution instead
            replace_stride_with_dilation = [False, False, False]
        if len(replace_stride_with_dilation) != 3:
            raise ValueError(
                "replace_stride_with_dilation should be None "
                f"or a 3-element tuple, got {replace_stride_with_dilation}"
            )
        self.groups = groups
        self.base_width = width_per_group
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False, rngs=rngs)
        self.bn1 = norm_layer(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0], rngs=rngs)
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2, dilate=replace_stride_with_dilation[0], rngs=rngs)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2, dilate=replace_stride_with_dilation[1], rngs=rngs)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2, dilate=replace_stride_with_dilation[2], rngs=rngs)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes, rngs=rngs)

        for _, m in nnx.iter_graph(self):
            if isinstance(m, nn.Conv2d):
                init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", rngs=rngs)
            elif isinstance(m, nn.BatchNorm2d):
                init.constant_(m.weight, 1)
                init.constant_(m.bias, 0)

        # Zero-initialize the last BN in each residual branch,
        # so that the residual branch starts with zeros, and each residual block behaves like an identity.
        # This improves the model by 0.2~0.3% according to https://arxiv.org/abs/1706.02677
        if zero_init_residual:
            for _, m in nnx.iter_graph(self):
                if isinstance(m, Bottleneck) and m.bn3.weight is not None:
                    init.constant_(m.bn3.weight, 0)
                elif isinstance(m, BasicBlock) and m.bn2.weight is not None:
                    init.constant_(m.bn2.weight, 0)

    def _make_layer(
        self,
        block: type[BasicBlock | Bottleneck],
        planes: int,
        blocks: int,
        stride: int = 1,
        dilate: bool = False,
        *,
        rngs: nnx.Rngs,
    ) -> nn.Sequential:
        """Sequential of ``blocks`` blocks; the first carries ``stride`` (or dilation) and the downsample."""
        norm_layer = self._norm_layer
        downsample = None
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride, rngs=rngs),
                norm_layer(planes * block.expansion),
            )

        layers = []
        layers.append(
            block(
                self.inplanes, planes, stride, downsample, self.groups, self.base_width, previous_dilation, norm_layer, rngs=rngs
            )
        )
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(
                block(
                    self.inplanes,
                    planes,
                    groups=self.groups,
                    base_width=self.base_width,
                    dilation=self.dilation,
                    norm_layer=norm_layer,
                    rngs=rngs,
                )
            )

        return nn.Sequential(*layers)

    def _forward_impl(self, x: jax.Array) -> jax.Array:
        x = self.conv1(x)  # (N, H/2, W/2, 64)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.maxpool(x)  # (N, H/4, W/4, 64)

        x = self.layer1(x)  # (N, H/4, W/4, 64e)
        x = self.layer2(x)  # (N, H/8, W/8, 128e)
        x = self.layer3(x)  # (N, H/16, W/16, 256e)
        x = self.layer4(x)  # (N, H/32, W/32, 512e)

        x = self.avgpool(x)  # (N, 1, 1, 512e)
        x = F.flatten(x, 1, torch_order=True)  # (N, 512e)
        x = self.fc(x)  # (N, num_classes)

        return x

    def __call__(self, x: jax.Array) -> jax.Array:
        """(N, H, W, 3) -> (N, num_classes)."""
        return self._forward_impl(x)


def _resnet(block: type[BasicBlock | Bottleneck], layers: list[int], *, rngs: nnx.Rngs, **kwargs) -> ResNet:
    return ResNet(block, layers, rngs=rngs, **kwargs)


@register("resnet18")
def resnet18(*, num_classes: int = 1000, rngs: nnx.Rngs, **kwargs) -> ResNet:
    """ResNet-18 (BasicBlock, [2, 2, 2, 2]); input (N, H, W, 3) NHWC, output (N, num_classes)."""
    return _resnet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes, rngs=rngs, **kwargs)


@register("resnet34")
def resnet34(*, num_classes: int = 1000, rngs: nnx.Rngs, **kwargs) -> ResNet:
    """ResNet-34 (BasicBlock, [3, 4, 6, 3]); input (N, H, W, 3) NHWC, output (N, num_classes)."""
    return _resnet(BasicBlock, [3, 4, 6, 3], num_classes=num_classes, rngs=rngs, **kwargs)


@register("resnet50")
def resnet50(*, num_classes: int = 1000, rngs: nnx.Rngs, **kwargs) -> ResNet:
    """ResNet-50 (Bottleneck, [3, 4, 6, 3]); input (N, H, W, 3) NHWC, output (N, num_classes)."""
    return _resnet(Bottleneck, [3, 4, 6, 3], num_classes=num_classes, rngs=rngs, **kwargs)


@register("resnet101")
def resnet101(*, num_classes: int = 1000, rngs: nnx.Rngs, **kwargs) -> ResNet:
    """ResNet-101 (Bottleneck, [3, 4, 23, 3]); input (N, H, W, 3) NHWC, output (N, num_classes)."""
    return _resnet(Bottleneck, [3, 4, 23, 3], num_classes=num_classes, rngs=rngs, **kwargs)


@register("resnet152")
def resnet152(*, num_classes: int = 1000, rngs: nnx.Rngs, **kwargs) -> ResNet:
    """ResNet-152 (Bottleneck, [3, 8, 36, 3]); input (N, H, W, 3) NHWC, output (N, num_classes)."""
    return _resnet(Bottleneck, [3, 8, 36, 3], num_classes=num_classes, rngs=rngs, **kwargs)


@register("resnext50_32x4d")
def resnext50_32x4d(*, num_classes: int = 1000, rngs: nnx.Rngs, **kwargs) -> ResNet:
    """ResNeXt-50 32x4d (Bottleneck, [3, 4, 6, 3], groups=32, width_per_group=4); NHWC input, (N, num_classes) output."""
    kwargs.setdefault("groups", 32)
    kwargs.setdefault("width_per_group", 4)
    return _resnet(Bottleneck, [3, 4, 6, 3], num_classes=num_classes, rngs=rngs, **kwargs)


@register("resnext101_32x8d")
def resnext101_32x8d(*, num_classes: int = 1000, rngs: nnx.Rngs, **kwargs) -> ResNet:
    """ResNeXt-101 32x8d (Bottleneck, [3, 4, 23, 3], groups=32, width_per_group=8); NHWC input, (N, num_classes) output."""
    kwargs.setdefault("groups", 32)
    kwargs.setdefault("width_per_group", 8)
    return _resnet(Bottleneck, [3, 4, 23, 3], num_classes=num_classes, rngs=rngs, **kwargs)


@register("wide_resnet50_2")
def wide_resnet50_2(*, num_classes: int = 1000, rngs: nnx.Rngs, **kwargs) -> ResNet:
    """Wide ResNet-50-2 (Bottleneck, [3, 4, 6, 3], width_per_group=128: twice the 3x3 width); NHWC input."""
    kwargs.setdefault("width_per_group", 64 * 2)
    return _resnet(Bottleneck, [3, 4, 6, 3], num_classes=num_classes, rngs=rngs, **kwargs)


@register("wide_resnet101_2")
def wide_resnet101_2(*, num_classes: int = 1000, rngs: nnx.Rngs, **kwargs) -> ResNet:
    """Wide ResNet-101-2 (Bottleneck, [3, 4, 23, 3], width_per_group=128: twice the 3x3 width); NHWC input."""
    kwargs.setdefault("width_per_group", 64 * 2)
    return _resnet(Bottleneck, [3, 4, 23, 3], num_classes=num_classes, rngs=rngs, **kwargs)
