"""Class activation maps (``jaxcnn.models.cam``) for GAP-headed models."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxcnn import nn
from jaxcnn.models.cam import class_activation_map, upsample_to
from jaxcnn.nn import functional as F


class TinyGap(nnx.Module):
    """conv -> ReLU -> max pool, then GAP and ``classifier``; returns (logits, features) like GapVGG."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.conv = nn.Conv2d(3, 8, kernel_size=3, padding=1, rngs=rngs)
        self.classifier = nn.Linear(8, 5, rngs=rngs)

    def __call__(self, x):
        features = F.max_pool2d(F.relu(self.conv(x)), 2)
        logits = self.classifier(F.flatten(F.adaptive_avg_pool2d(features, 1), 1, torch_order=True))
        return logits, features


def _image(shape, seed=0):
    return jax.random.normal(jax.random.key(seed), shape)


@pytest.fixture(scope="module")
def tiny():
    model = TinyGap(rngs=nnx.Rngs(0))
    model.eval()
    return model


def test_cam_equals_manual_computation(tiny):
    image = _image((1, 12, 10, 3))
    logits, features = tiny(image)
    weight = np.asarray(tiny.classifier.weight.get_value(), np.float64)  # (8, 5)
    for class_index in (0, 3):
        expected = np.einsum("hwc,c->hw", np.asarray(features[0], np.float64), weight[:, class_index])
        cam = class_activation_map(tiny, image, class_index)
        assert cam.shape == (6, 5)
        np.testing.assert_allclose(np.asarray(cam), expected, rtol=1e-5, atol=1e-6)
    # Default class: the prediction; a (H, W, C) image works as well.
    predicted = int(jnp.argmax(logits[0]))
    np.testing.assert_array_equal(class_activation_map(tiny, image[0]), class_activation_map(tiny, image, predicted))


def test_cam_mean_plus_bias_is_the_logit(tiny):
    # For a GAP head: mean_hw sum_c w[k,c] f[h,w,c] + b[k] = sum_c w[k,c] mean_hw f[..,c] + b[k] = logit[k].
    image = _image((1, 16, 14, 3), seed=1)
    logits, _ = tiny(image)
    bias = tiny.classifier.bias.get_value()
    for class_index in range(5):
        cam = class_activation_map(tiny, image, class_index)
        np.testing.assert_allclose(float(cam.mean() + bias[class_index]), float(logits[0, class_index]), rtol=1e-5, atol=1e-5)


def test_cam_with_features_fn_and_explicit_linear(tiny):
    image = _image((1, 8, 8, 3), seed=2)
    features_fn = lambda x: tiny(x)[1]  # noqa: E731
    np.testing.assert_allclose(
        class_activation_map(tiny, image, 2, features_fn=features_fn, linear=tiny.classifier),
        class_activation_map(tiny, image, 2),
        rtol=1e-6,
    )
    # Without a class the GAP head picks the argmax itself.
    logits, _ = tiny(image)
    np.testing.assert_allclose(
        class_activation_map(tiny, image, features_fn=features_fn),
        class_activation_map(tiny, image, int(jnp.argmax(logits[0]))),
        rtol=1e-6,
    )


def test_cam_gap_vgg():
    torch = pytest.importorskip("torch")
    import jaxcnn.models
    import torch_ref.models
    from jaxcnn.convert import load_torch_state_dict

    # Weights from the torch twin into a shapes-only model, and the forward under jit:
    # eagerly, VGG-16's many op shapes would each compile separately.
    torch.manual_seed(0)
    model = nnx.eval_shape(lambda: jaxcnn.models.create("gap_vgg", num_classes=4, rngs=nnx.Rngs(0)))
    load_torch_state_dict(model, torch_ref.models.create("gap_vgg", num_classes=4).state_dict())
    model.eval()
    forward = nnx.jit(lambda model, x: model(x))
    image = _image((1, 32, 96, 3), seed=3)
    logits, features = forward(model, image)
    assert features.shape == (1, 1, 3, 512)
    weight = np.asarray(model.classifier.weight.get_value(), np.float64)
    bias = np.asarray(model.classifier.bias.get_value(), np.float64)
    for class_index in range(4):
        cam = class_activation_map(model, image, class_index, features_fn=lambda x: forward(model, x)[1])
        expected = np.einsum("hwc,c->hw", np.asarray(features[0], np.float64), weight[:, class_index])
        assert cam.shape == (1, 3)
        assert np.abs(np.asarray(cam) - expected).max() <= 1e-5 * np.abs(expected).max()
        logit = float(logits[0, class_index])
        assert abs(float(cam.mean()) + bias[class_index] - logit) <= 1e-5 * max(1.0, abs(logit))


def test_cam_errors(tiny):
    with pytest.raises(ValueError, match="one NHWC image"):
        class_activation_map(tiny, _image((2, 8, 8, 3)))
    plain = nn.Linear(3, 2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="classifier"):
        class_activation_map(plain, _image((1, 8, 8, 3)))


def test_upsample_to_matches_torch_bilinear_and_normalises():
    torch = pytest.importorskip("torch")
    cam = np.asarray(_image((3, 4), seed=4))
    expected = torch.nn.functional.interpolate(torch.tensor(cam)[None, None], size=(12, 10), mode="bilinear", align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(upsample_to(jnp.asarray(cam), (12, 10), normalize=False), expected, rtol=1e-5, atol=1e-6)
    normalised = np.asarray(upsample_to(jnp.asarray(cam), (12, 10)))
    assert normalised.shape == (12, 10)
    assert normalised.min() == 0.0 and abs(normalised.max() - 1.0) < 1e-6
    np.testing.assert_allclose(normalised, (expected - expected.min()) / (expected.max() - expected.min()), atol=1e-5)
    np.testing.assert_array_equal(upsample_to(jnp.ones((2, 2)), (4, 4)), np.zeros((4, 4)))
