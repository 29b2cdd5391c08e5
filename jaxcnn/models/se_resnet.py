"""Squeeze-and-Excitation ResNets built on :mod:`jaxcnn.models.resnet`'s machinery.

Twin of ``torch_ref.models.se_resnet``, which subclasses torchvision's ResNet blocks and
ResNet; this subclasses their jaxcnn twins the same way. Following the paper (Hu et al.,
2018, "Squeeze-and-Excitation Networks"): the SE unit rescales the residual branch, after
its last batch norm and before the addition of the identity; its two fully connected
layers carry biases. Data is NHWC.
"""

from __future__ import annotations

import jax
from flax import nnx

from jaxcnn import nn
from jaxcnn.models import resnet as jx_resnet
from jaxcnn.models.registry import register
from jaxcnn.nn import functional as F

__all__ = ["SELayer", "SEBasicBlock", "SEBottleneck", "SEResNet", "se_resnet18", "se_resnet50"]

SE_REDUCTION = 16


class SELayer(nnx.Module):
    """Squeeze-and-excitation: channel-wise gating from globally pooled features.

    Attributes, in order: ``fc1`` Linear(channels, channels // reduction), ``fc2``
    Linear(channels // reduction, channels), both with bias (torch's default init).
    forward: s = mean of x over H, W (N, C) -> fc1 -> ReLU -> fc2 -> sigmoid ->
    x * s[:, None, None, :]. Pooling and activations are functional.

    (N, H, W, C) -> (N, H, W, C).
    """

    def __init__(self, channels: int, reduction: int = SE_REDUCTION, *, rngs: nnx.Rngs):
        self.fc1 = nn.Linear(channels, channels // reduction, rngs=rngs)
        self.fc2 = nn.Linear(channels // reduction, channels, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """(N, H, W, C) -> (N, H, W, C)."""
        s = F.flatten(F.adaptive_avg_pool2d(x, 1), 1, torch_order=True)  # (N, C)
        s = F.relu(self.fc1(s))  # (N, C // reduction)
        s = F.sigmoid(self.fc2(s))  # (N, C)
        return x * s[:, None, None, :]


class SEBasicBlock(jx_resnet.BasicBlock):
    """jaxcnn's (torchvision's) BasicBlock plus ``se`` = SELayer(planes) on the residual branch.

    Constructor arguments are BasicBlock's. Attributes, in order: ``conv1``, ``bn1``,
    ``relu``, ``conv2``, ``bn2``, ``downsample`` (None or Sequential(conv1x1, BatchNorm2d)),
    ``stride``, ``se``. forward: relu(se(bn2(conv2(relu(bn1(conv1(x)))))) + identity),
    identity = downsample(x) if downsample else x.

    (N, H, W, inplanes) -> (N, ceil(H / stride), ceil(W / stride), planes).
    """

    def __init__(self, *args, rngs: nnx.Rngs, **kwargs):
        super().__init__(*args, rngs=rngs, **kwargs)
        self.se = SELayer(self.bn2.num_features, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """(N, H, W, inplanes) -> (N, H / stride, W / stride, planes)."""
        identity = x

        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)

        out = self.conv2(out)
        out = self.bn2(out)
        out = self.se(out)

        if self.downsample is not None:
            identity = self.downsample(x)

        out = out + identity
        out = self.relu(out)

        return out


class SEBottleneck(jx_resnet.Bottleneck):
    """jaxcnn's (torchvision's) Bottleneck (stride on the 3x3, "ResNet v1.5") plus ``se`` = SELayer(4 * planes).

    Constructor arguments are Bottleneck's. Attributes, in order: ``conv1``, ``bn1``,
    ``conv2``, ``bn2``, ``conv3``, ``bn3``, ``relu``, ``downsample`` (None or
    Sequential(conv1x1, BatchNorm2d)), ``stride``, ``se``. forward:
    relu(se(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x))))))))) + identity).

    (N, H, W, inplanes) -> (N, ceil(H / stride), ceil(W / stride), 4 * planes).
    """

    def __init__(self, *args, rngs: nnx.Rngs, **kwargs):
        super().__init__(*args, rngs=rngs, **kwargs)
        self.se = SELayer(self.bn3.num_features, rngs=rngs)

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
        out = self.se(out)

        if self.downsample is not None:
            identity = self.downsample(x)

        out = out + identity
        out = self.relu(out)

        return out


class SEResNet(jx_resnet.ResNet):
    """jaxcnn's (torchvision's) ResNet with SE blocks; same attribute names and forward.

    Attributes, in order: ``conv1`` Conv2d(3, 64, 7, 2, 3, bias=False), ``bn1``, ``relu``,
    ``maxpool`` MaxPool2d(3, 2, 1), ``layer1`` .. ``layer4``, ``avgpool``
    AdaptiveAvgPool2d(1), ``fc`` Linear(512 * expansion, num_classes). Initialisation is
    ResNet's (Kaiming-normal fan_out convs, BN weight 1 / bias 0, optional
    ``zero_init_residual``, which also covers the SE blocks as subclasses); the SE linears
    keep torch's default init. Extra keyword arguments go to
    :class:`jaxcnn.models.resnet.ResNet`.

    Input: (N, H, W, 3) NHWC, 224x224 nominal. Output: (N, num_classes).
    """

    def __init__(
        self,
        block: type[SEBasicBlock | SEBottleneck],
        layers: list[int],
        num_classes: int = 1000,
        *,
        rngs: nnx.Rngs,
        **kwargs,
    ):
        super().__init__(block, layers, num_classes=num_classes, rngs=rngs, **kwargs)


@register("se_resnet18")
def se_resnet18(*, num_classes: int = 1000, rngs: nnx.Rngs, **kwargs) -> SEResNet:
    """SE-ResNet-18 (SEBasicBlock, [2, 2, 2, 2]); input (N, H, W, 3) NHWC, output (N, num_classes)."""
    return SEResNet(SEBasicBlock, [2, 2, 2, 2], num_classes=num_classes, rngs=rngs, **kwargs)


@register("se_resnet50")
def se_resnet50(*, num_classes: int = 1000, rngs: nnx.Rngs, **kwargs) -> SEResNet:
    """SE-ResNet-50 (SEBottleneck, [3, 4, 6, 3]); input (N, H, W, 3) NHWC, output (N, num_classes)."""
    return SEResNet(SEBottleneck, [3, 4, 6, 3], num_classes=num_classes, rngs=rngs, **kwargs)
