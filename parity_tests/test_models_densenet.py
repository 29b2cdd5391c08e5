"""Model-level parity for DenseNet (jaxcnn.models.densenet vs torchvision.models.densenet*).

Input sizes: 29x29 is the smallest torchvision's DenseNets accept (transition3 would pool a
1x1 map at 28). 32 (even) and 33 (odd) follow the brief; at 33 every transition's 2x2
average pool drops a row and a column (17 -> 9 after pool0 -> 4 -> 2 -> 1).

Features are compared after pool0, every dense block and every transition. ``norm5`` is
not: torchvision's forward applies ``F.relu(features, inplace=True)`` to norm5's output,
so a torch forward hook on norm5 would hold the post-ReLU tensor.

Training steps are compared in float64 (the harness's ``float64``: torch ``.double()``,
JAX under ``jax.enable_x64``) at the default 1e-5. In float32 a DenseNet training step is
ill-conditioned for torch itself: with batch 2 the 1x1 maps of denseblock4 give each
training-mode BatchNorm 2 values per channel, and even at 224x224 sparse post-ReLU
channels give BatchNorms tiny variances, so a pre-ReLU value within rounding of 0 moves a
channel's statistics. Measured for densenet121 (batch 2, torch float32 vs torch float64,
worst parameter's gradient relative to its own largest entry): 2.7e2 at 32x32, 0.1 at 64,
0.15 at 224; logits 0.28 at 32 for some inputs. Comparing two float32 implementations
there proves nothing, while in float64 densenet121's step agrees with torch to 4e-7
(gradients) and 1e-11 (logits, statistics) at 32x32. The default run uses a small
DenseNet-BC (``SMALL``), whose float64 step is well conditioned at 32 and 33 (scaling the
input by 1 + 1e-15 moves torch's gradients by < 2e-12); the full-size models' steps are
slow-marked and run at 64x64 (see ``test_densenet_full_train_step_float64``).

The jaxcnn twins are built with ``abstract_init`` and the checks run jitted (op-by-op
execution compiles every distinct op shape, and a DenseNet has hundreds). Initialisation
is tested in ``tests/test_models_googlenet_densenet_init.py``.
"""

import jax
import numpy as np
import pytest
import torch
import torchvision
from flax import nnx

from jaxcnn.convert import load_torch_state_dict
from jaxcnn.models.densenet import DenseNet, _DenseBlock, _DenseLayer, _Transition
from jaxcnn.parity import fill_abstract_rng_streams
from model_harness import (
    cheap_tracer_origin_messages,
    check_eval,
    check_round_trip,
    check_train_step,
    float64,
    make_pair,
    randomize_torch_model,
    torch_input,
)

STAGES = (
    "features.pool0",
    "features.denseblock1",
    "features.transition1",
    "features.denseblock2",
    "features.transition2",
    "features.denseblock3",
    "features.transition3",
    "features.denseblock4",
)

# A small DenseNet-BC with every part of the big ones (four blocks, three transitions,
# norm5, classifier) for the training-step checks that run by default.
SMALL = dict(growth_rate=8, block_config=(2, 3, 2, 2), num_init_features=16, bn_size=2, num_classes=10)


@pytest.fixture(autouse=True, scope="module")
def _fast_tracing():
    with cheap_tracer_origin_messages():
        yield


def _small_pair(seed: int = 0, jax_options: dict | None = None, **config):
    """torchvision DenseNet(**config) with randomised BatchNorm state, and its loaded jaxcnn
    twin DenseNet(**config, **jax_options)."""
    torch.manual_seed(seed)
    torch_model = randomize_torch_model(torchvision.models.DenseNet(**config), seed)
    jax_model = nnx.eval_shape(lambda: DenseNet(**config, **(jax_options or {}), rngs=nnx.Rngs(seed)))
    load_torch_state_dict(jax_model, {key: value.detach().clone() for key, value in torch_model.state_dict().items()})
    fill_abstract_rng_streams(jax_model, seed)  # drop_rate > 0: the layers' dropout key streams
    return torch_model, jax_model


@pytest.fixture(scope="module")
def densenet121_pair():
    """One densenet121 pair for the eval-mode checks (they do not change the models' state)."""
    return make_pair("densenet121", abstract_init=True)


def test_densenet121_round_trip(densenet121_pair):
    check_round_trip(*densenet121_pair)


@pytest.mark.parametrize("size", [32, 33])
def test_densenet121_eval_parity(densenet121_pair, size):
    """Eval logits and every block/transition output at an even and an odd size."""
    check_eval(*densenet121_pair, torch_input((2, 3, size, size)), features=STAGES, jit=True)


