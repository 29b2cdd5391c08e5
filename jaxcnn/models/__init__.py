"""The jaxcnn model zoo (Flax NNX, NHWC inputs), each model the twin of its ``torch_ref`` model.

``create(name, num_classes=..., rngs=...)`` builds one; ``names()`` lists them.
"""

import importlib

from jaxcnn.models.registry import create, input_size, names, register

_FAMILIES = (
    "mlp",
    "mnist_cnn",
    "cifar_cnn",
    "gap_vgg",
    "lenet",
    "alexnet",
    "vgg",
    "cifar_vgg",
    "googlenet",
    "resnet",
    "cifar_resnet",
    "se_resnet",
    "densenet",
)

for _family in _FAMILIES:
    importlib.import_module(f"jaxcnn.models.{_family}")

__all__ = ["create", "input_size", "names", "register"]
