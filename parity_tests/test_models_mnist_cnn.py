"""Model-level parity for the MNIST CNN (the template for the other model parity files)."""

import torch

from model_harness import check_eval, check_round_trip, check_train_step, make_pair, torch_input


def test_mnist_cnn_parity():
    torch_model, jax_model = make_pair("mnist_cnn")
    check_round_trip(torch_model, jax_model)
    x = torch_input((3, 1, 28, 28))
    check_eval(torch_model, jax_model, x, features=("conv1", "conv2", "fc1"))
    check_train_step(torch_model, jax_model, x, torch.tensor([1, 7, 3]))
