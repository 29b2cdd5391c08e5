"""The ResNet family is initialised as its torch twin: torchvision's scheme for ResNet/SE-ResNet
(Kaiming-normal fan_out convs, BatchNorm 1/0, ``zero_init_residual``, torch-default Linear
layers) and PyTorch's defaults for the course's CIFAR ResNet.

Building a model compiles each eager initialiser once per distinct weight shape (seconds of
CPU each), so the tests reuse the few shapes of ResNet-18 and one one-block-per-stage
SE-ResNet with Bottlenecks; the per-tensor checks cover every tensor of those models.
"""

import math

import numpy as np
import pytest
import torch
from flax import nnx

import jaxcnn.models
import torch_ref.models
from jaxcnn.convert import to_torch_arrays
from jaxcnn.models import resnet, se_resnet
from torch_ref.models import se_resnet as torch_se_resnet

MIN_SIZE = 10_000  # tensors at least this large have a sample std within a few % of the truth
STD_RTOL = 0.1


def kaiming_fan_out_std(shape) -> float:
    """torchvision's conv init: N(0, 2 / fan_out), fan_out = out_channels * kH * kW (OIHW)."""
    return math.sqrt(2.0 / (shape[0] * math.prod(shape[2:])))


def default_bound(shape) -> float:
    """torch's default Conv/Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = in * kH * kW."""
    return 1.0 / math.sqrt(math.prod(shape[1:]))


def check_like_torch(jax_model, torch_model) -> int:
    """Every state-dict tensor: constants exactly equal to torch's; large random tensors with
    torch's std (within 10%) and a mean near 0. Returns how many random tensors were compared."""
    ours = to_torch_arrays(jax_model)
    reference = torch_model.state_dict()
    assert sorted(ours) == sorted(reference)
    compared = 0
    for key, tensor in reference.items():
        expected = tensor.numpy().astype(np.float64)
        actual = ours[key].astype(np.float64)
        assert actual.shape == expected.shape, key
        if np.all(expected == expected.flat[0]):
            np.testing.assert_array_equal(actual, expected, err_msg=f"{key} is a constant in torch")
        elif expected.size >= MIN_SIZE:
            assert actual.std() == pytest.approx(expected.std(), rel=STD_RTOL), key
            assert abs(actual.mean()) <= 0.05 * expected.std(), key
            compared += 1
    return compared


@pytest.fixture(scope="module")
def resnet18_pair():
    torch.manual_seed(0)
    return jaxcnn.models.create("resnet18", rngs=nnx.Rngs(0)), torch_ref.models.create("resnet18")


def test_resnet18_init_matches_torchvision(resnet18_pair):
    jax_model, torch_model = resnet18_pair
    assert check_like_torch(jax_model, torch_model) >= 15
    arrays = to_torch_arrays(jax_model)
    for key, value in arrays.items():
        if key.endswith("weight") and value.ndim == 4 and value.size >= MIN_SIZE:
            assert value.std() == pytest.approx(kaiming_fan_out_std(value.shape), rel=STD_RTOL), key
    bound = default_bound(arrays["fc.weight"].shape)
    assert np.abs(arrays["fc.weight"]).max() <= bound
    assert np.abs(arrays["fc.bias"]).max() <= bound
    assert arrays["fc.weight"].std() == pytest.approx(bound / math.sqrt(3), rel=STD_RTOL)


def test_resnet18_zero_init_residual(resnet18_pair):
    model = jaxcnn.models.create("resnet18", rngs=nnx.Rngs(1), zero_init_residual=True)
    arrays = to_torch_arrays(model)
    for layer in range(1, 5):
        for block in range(2):
            prefix = f"layer{layer}.{block}"
            assert np.all(arrays[f"{prefix}.bn2.weight"] == 0), prefix
            assert np.all(arrays[f"{prefix}.bn1.weight"] == 1), prefix
    assert np.all(arrays["bn1.weight"] == 1)
    assert np.all(arrays["layer2.0.downsample.1.weight"] == 1)


def test_se_resnet18_init_matches_torch():
    """Convs Kaiming (ResNet's loop), SE linears keep torch's default init."""
    torch.manual_seed(0)
    jax_model = jaxcnn.models.create("se_resnet18", rngs=nnx.Rngs(0))
    check_like_torch(jax_model, torch_ref.models.create("se_resnet18"))
    arrays = to_torch_arrays(jax_model)
    fc1 = arrays["layer4.1.se.fc1.weight"]  # (32, 512)
    assert np.abs(fc1).max() <= default_bound(fc1.shape)
    assert fc1.std() == pytest.approx(default_bound(fc1.shape) / math.sqrt(3), rel=STD_RTOL)


def test_se_bottleneck_zero_init_residual():
    """zero_init_residual reaches the SE subclasses of Bottleneck (bn3), as torchvision's isinstance check does."""
    torch.manual_seed(0)
    model = se_resnet.SEResNet(se_resnet.SEBottleneck, [1, 1, 1, 1], num_classes=10, zero_init_residual=True, rngs=nnx.Rngs(0))
    reference = torch_se_resnet.SEResNet(torch_se_resnet.SEBottleneck, [1, 1, 1, 1], num_classes=10, zero_init_residual=True)
    check_like_torch(model, reference)
    blocks = [module for _, module in nnx.iter_graph(model) if isinstance(module, resnet.Bottleneck)]
    assert len(blocks) == 4 and all(isinstance(block, se_resnet.SEBottleneck) for block in blocks)
    for block in blocks:
        assert np.all(np.asarray(block.bn3.weight.get_value()) == 0)
        assert np.all(np.asarray(block.bn2.weight.get_value()) == 1)


def test_cifar_resnet18_init_is_torch_default():
    torch.manual_seed(0)
    jax_model = jaxcnn.models.create("cifar_resnet18", rngs=nnx.Rngs(0))
    assert check_like_torch(jax_model, torch_ref.models.create("cifar_resnet18")) >= 15
    for key, value in to_torch_arrays(jax_model).items():
        if key.endswith("weight") and value.ndim in (2, 4) and value.size >= MIN_SIZE:
            bound = default_bound(value.shape)
            assert np.abs(value).max() <= bound, key
            assert value.std() == pytest.approx(bound / math.sqrt(3), rel=STD_RTOL), key
