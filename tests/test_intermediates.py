"""record_outputs / get_submodule: torch-style forward hooks for NNX models."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxcnn import models
from jaxcnn.intermediates import get_submodule, record_outputs


@pytest.fixture(scope="module")
def mnist_cnn():
    return models.create("mnist_cnn", rngs=nnx.Rngs(0))


def test_records_named_outputs_in_nhwc_and_restores_the_model(mnist_cnn):
    conv1, fc1 = mnist_cnn.conv1, mnist_cnn.fc1
    x = jnp.ones((3, 28, 28, 1))
    with record_outputs(mnist_cnn, ["conv1", "fc1"]) as records:
        logits = mnist_cnn(x)
    assert records["conv1"].shape == (3, 24, 24, 10)  # NHWC, before pooling
    assert records["fc1"].shape == (3, 50)
    np.testing.assert_array_equal(records["conv1"], conv1(x))
    assert mnist_cnn.conv1 is conv1 and mnist_cnn.fc1 is fc1
    np.testing.assert_array_equal(mnist_cnn(x), logits)


def test_calls_are_listed_in_order_with_inputs(mnist_cnn):
    calls = []
    x = jnp.ones((2, 28, 28, 1))
    with record_outputs(mnist_cnn, ["fc2", "conv1", "conv2"], calls=calls):
        mnist_cnn(x)
    assert [name for name, _, _ in calls] == ["conv1", "conv2", "fc2"]
    name, inputs, output = calls[0]
    np.testing.assert_array_equal(inputs[0], x)


def test_recorded_modules_still_expose_their_attributes(mnist_cnn):
    with record_outputs(mnist_cnn, ["conv1"]):
        assert mnist_cnn.conv1.weight.shape == (5, 5, 1, 10)  # HWIO, read through the stand-in
        assert mnist_cnn.conv1.stride == (1, 1)


def test_unknown_names_raise_and_leave_the_model_intact(mnist_cnn):
    conv1 = mnist_cnn.conv1
    with pytest.raises(AttributeError, match="conv9"):
        with record_outputs(mnist_cnn, ["conv1", "conv9"]):
            pass
    assert mnist_cnn.conv1 is conv1


def test_get_submodule_follows_dotted_paths():
    model = models.create("cifar_resnet18", rngs=nnx.Rngs(0))
    assert get_submodule(model, "layer1.0.conv1") is getattr(model.layer1, "0").conv1
    assert get_submodule(model, "linear") is model.linear
