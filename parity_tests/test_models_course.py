"""Model-level parity for the course models: mlp, lenet5, cifar_cnn, gap_vgg.

Each model: the torch_ref state dict loads unchanged and round-trips bit-exactly, eval
logits and every stage's features agree, a training step agrees (outputs, the gradient of
every parameter), at an even and an odd input size where the architecture accepts one.
The jaxcnn twins are built with ``abstract_init=True`` (every weight comes from torch);
PyTorch's default initialisation, which all four use, is checked on its own below.
"""

import pytest
import torch

from model_harness import check_eval, check_init_statistics, check_round_trip, check_train_step, make_pair, torch_input


def test_mlp_parity():
    torch_model, jax_model = make_pair("mlp", abstract_init=True)
    check_round_trip(torch_model, jax_model)
    x = torch_input((2, 1, 28, 28))  # 784 inputs per sample: 28x28 is the only image size
    # mlp runs eagerly (op by op), the other models under jit (cheaper to compile).
    check_eval(torch_model, jax_model, x, features=("fc1", "fc2"))
    check_train_step(torch_model, jax_model, x, torch.tensor([3, 8]))  # eager, op by op


@pytest.mark.parametrize("side", [32, 35])  # 32..35 all flatten to 16 x 5 x 5
def test_lenet5_parity(side):
    torch_model, jax_model = make_pair("lenet5", abstract_init=True)
    check_round_trip(torch_model, jax_model)
    x = torch_input((2, 1, side, side), seed=side)
    check_eval(torch_model, jax_model, x, features=("conv1", "conv2", "fc1", "fc2"), jit=True)
    check_train_step(torch_model, jax_model, x, torch.tensor([0, 9]), jit=True)


@pytest.mark.parametrize("side", [32, 35])  # 32..39 all flatten to 64 x 4 x 4
def test_cifar_cnn_parity(side):
    torch_model, jax_model = make_pair("cifar_cnn", abstract_init=True)
    check_round_trip(torch_model, jax_model)
    x = torch_input((2, 3, side, side), seed=side)
    features = ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2")
    check_eval(torch_model, jax_model, x, features=features, jit=True)
    check_train_step(torch_model, jax_model, x, torch.tensor([4, 1]), jit=True)


# The output of every stage (each MaxPool), deepest names last so a stage's recorder
# never hides the Sequential that holds it.
GAP_VGG_FEATURES = ("conv.4", "conv.9", "conv.16", "conv.23", "conv.30", "conv", "classifier")


def test_gap_vgg_parity():
    torch_model, jax_model = make_pair("gap_vgg", abstract_init=True)
    check_round_trip(torch_model, jax_model)
    # Odd, non-square input: 65x97 -> (2, 3) feature map; both outputs (logits, features) compared.
    check_eval(torch_model, jax_model, torch_input((1, 3, 65, 97), seed=1), features=GAP_VGG_FEATURES, jit=True)
    # Even input, training step: 32x64 -> (1, 2) feature map, so the GAP averages over more than one cell.
    # The loss is the cross-entropy of the logits only (output 1 is the feature map);
    # both outputs are still compared.
    x = torch_input((2, 3, 32, 64), seed=2)
    check_train_step(torch_model, jax_model, x, torch.tensor([2, 5]), logits_outputs=1, jit=True)


@pytest.mark.parametrize("name", ["mlp", "lenet5", "cifar_cnn"])
def test_course_init_matches_torch(name):
    # PyTorch's default init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases,
    # which jaxcnn's Conv2d and Linear reproduce. gap_vgg, alexnet and the CIFAR VGGs use
    # the same defaults (cifar_vgg11's, with BatchNorm, is checked in test_models_vgg.py).
    ratios = check_init_statistics(name)
    assert ratios, "no parameter large enough to compare"
