"""Model registry for the PyTorch reference architectures.

``create(name, num_classes=..., **options)`` builds a freshly initialised
model; ``names()`` lists the valid names.  Models listed in
:mod:`torch_ref.models.torchvision_models` are torchvision's own; the others
(course models, CIFAR variants, SE-ResNets) are defined in this package.
All models take NCHW float input.
"""

from typing import Any, Callable

import torch.nn as nn

from torch_ref.models.cifar_cnn import CifarCNN, cifar_cnn
from torch_ref.models.cifar_resnet import CifarResNet, cifar_resnet18, cifar_resnet34, cifar_resnet50
from torch_ref.models.cifar_vgg import CifarVGG, cifar_vgg11, cifar_vgg13, cifar_vgg16, cifar_vgg19
from torch_ref.models.gap_vgg import GapVGG, gap_vgg
from torch_ref.models.lenet import LeNet5, lenet5
from torch_ref.models.mlp import MLP, mlp
from torch_ref.models.mnist_cnn import MnistCNN, mnist_cnn
from torch_ref.models.se_resnet import SELayer, SEResNet, se_resnet18, se_resnet50
from torch_ref.models.torchvision_models import TORCHVISION_MODELS

__all__ = [
    "create",
    "names",
    "MLP",
    "MnistCNN",
    "CifarCNN",
    "LeNet5",
    "GapVGG",
    "CifarVGG",
    "CifarResNet",
    "SELayer",
    "SEResNet",
]

# name -> builder(*, num_classes=<model default>, **options) -> nn.Module
_MODELS: dict[str, Callable[..., nn.Module]] = {
    # Course models, input sizes in brackets.
    "mlp": mlp,  # (N, 1, 28, 28)
    "mnist_cnn": mnist_cnn,  # (N, 1, 28, 28)
    "lenet5": lenet5,  # (N, 1, 32, 32)
    "cifar_cnn": cifar_cnn,  # (N, 3, 32, 32)
    "gap_vgg": gap_vgg,  # (N, 3, H, W), H, W >= 32; returns (logits, features)
    "cifar_vgg11": cifar_vgg11,  # (N, 3, 32, 32)
    "cifar_vgg13": cifar_vgg13,
    "cifar_vgg16": cifar_vgg16,
    "cifar_vgg19": cifar_vgg19,
    "cifar_resnet18": cifar_resnet18,  # (N, 3, 32, 32)
    "cifar_resnet34": cifar_resnet34,
    "cifar_resnet50": cifar_resnet50,
    "se_resnet18": se_resnet18,  # (N, 3, H, W), ImageNet-style
    "se_resnet50": se_resnet50,
    # torchvision's models, (N, 3, H, W), ImageNet-style.
    **TORCHVISION_MODELS,
}


def names() -> list[str]:
    """All model names accepted by :func:`create`, sorted."""
    return sorted(_MODELS)


def create(name: str, *, num_classes: int | None = None, **options: Any) -> nn.Module:
    """Build the model ``name`` with fresh (untrained) weights.

    Args:
        name: one of :func:`names`.
        num_classes: output classes; ``None`` means the model's default (10
            for the course/CIFAR models and ``gap_vgg``, 1000 for torchvision
            models and ``se_resnet*``).
        **options: passed to the builder (e.g. ``zero_init_residual`` for
            resnets and se_resnets, ``aux_logits`` / ``transform_input`` /
            ``init_weights`` for googlenet).  Unknown options raise TypeError.

    Returns:
        An ``nn.Module`` in train mode taking NCHW input and returning
        (N, num_classes) logits (``gap_vgg`` returns ``(logits, features)``).

    Raises:
        ValueError: ``name`` is not a known model.
    """
    try:
        builder = _MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(names())}") from None
    if num_classes is not None:
        options["num_classes"] = num_classes
    return builder(**options)
