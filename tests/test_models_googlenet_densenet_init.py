"""GoogLeNet and DenseNet are initialised like torchvision's.

GoogLeNet (``init_weights=True``): conv and linear weights ``trunc_normal_(std=0.01, a=-2,
b=2)``, linear biases keep torch's default ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``,
BatchNorm scale 1 and shift 0. DenseNet: conv weights ``kaiming_normal_`` (std
``sqrt(2 / fan_in)``), the classifier's weight torch's default uniform and its bias 0,
BatchNorm 1 / 0. Every ``state_dict`` entry that torch fills with one constant must be that
constant exactly; every random tensor with at least ``MIN_SIZE`` entries must have the
expected standard deviation (checked on torch's tensor too, so the expectation is torch's
behaviour) and a mean near 0.

The jaxcnn models are built inside one ``jax.jit`` (the same random numbers as an eager
build, but one compilation instead of one per distinct weight shape).
"""

import math

import jax
import numpy as np
import torch
import torchvision
from flax import nnx

from jaxcnn.convert import to_torch_arrays
from jaxcnn.models.densenet import DenseNet
from jaxcnn.models.googlenet import GoogLeNet

MIN_SIZE = 1000
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _build(constructor):
    """``constructor()`` run as one compiled function; returns the model."""
    static = {}

    def build():
        graphdef, state = nnx.split(constructor())
        static["graphdef"] = graphdef  # static structure, no arrays: safe to keep from the trace
        return state

    state = jax.jit(build, compiler_options=FAST_COMPILE)()
    return nnx.merge(static["graphdef"], state)


def _check(torch_model: torch.nn.Module, jax_model: nnx.Module, expected_std) -> int:
    """Compare every state_dict entry; ``expected_std(key, torch_shape)`` is the init std of a random tensor."""
    ours = to_torch_arrays(jax_model)
    theirs = torch_model.state_dict()
    assert sorted(ours) == sorted(theirs)
    checked = 0
    for key, tensor in theirs.items():
        expected = tensor.detach().numpy().astype(np.float64)
        actual = ours[key].astype(np.float64)
        assert actual.shape == expected.shape, key
        if expected.size and np.all(expected == expected.flat[0]):
            np.testing.assert_array_equal(actual, expected, err_msg=f"{key}: torch initialises it to a constant")
            continue
        std = expected_std(key, tuple(expected.shape))
        if expected.size >= MIN_SIZE:
            for name, values in (("jaxcnn", actual), ("torch", expected)):
                assert abs(values.std() / std - 1) < 0.1, f"{key}: {name} init std {values.std():.4g}, expected {std:.4g}"
                assert abs(values.mean()) < 0.15 * std, f"{key}: {name} init mean {values.mean():.4g} (std {std:.4g})"
            checked += 1
    return checked


def _fan_in(shape) -> int:
    return math.prod(shape[1:])


def test_googlenet_init_matches_torchvision():
    torch.manual_seed(0)
    torch_model = torchvision.models.googlenet(weights=None, init_weights=True)
    jax_model = _build(lambda: GoogLeNet(init_weights=True, rngs=nnx.Rngs(0)))

    def expected_std(key, shape):
        if key.endswith(".bias"):  # Linear biases: torch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in))
            fan_in = dict(torch_model.named_parameters())[key[: -len("bias")] + "weight"].shape[1]
            return 1.0 / math.sqrt(fan_in) / math.sqrt(3.0)
        return 0.01  # trunc_normal_(std=0.01, a=-2, b=2): +-200 std, so the truncation is invisible

    assert _check(torch_model, jax_model, expected_std) > 50
    weights = [value for key, value in to_torch_arrays(jax_model).items() if key.endswith("weight") and value.ndim > 1]
    assert max(float(np.abs(w).max()) for w in weights) <= 2.0


def test_densenet_init_matches_torchvision():
    # densenet121's widths with shorter blocks: the same init code, a quarter of the layers.
    config = dict(growth_rate=32, block_config=(2, 3, 4, 3), num_init_features=64, num_classes=1000)
    torch.manual_seed(0)
    torch_model = torchvision.models.DenseNet(**config)
    jax_model = _build(lambda: DenseNet(**config, rngs=nnx.Rngs(0)))

    def expected_std(key, shape):
        if key == "classifier.weight":  # torch's default kaiming_uniform_(a=sqrt(5)): U(+-1/sqrt(fan_in))
            return 1.0 / math.sqrt(_fan_in(shape)) / math.sqrt(3.0)
        assert len(shape) == 4, key
        return math.sqrt(2.0 / _fan_in(shape))  # kaiming_normal_: gain sqrt(2), mode fan_in

    assert _check(torch_model, jax_model, expected_std) > 20
