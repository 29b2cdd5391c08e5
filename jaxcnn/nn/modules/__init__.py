"""Layer modules of ``jaxcnn.nn`` (Flax NNX), named and configured as in ``torch.nn``."""

from jaxcnn.nn.modules.activation import LeakyReLU, ReLU, Sigmoid, Tanh
from jaxcnn.nn.modules.batchnorm import BatchNorm1d, BatchNorm2d
from jaxcnn.nn.modules.container import Sequential
from jaxcnn.nn.modules.conv import Conv2d
from jaxcnn.nn.modules.dropout import Dropout
from jaxcnn.nn.modules.flatten import Flatten
from jaxcnn.nn.modules.linear import Identity, Linear
from jaxcnn.nn.modules.pooling import AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d, MaxPool2d

__all__ = [
    "AdaptiveAvgPool2d",
    "AdaptiveMaxPool2d",
    "AvgPool2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "Conv2d",
    "Dropout",
    "Flatten",
    "Identity",
    "LeakyReLU",
    "Linear",
    "MaxPool2d",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Tanh",
]
