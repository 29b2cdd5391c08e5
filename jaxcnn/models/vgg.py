"""VGG-11/13/16/19 with and without batch norm; twin of ``torchvision.models.vgg``."""

from __future__ import annotations

import jax
from flax import nnx

from jaxcnn import nn
from jaxcnn.models.registry import register
from jaxcnn.nn import functional as F
from jaxcnn.nn import init

__all__ = [
    "VGG",
    "cfgs",
    "make_layers",
    "vgg11",
    "vgg11_bn",
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "vgg19_bn",
]


class VGG(nnx.Module):
    """``torchvision.models.VGG``: a conv ``features`` stack, adaptive average pool, MLP head.

    Attributes, in order: ``features`` (a Sequential from :func:`make_layers`),
    ``avgpool`` AdaptiveAvgPool2d((7, 7)), ``classifier`` Sequential(Linear(25088, 4096),
    ReLU, Dropout, Linear(4096, 4096), ReLU, Dropout, Linear(4096, num_classes)).

    With ``init_weights`` (the default) the parameters are initialised as torchvision
    does: convs ``kaiming_normal_(mode='fan_out', nonlinearity='relu')`` with zero bias,
    BatchNorm weight 1 and bias 0, Linears ``normal_(0, 0.01)`` with zero bias.

    Input: (N, H, W, 3) NHWC, H, W >= 32 (224 nominal). Shapes at 224x224: features
    (N, 7, 7, 512) -> avgpool (N, 7, 7, 512) -> flatten in torch's C,H,W order
    (N, 25088) -> classifier (N, num_classes). Other sizes give features
    (N, H // 32, W // 32, 512), which the adaptive pool maps to 7x7 with torch's
    (possibly overlapping) windows, e.g. 32x32 gives 1x1 -> 7x7.
    """

    def __init__(
        self, features: nn.Sequential, num_classes: int = 1000, init_weights: bool = True, dropout: float = 0.5, *, rngs: nnx.Rngs
    ):
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096, rngs=rngs),
            nn.ReLU(True),
            nn.Dropout(p=dropout, rngs=rngs),
            nn.Linear(4096, 4096, rngs=rngs),
            nn.ReLU(True),
            nn.Dropout(p=dropout, rngs=rngs),
            nn.Linear(4096, num_classes, rngs=rngs),
        )
        if init_weights:
            for _, m in nnx.iter_graph(self):
                if isinstance(m, nn.Conv2d):
                    init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", rngs=rngs)
                    if m.bias is not None:
                        init.constant_(m.bias, 0)
                elif isinstance(m, nn.BatchNorm2d):
                    init.constant_(m.weight, 1)
                    init.constant_(m.bias, 0)
                elif isinstance(m, nn.Linear):
                    init.normal_(m.weight, 0, 0.01, rngs=rngs)
                    init.constant_(m.bias, 0)

    def __call__(self, x: jax.Array) -> jax.Array:
        """(N, H, W, 3) -> (N, num_classes)."""
        x = self.features(x)  # (N, H/32, W/32, 512)
        x = self.avgpool(x)  # (N, 7, 7, 512)
        x = F.flatten(x, 1, torch_order=True)  # (N, 25088)
        x = self.classifier(x)  # (N, num_classes)
        return x


def make_layers(cfg: list[str | int], batch_norm: bool = False, *, rngs: nnx.Rngs) -> nn.Sequential:
    """torchvision's ``make_layers``: each int v adds Conv2d(in, v, 3, padding=1)
    [+ BatchNorm2d(v)] + ReLU; "M" adds MaxPool2d(2, 2). Indices match torchvision's
    (e.g. cfg "A" without BN: convs at 0, 3, 6, 8, 11, 13, 16, 18, pools at 2, 5, 10, 15, 20).
    Maps (N, H, W, 3) -> (N, H // 32, W // 32, 512) (NHWC).
    """
    layers = []
    in_channels = 3
    for v in cfg:
        if v == "M":
            layers += [nn.MaxPool2d(kernel_size=2, stride=2)]
        else:
            conv2d = nn.Conv2d(in_channels, v, kernel_size=3, padding=1, rngs=rngs)
            if batch_norm:
                layers += [conv2d, nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
            else:
                layers += [conv2d, nn.ReLU(inplace=True)]
            in_channels = v
    return nn.Sequential(*layers)


cfgs: dict[str, list[str | int]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


def _vgg(cfg: str, batch_norm: bool, *, num_classes: int, init_weights: bool, dropout: float, rngs: nnx.Rngs) -> VGG:
    features = make_layers(cfgs[cfg], batch_norm=batch_norm, rngs=rngs)
    return VGG(features, num_classes=num_classes, init_weights=init_weights, dropout=dropout, rngs=rngs)


def _builder(name: str, cfg: str, batch_norm: bool):
    def build(*, num_classes: int = 1000, init_weights: bool = True, dropout: float = 0.5, rngs: nnx.Rngs) -> VGG:
        return _vgg(cfg, batch_norm, num_classes=num_classes, init_weights=init_weights, dropout=dropout, rngs=rngs)

    depth = name[3:5]
    build.__name__ = build.__qualname__ = name
    build.__doc__ = (
        f"VGG-{depth}{' with batch norm' if batch_norm else ''} (cfg {cfg!r}) as "
        f"``torchvision.models.{name}(weights=None, ...)``; input (N, H, W, 3) NHWC, H, W >= 32, "
        "output (N, num_classes)."
    )
    return register(name)(build)


vgg11 = _builder("vgg11", "A", False)
vgg11_bn = _builder("vgg11_bn", "A", True)
vgg13 = _builder("vgg13", "B", False)
vgg13_bn = _builder("vgg13_bn", "B", True)
vgg16 = _builder("vgg16", "D", False)
vgg16_bn = _builder("vgg16_bn", "D", True)
vgg19 = _builder("vgg19", "E", False)
vgg19_bn = _builder("vgg19_bn", "E", True)
