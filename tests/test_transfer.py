"""Transfer learning (``jaxcnn.transfer``): a torchvision-checkpoint ResNet-18 backbone, the
course's head, a frozen backbone via an optax mask, and frozen backbone BatchNorm statistics.

Fast: the backbone is built shape-only and filled from a checkpoint (no random init), inputs
are 2 x 32 x 32, and one jitted training step is compiled once for the module.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torchvision
from flax import nnx

from jaxcnn import nn, transfer
from jaxcnn.convert import to_torch_arrays
from jaxcnn.nn import functional as F

NUM_CLASSES = 5


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A torchvision ResNet-18 state dict saved as torchvision's hub files are (a .pth)."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(model.state_dict(), path)
    return path, {key: value.numpy() for key, value in model.state_dict().items()}


def make_transfer_model(path):
    model = transfer.from_torch_checkpoint("resnet18", path)
    return transfer.replace_head(model, NUM_CLASSES, rngs=nnx.Rngs(0))


def flat_state(model, kind=nnx.Variable):
    return {".".join(map(str, path)): np.asarray(leaf.get_value()) for path, leaf in nnx.to_flat_state(nnx.state(model, kind))}


def test_backbone_loads_checkpoint_and_head_is_replaced(checkpoint):
    path, reference = checkpoint
    model = make_transfer_model(path)
    arrays = to_torch_arrays(model)
    backbone = {key for key in reference if not key.startswith("fc.")}
    assert backbone == {key for key in arrays if not key.startswith("fc.")}
    for key in backbone:
        np.testing.assert_array_equal(arrays[key], reference[key], err_msg=key)
    assert isinstance(model.fc, nn.Sequential)
    assert [type(layer) for layer in model.fc] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert arrays["fc.0.weight"].shape == (500, 512) and arrays["fc.3.weight"].shape == (NUM_CLASSES, 500)
    model.eval()
    assert jax.eval_shape(model, jnp.zeros((2, 32, 32, 3))).shape == (2, NUM_CLASSES)


def test_replace_head_with_factory_or_module():
    class Tiny(nnx.Module):
        def __init__(self, rngs):
            self.linear = nn.Linear(8, 2, rngs=rngs)

    tiny = Tiny(nnx.Rngs(0))
    transfer.replace_head(tiny, lambda n, rngs: nn.Linear(n, 7, rngs=rngs), rngs=nnx.Rngs(1))
    assert (tiny.linear.in_features, tiny.linear.out_features) == (8, 7)
    transfer.replace_head(tiny, nn.Identity(), attribute="linear")
    assert isinstance(tiny.linear, nn.Identity)
    with pytest.raises(ValueError):
        transfer.replace_head(tiny, 3, rngs=nnx.Rngs(0))  # no Linear head left to find


def test_mask_marks_exactly_the_head(checkpoint):
    model = make_transfer_model(checkpoint[0])
    mask = transfer.freeze_backbone_mask(model)
    assert jax.tree_util.tree_structure(jax.tree_util.tree_map(lambda _: 0, mask)) == jax.tree_util.tree_structure(
        jax.tree_util.tree_map(lambda _: 0, nnx.state(model, nnx.Param))
    )
    flat = {".".join(map(str, path)): bool(leaf.get_value()) for path, leaf in nnx.to_flat_state(mask)}
    assert {key for key, train in flat.items() if train} == {"fc.0.weight", "fc.0.bias", "fc.1.weight", "fc.1.bias", "fc.3.weight", "fc.3.bias"}
    assert transfer.is_trainable("layer4.1.conv1.weight", ("layer4",))
    assert not transfer.is_trainable("layer1.0.se.fc1.weight", ("fc",))
    with pytest.raises(ValueError):
        transfer.freeze_backbone_mask(model, trainable=("head",))


def test_transfer_mode_freezes_only_backbone_batchnorm(checkpoint):
    model = make_transfer_model(checkpoint[0])
    transfer.set_transfer_mode(model, train=True)
    assert model.bn1.use_running_average and model.layer4[1].bn2.use_running_average
    assert not model.fc[1].use_running_average
    transfer.set_transfer_mode(model, train=True, freeze_backbone_batchnorm=False)
    assert not model.bn1.use_running_average
    transfer.set_transfer_mode(model, train=False)
    assert model.bn1.use_running_average and model.fc[1].use_running_average


def test_training_step_moves_only_the_head(checkpoint):
    """One jitted SGD-with-momentum + weight-decay step: every backbone parameter and BatchNorm
    statistic is bit-identical afterwards; every head parameter and the head's statistics move."""
    model = make_transfer_model(checkpoint[0])
    transfer.set_transfer_mode(model, train=True)
    tx = transfer.make_transfer_optimizer(
        optax.chain(optax.add_decayed_weights(1e-2), optax.sgd(0.1, momentum=0.9)), transfer.freeze_backbone_mask(model)
    )
    before_params, before_stats = flat_state(model, nnx.Param), flat_state(model, nnx.BatchStat)

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    opt_state = tx.init(params)

    @jax.jit
    def train_step(params, rest, opt_state, x, y):
        def loss_fn(params):
            model = nnx.merge(graphdef, params, rest, copy=True)
            loss = F.cross_entropy(model(x), y)
            return loss, nnx.split(model, nnx.Param, ...)[2]

        (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), rest, opt_state, loss, grads

    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    y = jnp.array([1, 3])
    for _ in range(2):  # the second step also exercises the momentum state
        params, rest, opt_state, loss, grads = train_step(params, rest, opt_state, x, y)
    assert np.isfinite(float(loss))
    nnx.update(model, params, rest)

    after_params, after_stats = flat_state(model, nnx.Param), flat_state(model, nnx.BatchStat)
    grad_norms = {".".join(map(str, path)): float(jnp.abs(leaf.get_value()).max()) for path, leaf in nnx.to_flat_state(grads)}
    for key, value in before_params.items():
        if key.startswith("fc."):
            assert not np.array_equal(after_params[key], value), f"head parameter {key} did not train"
        else:
            np.testing.assert_array_equal(after_params[key], value, err_msg=f"frozen {key} changed")
    for key, value in before_stats.items():
        if key.startswith("fc."):
            assert not np.array_equal(after_stats[key], value), f"head statistic {key} did not update"
        else:
            np.testing.assert_array_equal(after_stats[key], value, err_msg=f"frozen statistic {key} changed")
    assert grad_norms["layer4.1.conv2.weight"] > 0  # the mask, not a stopped gradient, froze the backbone
