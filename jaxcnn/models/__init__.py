"""The jaxcnn model zoo (Flax NNX, NHWC inputs), each model the twin of its ``torch_ref`` model.

Every model class and constructor is importable by name (``from jaxcnn.models import
resnet50, ResNet``); ``create(name, num_classes=..., rngs=...)`` builds one by its registry
name (the constructor's name), ``create(name, weights=path)`` loads a torch checkpoint into
it without initialising, ``create_abstract(name)`` gives shapes only, ``names()`` lists them.
"""

from jaxcnn.models.registry import create, create_abstract, input_size, names, register
from jaxcnn.models.mlp import MLP, mlp
from jaxcnn.models.mnist_cnn import MnistCNN, mnist_cnn
from jaxcnn.models.cifar_cnn import CifarCNN, cifar_cnn
from jaxcnn.models.gap_vgg import GapVGG, gap_vgg
from jaxcnn.models.lenet import LeNet5, lenet5
from jaxcnn.models.alexnet import AlexNet, alexnet
from jaxcnn.models.vgg import VGG, vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, vgg16_bn, vgg19, vgg19_bn
from jaxcnn.models.cifar_vgg import CifarVGG, cifar_vgg11, cifar_vgg13, cifar_vgg16, cifar_vgg19
from jaxcnn.models.googlenet import GoogLeNet, GoogLeNetOutputs, googlenet
from jaxcnn.models.resnet import (
    ResNet,
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    resnet152,
    resnext50_32x4d,
    resnext101_32x8d,
    wide_resnet50_2,
    wide_resnet101_2,
)
from jaxcnn.models.cifar_resnet import CifarResNet, cifar_resnet18, cifar_resnet34, cifar_resnet50
from jaxcnn.models.se_resnet import SEResNet, se_resnet18, se_resnet50
from jaxcnn.models.densenet import DenseNet, densenet121, densenet161, densenet169, densenet201

__all__ = [
    # registry
    "create",
    "create_abstract",
    "input_size",
    "names",
    "register",
    # course models
    "MLP",
    "mlp",
    "MnistCNN",
    "mnist_cnn",
    "CifarCNN",
    "cifar_cnn",
    "GapVGG",
    "gap_vgg",
    "LeNet5",
    "lenet5",
    "CifarVGG",
    "cifar_vgg11",
    "cifar_vgg13",
    "cifar_vgg16",
    "cifar_vgg19",
    "CifarResNet",
    "cifar_resnet18",
    "cifar_resnet34",
    "cifar_resnet50",
    "SEResNet",
    "se_resnet18",
    "se_resnet50",
    # torchvision's
    "AlexNet",
    "alexnet",
    "VGG",
    "vgg11",
    "vgg11_bn",
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "vgg19_bn",
    "GoogLeNet",
    "GoogLeNetOutputs",
    "googlenet",
    "ResNet",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "wide_resnet50_2",
    "wide_resnet101_2",
    "DenseNet",
    "densenet121",
    "densenet161",
    "densenet169",
    "densenet201",
]
