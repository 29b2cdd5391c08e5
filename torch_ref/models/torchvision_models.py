"""Architectures whose reference is torchvision's own model (always built with ``weights=None``).

Each builder here returns ``torchvision.models.<name>(weights=None,
num_classes=num_classes, **options)``; nothing is downloaded.  Inputs are
(N, 3, H, W) ImageNet-style images (224x224 nominal); outputs (N, num_classes).
"""

from typing import Any, Callable

import torch.nn as nn
import torchvision

__all__ = ["TORCHVISION_MODELS", "TORCHVISION_NAMES", "torchvision_builder", "googlenet"]


def torchvision_builder(tv_name: str) -> Callable[..., nn.Module]:
    """A builder ``(*, num_classes=1000, **options) -> torchvision.models.<tv_name>(weights=None, ...)``."""
    tv_fn = getattr(torchvision.models, tv_name)

    def build(*, num_classes: int = 1000, **options: Any) -> nn.Module:
        return tv_fn(weights=None, num_classes=num_classes, **options)

    build.__name__ = tv_name
    build.__qualname__ = tv_name
    build.__doc__ = (
        f"``torchvision.models.{tv_name}(weights=None, num_classes=num_classes, **options)``; "
        "input (N, 3, H, W), output (N, num_classes)."
    )
    return build


def googlenet(
    *,
    num_classes: int = 1000,
    aux_logits: bool = True,
    transform_input: bool = False,
    init_weights: bool = True,
    **options: Any,
) -> nn.Module:
    """``torchvision.models.googlenet(weights=None, ...)`` with ``init_weights=True`` by default.

    ``aux_logits`` (torchvision's default True) adds the ``aux1``/``aux2``
    heads; in train mode the model then returns ``GoogLeNetOutputs(logits,
    aux_logits2, aux_logits1)``, in eval mode (or with ``aux_logits=False``)
    a plain (N, num_classes) tensor.  ``transform_input`` re-normalises
    ImageNet-normalised input to the (x - 0.5) / 0.5 convention.
    Input (N, 3, H, W), 224x224 nominal.
    """
    return torchvision.models.googlenet(
        weights=None,
        num_classes=num_classes,
        aux_logits=aux_logits,
        transform_input=transform_input,
        init_weights=init_weights,
        **options,
    )


# Every torchvision-backed model name, in torchvision's family order.
TORCHVISION_NAMES = [
    "alexnet",
    "vgg11",
    "vgg13",
    "vgg16",
    "vgg19",
    "vgg11_bn",
    "vgg13_bn",
    "vgg16_bn",
    "vgg19_bn",
    "googlenet",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "wide_resnet50_2",
    "wide_resnet101_2",
    "densenet121",
    "densenet161",
    "densenet169",
    "densenet201",
]

# name -> builder, for every torchvision-backed model (googlenet with its own defaults).
TORCHVISION_MODELS: dict[str, Callable[..., nn.Module]] = {
    name: googlenet if name == "googlenet" else torchvision_builder(name) for name in TORCHVISION_NAMES
}
