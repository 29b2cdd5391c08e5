"""Model-level parity for GoogLeNet (jaxcnn.models.googlenet vs torchvision.models.googlenet).

Input sizes: 15x15 is the smallest torchvision accepts (maxpool3 would produce an empty map
at 14). At 15 the stem's ceil_mode pooling matters (maxpool1 8 -> 4, floor would give 3)
and the aux heads see 1x1 maps, which AdaptiveAvgPool2d((4, 4)) replicates. At 48 (even)
maxpool3 (6 -> 3) and maxpool4 (3 -> 2) need ceil_mode, and the aux heads see 3x3 maps:
non-divisible, overlapping adaptive windows. ``test_inception_aux_parity`` covers the aux
head alone at 14x14 (the 224-input case) and 5x5.

Eval mode is compared in float32 at the default 1e-5 (measured: ~3e-7). Training steps are
compared in float64 (the harness's ``float64``: torch ``.double()``, JAX under
``jax.enable_x64``), also at the default 1e-5 (measured: gradients 4e-12, everything else
<2e-13), because in float32 one training step at these tiny inputs is ill-conditioned for
torch itself: from inception4a
on (15x15) or inception5a (48x48) the maps are 1x1 or 2x2, so with batch 2 each
training-mode BatchNorm normalises 2 or 8 values per channel. Its output is then nearly
+-1 whatever its input and its backward pass a near-total cancellation
(g - mean(g) - xhat * mean(g * xhat)), and a pre-ReLU value within rounding of 0 (or a
max-pool near-tie) reroutes a large share of a channel's gradient. Measured for torch
float32 against torch float64 (worst parameter's gradient, relative to its largest
entry): 2.3e-3 at 15x15, 3.6e-4 at 48x48 with the seed-0 inputs, 0.23 at 48x48 with
seed 48; jaxcnn float32 against torch float32 was 1.2e-3 and 2.6e-4 on the seed-0
inputs. The float32 step is still checked (``test_googlenet_train_step_float32``, slow)
with tolerances set from those measurements.

The jaxcnn twins are built with ``abstract_init`` (their weights come from torch anyway)
and the checks run jitted: op-by-op execution compiles every distinct op shape separately,
which dominates the runtime of a model this deep. The initialisation is tested in
``tests/test_models_googlenet_densenet_init.py``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision
from flax import nnx
from torchvision.models.googlenet import InceptionAux as TorchInceptionAux

from conftest import check_module_parity
from jaxcnn.models.googlenet import GoogLeNet, GoogLeNetOutputs, InceptionAux
from model_harness import (
    assert_close,
    cheap_tracer_origin_messages,
    check_eval,
    check_round_trip,
    check_train_step,
    float64,
    jax_input,
    make_pair,
    nchw,
    set_mode,
    torch_input,
)

STAGES = (
    "conv1",
    "maxpool1",
    "conv2",
    "conv3",
    "maxpool2",
    "inception3a",
    "inception3b",
    "maxpool3",
    "inception4a",
    "inception4b",
    "inception4c",
    "inception4d",
    "inception4e",
    "maxpool4",
    "inception5a",
    "inception5b",
)

# float32 training-step tolerances (outputs, gradients): the measured jaxcnn-vs-torch
# errors on the seed-0 inputs (logits 1.5e-4 / 2.6e-5, worst gradient 1.2e-3 / 2.6e-4,
# see the module docstring for why they exceed 1e-5), with about 2x headroom.
FLOAT32_TRAIN_RTOL = {15: (3e-4, 2e-3), 48: (5e-5, 5e-4)}


def _pair(**options):
    return make_pair("googlenet", abstract_init=True, **options)


@pytest.fixture(autouse=True, scope="module")
def _fast_tracing():
    with cheap_tracer_origin_messages():
        yield


@pytest.fixture(scope="module")
def eval_pair():
    """One model pair for the eval-mode checks (they do not change the models' state)."""
    return _pair()


def test_googlenet_round_trip(eval_pair):
    check_round_trip(*eval_pair)


@pytest.mark.parametrize("size, transform_input", [(15, False), (48, True)])
def test_googlenet_eval_parity(eval_pair, size, transform_input):
    """Eval-mode logits and every stage's output (each Inception block) at the smallest odd and an even size.

    ``transform_input`` (a plain attribute on both sides, read in the forward) is switched
    on for the second size, on an off-centre input so that the per-channel affine matters.
    """
    torch_model, jax_model = eval_pair
    torch_model.transform_input = jax_model.transform_input = transform_input
    try:
        x = torch_input((2, 3, size, size)) * 2.0 + 0.5
        check_eval(torch_model, jax_model, x, features=STAGES, jit=True)
    finally:
        torch_model.transform_input = jax_model.transform_input = False


@pytest.mark.parametrize("size", [15, pytest.param(48, marks=pytest.mark.slow)])
def test_googlenet_train_step_float64(size):
    """One float64 training step: logits and both aux heads, every parameter's gradient, BatchNorm statistics."""
    torch_model, jax_model = _pair()
    with float64(torch_model, jax_model):
        x = torch_input((2, 3, size, size)).double()
        check_train_step(torch_model, jax_model, x, torch.tensor([1, 7]), jit=True)


@pytest.mark.slow
@pytest.mark.parametrize("size", [15, 48])
def test_googlenet_train_step_float32(size):
    """The float32 training step, within the measured float32 conditioning (see FLOAT32_TRAIN_RTOL)."""
    torch_model, jax_model = _pair()
    rtol, grad_rtol = FLOAT32_TRAIN_RTOL[size]
    check_train_step(torch_model, jax_model, torch_input((2, 3, size, size)), torch.tensor([1, 7]), rtol=rtol, grad_rtol=grad_rtol, jit=True)


def test_googlenet_without_aux_logits():
    """aux_logits=False: no aux heads, no aux keys in the state dict, plain logits in train mode too."""
    torch_model, jax_model = _pair(aux_logits=False, num_classes=10)
    assert jax_model.aux1 is None and jax_model.aux2 is None
    check_round_trip(torch_model, jax_model)
    x = torch_input((2, 3, 15, 15))
    set_mode(torch_model, jax_model, train=True)
    jax_output = nnx.eval_shape(lambda model, x: model(x), jax_model, jax_input(x))  # output structure only
    torch_output = torch_model(x)
    assert isinstance(torch_output, torch.Tensor) and isinstance(jax_output, jax.ShapeDtypeStruct)
    assert jax_output.shape == tuple(torch_output.shape) == (2, 10)


def test_googlenet_train_mode_outputs():
    """With aux heads, train mode returns GoogLeNetOutputs(logits, aux_logits2, aux_logits1), eval mode the logits."""
    model = nnx.eval_shape(lambda: GoogLeNet(num_classes=10, init_weights=False, rngs=nnx.Rngs(0)))
    x = jax.ShapeDtypeStruct((2, 15, 15, 3), jnp.float32)
    model.train()
    output = nnx.eval_shape(lambda model, x: model(x), model, x)
    assert isinstance(output, GoogLeNetOutputs) and all(o.shape == (2, 10) for o in output)
    assert GoogLeNetOutputs._fields == torchvision.models.GoogLeNetOutputs._fields
    model.eval()
    assert isinstance(nnx.eval_shape(lambda model, x: model(x), model, x), jax.ShapeDtypeStruct)


def test_googlenet_transform_input_values():
    """The channel transform alone, on the last (channel) axis: torch's formula, and the identity when off."""
    x = torch_input((2, 3, 5, 4), seed=5)
    for transform_input in (True, False):
        model = nnx.eval_shape(
            lambda: GoogLeNet(num_classes=10, transform_input=transform_input, init_weights=False, rngs=nnx.Rngs(0))
        )
        torch_model = torchvision.models.googlenet(
            weights=None, num_classes=10, transform_input=transform_input, init_weights=False
        )
        actual = model._transform_input(jax_input(x))
        assert actual.shape == (2, 5, 4, 3)
        assert_close(nchw(actual), torch_model._transform_input(x), 1e-6, f"transform_input={transform_input}")


@pytest.mark.parametrize("size", [14, 5])
def test_inception_aux_parity(size, rng):
    """One aux head in training mode (dropout off): 14x14 -> 4x4 (224-input case) and 5x5 -> 4x4 (overlapping)."""
    torch.manual_seed(size)
    torch_aux = TorchInceptionAux(32, 10, dropout=0.7)
    torch_aux.train()
    torch_aux.dropout.eval()
    with torch.no_grad():
        torch_aux.conv.bn.running_mean.normal_(0, 0.1)
        torch_aux.conv.bn.weight.uniform_(0.5, 1.5)
    jax_aux = InceptionAux(32, 10, dropout=0.7, rngs=nnx.Rngs(0))
    jax_aux.train()
    jax_aux.dropout.deterministic = True
    x = rng.standard_normal((2, 32, size, size)).astype(np.float32)
    check_module_parity(jax_aux, torch_aux, x, rng)


def test_googlenet_modes_and_dropout_options():
    """train()/eval() toggle ``training`` (the aux heads' switch) and Dropout; dropout options reach the layers."""
    model = nnx.eval_shape(
        lambda: GoogLeNet(num_classes=10, init_weights=False, dropout=0.3, dropout_aux=0.6, rngs=nnx.Rngs(0))
    )
    assert model.training  # torch modules start in training mode
    assert model.dropout.p == 0.3 and model.aux1.dropout.p == 0.6 and model.aux2.dropout.p == 0.6
    model.eval()
    assert not model.training and model.dropout.deterministic and model.aux1.dropout.deterministic
    model.train()
    assert model.training and not model.dropout.deterministic
    with pytest.raises(ValueError, match="blocks length"):
        GoogLeNet(init_weights=False, blocks=[], rngs=nnx.Rngs(0))
    with pytest.warns(FutureWarning, match="default weight initialization"):
        nnx.eval_shape(lambda: GoogLeNet(num_classes=10, rngs=nnx.Rngs(0)))
