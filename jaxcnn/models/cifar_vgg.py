"""VGG with batch norm for 32x32 inputs (kuangliu/pytorch-cifar style); twin of ``torch_ref.models.cifar_vgg``."""

from __future__ import annotations

import jax
from flax import nnx

from jaxcnn import nn
from jaxcnn.models.registry import register
from jaxcnn.nn import functional as F

__all__ = ["CifarVGG", "CIFAR_VGG_CFGS", "cifar_vgg11", "cifar_vgg13", "cifar_vgg16", "cifar_vgg19", "make_layers"]

# The torchvision cfgs A/B/D/E: ints are 3x3 conv output channels, "M" is MaxPool2d(2, 2).
CIFAR_VGG_CFGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


def make_layers(cfg: list[int | str], in_channels: int = 3, *, rngs: nnx.Rngs) -> nn.Sequential:
    """Feature stack: each int c adds [Conv2d(in, c, 3, padding=1), BatchNorm2d(c), ReLU]; "M" adds MaxPool2d(2, 2).

    The Sequential indexing is the same as torchvision's ``vgg*_bn`` features
    (e.g. vgg11: conv 0, bn 1, relu 2, pool 3, conv 4, bn 5, ...).
    Maps (N, H, W, in_channels) -> (N, H // 32, W // 32, 512) (NHWC).
    """
    layers = []
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers.append(nn.Conv2d(in_channels, v, kernel_size=3, padding=1, rngs=rngs))
            layers.append(nn.BatchNorm2d(v))
            layers.append(nn.ReLU(inplace=True))
            in_channels = v
    return nn.Sequential(*layers)


class CifarVGG(nnx.Module):
    """VGG-11/13/16/19 with batch norm and a single linear classifier, for 32x32 images.

    ``cfg_name`` is one of ``"vgg11"``, ``"vgg13"``, ``"vgg16"``, ``"vgg19"``
    (torchvision cfgs A, B, D, E). Attributes, in order: ``features``
    nn.Sequential (see :func:`make_layers`), ``classifier`` Linear(512,
    num_classes). PyTorch default initialisation (as in kuangliu's code).

    Input: (N, 32, 32, 3) NHWC (32..63 all work). features -> (N, 1, 1, 512) ->
    flatten (N, 512) -> classifier (N, num_classes).
    """

    def __init__(self, cfg_name: str, num_classes: int = 10, *, rngs: nnx.Rngs):
        if cfg_name not in CIFAR_VGG_CFGS:
            raise ValueError(f"unknown VGG config {cfg_name!r}; valid: {sorted(CIFAR_VGG_CFGS)}")
        self.features = make_layers(CIFAR_VGG_CFGS[cfg_name], rngs=rngs)
        self.classifier = nn.Linear(512, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """(N, 32, 32, 3) -> (N, num_classes)."""
        x = self.features(x)  # (N, 1, 1, 512)
        x = F.flatten(x, 1, torch_order=True)  # (N, 512)
        x = self.classifier(x)  # (N, num_classes)
        return x


@register("cifar_vgg11", input_size=(32, 32, 3))
def cifar_vgg11(*, num_classes: int = 10, rngs: nnx.Rngs) -> CifarVGG:
    """VGG-11-BN for (N, 32, 32, 3) NHWC inputs; output (N, num_classes)."""
    return CifarVGG("vgg11", num_classes=num_classes, rngs=rngs)


@register("cifar_vgg13", input_size=(32, 32, 3))
def cifar_vgg13(*, num_classes: int = 10, rngs: nnx.Rngs) -> CifarVGG:
    """VGG-13-BN for (N, 32, 32, 3) NHWC inputs; output (N, num_classes)."""
    return CifarVGG("vgg13", num_classes=num_classes, rngs=rngs)


@register("cifar_vgg16", input_size=(32, 32, 3))
def cifar_vgg16(*, num_classes: int = 10, rngs: nnx.Rngs) -> CifarVGG:
    """VGG-16-BN for (N, 32, 32, 3) NHWC inputs; output (N, num_classes)."""
    return CifarVGG("vgg16", num_classes=num_classes, rngs=rngs)


@register("cifar_vgg19", input_size=(32, 32, 3))
def cifar_vgg19(*, num_classes: int = 10, rngs: nnx.Rngs) -> CifarVGG:
    """VGG-19-BN for (N, 32, 32, 3) NHWC inputs; output (N, num_classes)."""
    return CifarVGG("vgg19", num_classes=num_classes, rngs=rngs)