@pytest.mark.parametrize("name", ["densenet161", "densenet169", "densenet201"])
def test_densenet_eval_parity(name):
    """The bigger DenseNets (growth 48 / 96 initial features for 161; deeper blocks) at the minimum size."""
    torch_model, jax_model = make_pair(name, abstract_init=True)
    check_round_trip(torch_model, jax_model)
    check_eval(torch_model, jax_model, torch_input((2, 3, 29, 29)), features=STAGES, jit=True)


@pytest.mark.parametrize("size, memory_efficient", [(32, False), (33, True)])
def test_densenet_train_step_float64(size, memory_efficient):
    """One float64 training step of a small DenseNet-BC: logits, every gradient, BatchNorm statistics.

    jaxcnn's ``memory_efficient=True`` (``nnx.remat`` of each layer's bottleneck) must give
    exactly the numbers of the plain model, so it is compared with torch's plain model:
    torch's own ``memory_efficient=True`` (``torch.utils.checkpoint``) re-runs the bottleneck
    in the backward pass *with its side effects*, so each layer's ``norm1`` updates its
    running statistics and ``num_batches_tracked`` a second time per step (a known
    checkpoint/BatchNorm interaction). jaxcnn updates them once, as without checkpointing.
    """
    torch_model, jax_model = _small_pair(**SMALL, jax_options=dict(memory_efficient=memory_efficient))
    with float64(torch_model, jax_model):
        x = torch_input((2, 3, size, size)).double()
        check_train_step(torch_model, jax_model, x, torch.tensor([1, 7]), jit=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["densenet121", "densenet161", "densenet169", "densenet201"])
def test_densenet_full_train_step_float64(name):
    """The full-size models' float64 training step (slow: one to three minutes of XLA compilation each).

    At 64x64, not 32x32: with 1x1 maps in denseblock4 even float64 is too ill-conditioned
    for the deep ones. Scaling the 32x32 input by (1 + 1e-15) moves torch's own float64
    gradients by up to 2.5 (densenet169) and 0.08 (densenet201) relative (torch with 1 vs
    2 threads: 4e-5 for densenet201, where jaxcnn was 1e-4 off), against 1e-6 for
    densenet121 and below 1e-12 for all four at 64x64 (2x2 maps, 8 values per channel).
    """
    torch_model, jax_model = make_pair(name, abstract_init=True)
    with float64(torch_model, jax_model):
        check_train_step(torch_model, jax_model, torch_input((2, 3, 64, 64)).double(), torch.tensor([1, 7]), jit=True)


def test_densenet_structure_and_options():
    """torchvision's attribute names and order, block/transition widths, and the options' values."""
    model = nnx.eval_shape(lambda: DenseNet(**SMALL, drop_rate=0.25, memory_efficient=True, rngs=nnx.Rngs(0)))
    torch_model = torchvision.models.DenseNet(**SMALL, drop_rate=0.25, memory_efficient=True)
    assert model.features.layer_names == tuple(name for name, _ in torch_model.features.named_children())
    block = model.features.denseblock2
    assert isinstance(block, _DenseBlock) and isinstance(model.features.transition1, _Transition)
    assert [name for name, _ in block.items()] == list(torch_model.features.denseblock2.keys())
    layer = block.denselayer3
    assert isinstance(layer, _DenseLayer) and layer.drop_rate == 0.25 and layer.memory_efficient
    assert model.features.transition1.layer_names == ("norm", "relu", "conv", "pool")
    assert model.classifier.in_features == torch_model.classifier.in_features


def test_dense_layer_dropout():
    """drop_rate: in training mode about drop_rate of the new features are zeroed and the rest
    scaled by 1 / (1 - drop_rate), with a fresh mask on each call; identity in eval mode
    (``test_densenet_drop_rate_eval_parity``)."""
    layer = _DenseLayer(8, growth_rate=16, bn_size=2, drop_rate=0.5, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (2, 6, 6, 8))

    @nnx.jit
    def run(layer, x):
        # training-mode BatchNorm without dropout: the same batch gives the same pre-dropout features
        reference = layer.conv2(layer.relu2(layer.norm2(layer.bn_function([x]))))
        return reference, layer(x), layer(x)

    reference, first, second = (np.asarray(a) for a in run(layer, x))
    for output in (first, second):
        kept = output != 0
        assert 0.4 < kept.mean() < 0.6
        np.testing.assert_allclose(output[kept], 2.0 * reference[kept], rtol=1e-5, atol=1e-6)
    assert not np.array_equal(first != 0, second != 0)


def test_densenet_drop_rate_eval_parity():
    """A model with drop_rate > 0 matches torch in eval mode (dropout is the identity there)."""
    torch_model, jax_model = _small_pair(**SMALL, drop_rate=0.3)
    check_round_trip(torch_model, jax_model)
    check_eval(torch_model, jax_model, torch_input((2, 3, 29, 29)), jit=True)
