"""Model-level parity for the ResNet family: torchvision ResNet-18/34/50/101/152, the course's
CIFAR ResNets and the SE-ResNets (``jaxcnn.models.{resnet,cifar_resnet,se_resnet}``).

Every model: the torch state dict round-trips bit for bit, eval logits and the features after
every stage (plus some blocks and downsample branches) agree, and one train-mode step
(outputs, the gradient of every parameter, BatchNorm running statistics) agrees, all at
``RTOL = 1e-5`` relative to each tensor's largest magnitude, at batch 2.

Input sizes. ImageNet-style models (stride 32) run at 32 (even: 16, 8, 8, 4, 2, 1 through the
stem, max-pool and stages) and 33 (odd: 17, 9, 9, 5, 3, 2, so every stride-2 conv and the
max-pool see odd maps). Their *train* steps run at 33, not 32: at 32 the layer4 map is 1x1, so
in training mode each layer4 BatchNorm normalises only 2 values per channel (batch 2), which is
ill-conditioned -- torch float32 itself is ~7e-2 away from a float64 torch run at layer4 there,
and jaxcnn is no further from float64 than torch is. At 33 (2x2 map, 8 values per channel) both
agree with float64 to ~5e-6. The even-size train step uses 64 (2x2 layer4 map) for the cheaper
models. CIFAR ResNets (fixed 4x4 average pool on layer4) accept 25..56 pixels per side; they
run at 32 (layer4 4x4) and 33 (layer4 5x5, the pool drops the last row/column).

The jaxcnn twins are built with ``make_pair(..., abstract_init=True)`` (shapes only; every
weight is then loaded from torch), which skips tens of CPU seconds of per-shape compilation of
random initialisers; initialisation is tested in ``tests/test_models_resnet_init.py``.

ResNet-101/152 train steps are ``slow`` (run with ``--runslow`` or ``JAXCNN_RUNSLOW=1``);
their default-run check is the round trip plus eval at both sizes with all stage features.
"""

import os

import pytest
import torch

from model_harness import check_eval, check_round_trip, check_train_step, make_pair, torch_input

IMAGENET_FEATURES = ("layer1", "layer2", "layer3", "layer4", "layer1.0", "layer2.0", "layer2.0.downsample", "layer4.0.downsample")
LABELS = torch.tensor([3, 7])


def _ordered(features):
    """Deepest paths first: the JAX recorder wraps ``layer1`` in a stand-in, so ``layer1.0``
    must be resolved (and wrapped) before its parent is."""
    return tuple(sorted(features, key=lambda name: -name.count(".")))


def _features(name: str) -> tuple[str, ...]:
    if name.startswith("cifar_"):
        return _ordered(("layer1", "layer2", "layer3", "layer4", "layer1.0", "layer2.0", "layer2.0.shortcut", "layer4.1"))
    features = IMAGENET_FEATURES + ("layer3.1",)
    if name.startswith("se_"):
        features += ("layer1.0.se", "layer4.0.se")
    return _ordered(features)


def _skip_unless_runslow(request):
    if not (request.config.getoption("--runslow", default=False) or os.environ.get("JAXCNN_RUNSLOW")):
        pytest.skip("slow: run with --runslow or JAXCNN_RUNSLOW=1")


IMAGENET_MODELS = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "se_resnet18", "se_resnet50"]
DEEP_MODELS = ("resnet101", "resnet152")
EVEN_TRAIN_MODELS = ("resnet18", "se_resnet18")
CIFAR_MODELS = ["cifar_resnet18", "cifar_resnet34", "cifar_resnet50"]


@pytest.mark.parametrize("name", IMAGENET_MODELS)
def test_imagenet_resnet_parity(name):
    """Round trip, eval at 32 and 33 with stage/block features, train step at 33 (and 64 for the
    18-layer models). ResNet-101/152 train steps are in the slow test below."""
    torch_model, jax_model = make_pair(name, abstract_init=True)
    check_round_trip(torch_model, jax_model)
    for size in (32, 33):
        check_eval(torch_model, jax_model, torch_input((2, 3, size, size), seed=size), features=_features(name))
    if name in DEEP_MODELS:
        return
    check_train_step(torch_model, jax_model, torch_input((2, 3, 33, 33), seed=1), LABELS)
    if name in EVEN_TRAIN_MODELS:
        check_train_step(torch_model, jax_model, torch_input((2, 3, 64, 64), seed=2), LABELS)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet50", *DEEP_MODELS, "se_resnet50"])
def test_deep_resnet_train_steps(name, request):
    """Train steps of the deep models at 33 (odd) and 64 (even, 2x2 layer4 map)."""
    _skip_unless_runslow(request)
    torch_model, jax_model = make_pair(name, abstract_init=True)
    for size in (33, 64):
        check_train_step(torch_model, jax_model, torch_input((2, 3, size, size), seed=size), LABELS)


@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_cifar_resnet_parity(name):
    """Round trip, eval and a train step at 32 (layer4 4x4) and 33 (layer4 5x5)."""
    torch_model, jax_model = make_pair(name, abstract_init=True)
    check_round_trip(torch_model, jax_model)
    for size in (32, 33):
        x = torch_input((2, 3, size, size), seed=size)
        check_eval(torch_model, jax_model, x, features=_features(name))
        check_train_step(torch_model, jax_model, x, LABELS)


@pytest.mark.parametrize(
    "options",
    [
        {"zero_init_residual": True, "num_classes": 10},
        {"groups": 4, "width_per_group": 16},
        {"replace_stride_with_dilation": [False, True, True]},
    ],
    ids=["zero_init_residual", "grouped", "dilated"],
)
def test_resnet50_options(options):
    """torchvision's options build the same graph: keys/shapes load, eval agrees (and a train
    step for the grouped-conv ResNeXt-style variant)."""
    torch_model, jax_model = make_pair("resnet50", abstract_init=True, **options)
    check_round_trip(torch_model, jax_model)
    check_eval(torch_model, jax_model, torch_input((2, 3, 33, 33), seed=3), features=_ordered(IMAGENET_FEATURES))
    if "groups" in options:
        check_train_step(torch_model, jax_model, torch_input((2, 3, 33, 33), seed=4), LABELS)
