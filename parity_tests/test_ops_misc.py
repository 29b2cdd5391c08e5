"""Parity of linear, dropout, activations, flatten, cross_entropy and Sequential with torch.

Outputs and gradients (random cotangent) are compared at rtol 1e-5 of the reference
scale. Dropout masks come from different RNGs in the two frameworks, so dropout is
checked against torch's *formula* applied with jaxcnn's own mask, plus mask statistics.
"""

from __future__ import annotations

from collections import OrderedDict

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from flax import nnx

from jaxcnn.convert import load_torch_state_dict, to_torch_state_dict, torch_variables
import jaxcnn.nn as jnn
from jaxcnn.nn import functional as F
from jaxcnn.nn import init as jinit

from conftest import (
    abstract_module,
    as_jax,
    assert_close,
    assert_equal,
    assert_state_close,
    check_function_parity,
    check_module_parity,
    default_init_bound,
    jax_forward_backward,
    nnx_forward_backward,
    randn,
    to_nchw,
    to_nhwc,
    torch_forward_backward,
    uniformity_pvalue,
)

# ------------------------------------------------------------------------------------
# Linear
# ------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_shape", [(5,), (2, 3), ()])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_functional(rng, batch_shape, bias):
    x = randn(rng, *batch_shape, 7)
    weight = randn(rng, 4, 7, scale=0.4)  # torch (out, in)
    inputs = (x, weight, randn(rng, 4)) if bias else (x, weight)
    check_function_parity(
        TF.linear,
        F.linear,
        inputs,
        (x, weight.T) + inputs[2:],
        rng,
        channels_last_output=False,
        grads_to_torch=[None, lambda g: g.T, None],
    )


@pytest.mark.parametrize("in_shape", [(6, 10), (2, 3, 10)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_module(rng, in_shape, bias):
    torch_linear = torch.nn.Linear(10, 3, bias=bias)
    jax_linear = abstract_module(lambda: jnn.Linear(10, 3, bias=bias, rngs=nnx.Rngs(0)))
    assert jax_linear.weight.get_value().shape == (10, 3)
    assert jax_linear.weight.get_metadata()["torch_perm"] == (1, 0)
    check_module_parity(jax_linear, torch_linear, randn(rng, *in_shape), rng, transpose=False)


@pytest.mark.parametrize("in_features,out_features", [(300, 100), (3, 4000)])
def test_linear_default_init_matches_torch_distribution(in_features, out_features):
    """Statistical: torch's default Linear init is U(-1/sqrt(in), 1/sqrt(in)) for weight and bias."""
    from scipy import stats

    linear = jnn.Linear(in_features, out_features, rngs=nnx.Rngs(7))
    torch_linear = torch.nn.Linear(in_features, out_features)
    bound = default_init_bound(in_features)
    weight, bias = np.asarray(linear.weight.get_value()), np.asarray(linear.bias.get_value())
    assert torch_linear.weight.abs().max().item() <= bound and torch_linear.bias.abs().max().item() <= bound
    assert np.abs(weight).max() <= bound and np.abs(bias).max() <= bound
    assert np.abs(weight).max() > 0.99 * bound
    assert abs(weight.std() - bound / np.sqrt(3)) < 0.05 * bound / np.sqrt(3)
    assert abs(weight.mean()) < 5 * bound / np.sqrt(3 * weight.size)
    assert uniformity_pvalue(weight, bound) > 1e-4
    assert stats.ks_2samp(weight.ravel(), torch_linear.weight.detach().numpy().ravel()).pvalue > 1e-4
    if out_features >= 1000:
        assert uniformity_pvalue(bias, bound) > 1e-4
        assert np.abs(bias).max() > 0.95 * bound


def test_init_fans_match_torch():
    """jaxcnn.nn.init computes fans on the torch-layout shape, as torch does."""
    cases = [
        (abstract_module(lambda: jnn.Conv2d(6, 8, (3, 5), groups=2, rngs=nnx.Rngs(0))), torch.nn.Conv2d(6, 8, (3, 5), groups=2)),
        (abstract_module(lambda: jnn.Linear(12, 5, rngs=nnx.Rngs(0))), torch.nn.Linear(12, 5)),
    ]
    for module, torch_module in cases:
        assert jinit.torch_shape(module.weight) == tuple(torch_module.weight.shape)
        expected = torch.nn.init._calculate_fan_in_and_fan_out(torch_module.weight)
        assert jinit.calculate_fan_in_and_fan_out(module.weight) == tuple(expected)
    for name, param in [("relu", None), ("leaky_relu", 0.2), ("tanh", None), ("conv2d", None), ("selu", None)]:
        assert jinit.calculate_gain(name, param) == pytest.approx(torch.nn.init.calculate_gain(name, param))


# ------------------------------------------------------------------------------------
# Activations
# ------------------------------------------------------------------------------------


def activation_input(rng):
    """Normal values, exact zeros (the kink: torch's ReLU gradient there is 0) and large magnitudes."""
    x = randn(rng, 3, 4, 5, 6)
    x.reshape(-1)[::7] = 0.0
    x.reshape(-1)[3::11] *= 30.0
    return x


ACTIVATIONS = [
    ("relu", TF.relu, F.relu),
    ("leaky_relu default", TF.leaky_relu, F.leaky_relu),
    ("leaky_relu 0.2", lambda t: TF.leaky_relu(t, 0.2), lambda a: F.leaky_relu(a, 0.2)),
    ("leaky_relu 1.5", lambda t: TF.leaky_relu(t, 1.5), lambda a: F.leaky_relu(a, 1.5)),
    ("leaky_relu -0.3", lambda t: TF.leaky_relu(t, -0.3), lambda a: F.leaky_relu(a, -0.3)),
    ("sigmoid", torch.sigmoid, F.sigmoid),
    ("tanh", torch.tanh, F.tanh),
    ("softmax last", lambda t: TF.softmax(t, -1), lambda a: F.softmax(a, -1)),
    ("softmax channels", lambda t: TF.softmax(t, 1), lambda a: F.softmax(a, -1)),  # NCHW dim 1 == NHWC dim -1
    ("log_softmax channels", lambda t: TF.log_softmax(t, 1), lambda a: F.log_softmax(a, 3)),
]


@pytest.mark.parametrize("name,torch_fn,jax_fn", ACTIVATIONS, ids=[a[0] for a in ACTIVATIONS])
def test_activation_functional(rng, name, torch_fn, jax_fn):
    x = activation_input(rng)
    if name.startswith("softmax last"):  # a non-channel axis: compare in torch's layout directly
        check_function_parity(torch_fn, jax_fn, x, x, rng, channels_last_output=False, grads_to_torch=[None])
    else:
        check_function_parity(torch_fn, jax_fn, x, to_nhwc(x), rng)


def test_relu_gradient_at_zero_is_zero():
    g = jax.grad(lambda a: F.relu(a).sum())(jnp.array([0.0, 1.0, -1.0]))
    assert_equal(np.asarray(g), np.array([0.0, 1.0, 0.0], np.float32))
    g = jax.jit(jax.grad(lambda a: jnn.ReLU()(a).sum()))(jnp.zeros((2, 3)))
    assert_equal(np.asarray(g), np.zeros((2, 3), np.float32))


@pytest.mark.parametrize(
    "torch_module,jax_module",
    [
        (torch.nn.ReLU(), jnn.ReLU()),
        (torch.nn.ReLU(inplace=True), jnn.ReLU(inplace=True)),
        (torch.nn.LeakyReLU(), jnn.LeakyReLU()),
        (torch.nn.LeakyReLU(0.3), jnn.LeakyReLU(0.3)),
        (torch.nn.Sigmoid(), jnn.Sigmoid()),
        (torch.nn.Tanh(), jnn.Tanh()),
    ],
    ids=["ReLU", "ReLU-inplace", "LeakyReLU", "LeakyReLU0.3", "Sigmoid", "Tanh"],
)
def test_activation_modules(rng, torch_module, jax_module):
    x = activation_input(rng)
    # _Cloned: torch's in-place ReLU must not modify a leaf that requires grad
    check_module_parity(jax_module, _Cloned(torch_module), x, rng)


class _Cloned(torch.nn.Module):
    """Runs ``module`` on a clone, so in-place torch activations work on leaf tensors."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, x):
        return self.module(x.clone())

    def state_dict(self, *args, **kwargs):  # the wrapper adds no state of its own
        return self.module.state_dict(*args, **kwargs)


# ------------------------------------------------------------------------------------
# Flatten
# ------------------------------------------------------------------------------------


@pytest.mark.parametrize("start_dim,end_dim", [(1, -1), (0, -1), (2, 3), (1, 2), (2, -1), (0, 1), (3, 3)])
def test_flatten_torch_order(rng, start_dim, end_dim):
    """``torch_order=True`` on NHWC gives exactly torch.flatten on NCHW (dims in NCHW terms)."""
    x = randn(rng, 2, 3, 4, 5)
    check_function_parity(
        lambda t: torch.flatten(t, start_dim, end_dim),
        lambda a: F.flatten(a, start_dim, end_dim, torch_order=True),
        x,
        to_nhwc(x),
        rng,
        channels_last_output=False,
        grads_to_torch=[to_nchw],
    )


@pytest.mark.parametrize("shape,start_dim,end_dim", [((2, 3, 4, 5), 1, -1), ((2, 3, 4), 1, -1), ((4, 6), 0, -1), ((2, 3, 4), 0, 1)])
def test_flatten_plain_order(rng, shape, start_dim, end_dim):
    """Without ``torch_order`` (or on non-4-D inputs) it is torch.flatten on the same array."""
    x = randn(rng, *shape)
    for torch_order in (False, True):
        if torch_order and len(shape) == 4:
            continue
        check_function_parity(
            lambda t: torch.flatten(t, start_dim, end_dim),
            lambda a: F.flatten(a, start_dim, end_dim, torch_order=torch_order),
            x,
            x,
            rng,
            channels_last_output=False,
            grads_to_torch=[None],
        )


def test_flatten_module_default_is_torch_order(rng):
    x = randn(rng, 2, 3, 4, 5)
    check_module_parity(jnn.Flatten(), torch.nn.Flatten(), x, rng)  # (N, C*H*W): to_nchw is a no-op on 2-D
    assert_equal(
        np.asarray(jnn.Flatten(torch_order=False)(as_jax(to_nhwc(x)))), to_nhwc(x).reshape(2, -1), name="NHWC order"
    )


# ------------------------------------------------------------------------------------
# cross_entropy
# ------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 0.35])
@pytest.mark.parametrize("scale", [1.0, 40.0])
def test_cross_entropy(rng, reduction, label_smoothing, scale):
    logits = randn(rng, 9, 6, scale=scale)
    target = rng.integers(0, 6, size=9)
    check_function_parity(
        lambda x, t: TF.cross_entropy(x, t, reduction=reduction, label_smoothing=label_smoothing),
        lambda x, t: F.cross_entropy(x, t, reduction=reduction, label_smoothing=label_smoothing),
        (logits, target.astype(np.int64)),
        (logits, target.astype(np.int32)),
        rng,
        channels_last_output=False,
        grads_to_torch=[None, None],
    )


def test_cross_entropy_single_class_and_sample(rng):
    for n, c in [(1, 5), (4, 1)]:
        logits = randn(rng, n, c)
        target = rng.integers(0, c, size=n)
        check_function_parity(
            lambda x, t: TF.cross_entropy(x, t, label_smoothing=0.2),
            lambda x, t: F.cross_entropy(x, t, label_smoothing=0.2),
            (logits, target.astype(np.int64)),
            (logits, target.astype(np.int32)),
            rng,
            channels_last_output=False,
            grads_to_torch=[None, None],
        )


# ------------------------------------------------------------------------------------
# Dropout
# ------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_dropout_eval_and_edge_probabilities(rng, p):
    x = randn(rng, 4, 5, 6)
    for training in (False, True):
        torch_out = TF.dropout(torch.from_numpy(x), p, training)
        if p == 0.5 and training:
            continue  # random masks: see the tests below
        jax_out = F.dropout(as_jax(x), p, training, key=jax.random.key(0))
        assert_close(jax_out, torch_out, 0.0, name=f"dropout p={p} training={training}")
    assert_close(F.dropout(as_jax(x), p, False), x, 0.0)  # eval needs no key


@pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
def test_dropout_training_matches_torch_formula_with_same_mask(rng, p):
    """Kept entries are ``x / (1 - p)``, dropped ones 0, and the gradient uses the same mask.

    Torch's reference is computed from jaxcnn's mask with torch's own formula
    ``input * (mask / (1 - p))``.
    """
    x = randn(rng, 3, 50, 40) + 0.01  # no exact zeros, so the mask can be read back
    cotangent = randn(rng, *x.shape)
    key = jax.random.key(int(rng.integers(1 << 30)))
    j_out, (j_grad,) = jax_forward_backward(lambda a: F.dropout(a, p, True, key=key), (x,), cotangent)
    mask = (j_out != 0).astype(np.float32)
    noise = torch.from_numpy(mask) / (1 - p)
    t_out, (t_grad,), _ = torch_forward_backward(lambda t: t * noise, (x,), cotangent)
    assert_close(j_out, t_out, name="dropout output")
    assert_close(j_grad, t_grad, name="dropout grad")
    # Drop rate: 6000 Bernoulli draws, 5 standard errors.
    keep = mask.mean()
    assert abs(keep - (1 - p)) < 5 * np.sqrt(p * (1 - p) / mask.size)
    torch_keep = (TF.dropout(torch.from_numpy(x), p, True) != 0).float().mean().item()
    assert abs(torch_keep - (1 - p)) < 5 * np.sqrt(p * (1 - p) / mask.size)


def test_dropout_module_train_eval_and_fresh_masks(rng):
    x = as_jax(randn(rng, 8, 64) + 0.01)
    dropout = jnn.Dropout(0.5, rngs=nnx.Rngs(dropout=3))
    first, second = np.asarray(dropout(x)), np.asarray(dropout(x))  # train mode by default, like torch
    assert not np.array_equal(first != 0, second != 0), "each call must draw a new mask"
    assert set(np.unique(np.round(first / np.asarray(x), 5))) <= {0.0, 2.0}
    # A jitted step that carries the module state also draws a new mask every call.
    step = nnx.jit(lambda m, v: m(v))
    a, b = np.asarray(step(dropout, x)), np.asarray(step(dropout, x))
    assert not np.array_equal(a != 0, b != 0)
    dropout.eval()
    assert_close(dropout(x), x, 0.0, name="eval mode is the identity")
    dropout.train()
    assert (np.asarray(dropout(x)) == 0).any()
    assert_close(jnn.Dropout(0.0)(x), x, 0.0)  # p=0 never needs rngs
    model = jnn.Sequential(jnn.Linear(64, 4, rngs=nnx.Rngs(0)), jnn.Dropout(0.5, rngs=nnx.Rngs(1)))
    model.eval()
    assert model[1].deterministic
    model.train()
    assert not model[1].deterministic


# ------------------------------------------------------------------------------------
# Sequential
# ------------------------------------------------------------------------------------


def _jax_model(rngs):
    return jnn.Sequential(
        OrderedDict(
            features=jnn.Sequential(
                jnn.Conv2d(3, 4, 3, padding=1, rngs=rngs),
                jnn.BatchNorm2d(4),
                jnn.ReLU(inplace=True),
                jnn.MaxPool2d(2, ceil_mode=True),
                jnn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, bias=False, rngs=rngs),
                jnn.LeakyReLU(0.1),
                jnn.AvgPool2d(2, stride=1, padding=1, count_include_pad=False),
                jnn.AdaptiveAvgPool2d((2, 3)),
            ),
            flatten=jnn.Flatten(),
            classifier=jnn.Sequential(jnn.Dropout(0.5), jnn.Linear(36, 5, rngs=rngs), jnn.Sigmoid()),
        )
    )


def build_pair(seed=0):
    """The same small CNN in both frameworks, torch-style names (nested Sequentials).

    The jaxcnn model is built abstractly (its weights come from torch); its Dropout has no
    RNG stream and stays in eval mode (masks can't match across frameworks anyway).
    """
    jax_model = abstract_module(lambda: _jax_model(nnx.Rngs(seed)))
    torch_model = torch.nn.Sequential(
        OrderedDict(
            features=torch.nn.Sequential(
                torch.nn.Conv2d(3, 4, 3, padding=1),
                torch.nn.BatchNorm2d(4),
                torch.nn.ReLU(),
                torch.nn.MaxPool2d(2, ceil_mode=True),
                torch.nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, bias=False),
                torch.nn.LeakyReLU(0.1),
                torch.nn.AvgPool2d(2, stride=1, padding=1, count_include_pad=False),
                torch.nn.AdaptiveAvgPool2d((2, 3)),
            ),
            flatten=torch.nn.Flatten(),
            classifier=torch.nn.Sequential(torch.nn.Dropout(0.5), torch.nn.Linear(36, 5), torch.nn.Sigmoid()),
        )
    )
    return jax_model, torch_model


def test_sequential_state_paths_are_torch_state_dict_keys():
    jax_model, torch_model = build_pair()
    load_torch_state_dict(jax_model, torch_model.state_dict())
    assert set(torch_variables(jax_model)) == set(torch_model.state_dict())
    assert "features.1.num_batches_tracked" in torch_model.state_dict()
    params = {key: v for key, v in torch_variables(jax_model).items() if isinstance(v, nnx.Param)}
    assert set(params) == {name for name, _ in torch_model.named_parameters()}
    # Round trip through torch's load_state_dict.
    _, fresh_torch = build_pair()
    fresh_torch.load_state_dict(to_torch_state_dict(jax_model))
    assert_state_close(jax_model, fresh_torch, 0.0)


def test_sequential_train_steps_and_eval(rng):
    jax_model, torch_model = build_pair()
    # Train mode everywhere except the dropout layers (random masks differ by framework).
    torch_model.train()
    jax_model.train()
    torch_model.classifier[0].eval()
    jax_model.classifier[0].eval()
    # features.0.bias feeds a training-mode BatchNorm, which subtracts the batch mean: its
    # exact gradient is 0 and both frameworks return float32 rounding noise (~1e-8), so
    # it is compared against an absolute floor of 1e-5 * 1e-2 = 1e-7 instead.
    zero_grads = {"features.0.bias": 1e-2}
    for step in range(2):
        x = randn(rng, 3, 3, 9, 10) + 0.5 * step
        check_module_parity(jax_model, torch_model, x, rng, copy_weights=(step == 0), grad_min_scale=zero_grads)
    torch_model.eval()
    jax_model.eval()
    check_module_parity(jax_model, torch_model, randn(rng, 2, 3, 8, 7), rng, copy_weights=False)


def test_sequential_container_protocol(rng):
    layers = [jnn.ReLU(), jnn.Sigmoid(), jnn.Tanh()]
    seq = jnn.Sequential(*layers)
    assert len(seq) == 3 and seq[1] is layers[1] and list(seq) == layers
    x = randn(rng, 2, 5)
    assert_close(seq(as_jax(x)), torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Sigmoid(), torch.nn.Tanh())(torch.from_numpy(x)))
    assert_close(jnn.Sequential()(as_jax(x)), torch.nn.Sequential()(torch.from_numpy(x)), 0.0)
    named = abstract_module(lambda: jnn.Sequential(OrderedDict(first=jnn.Linear(5, 3, rngs=nnx.Rngs(0)), act=jnn.ReLU())))
    assert set(torch_variables(named)) == {"first.weight", "first.bias"}
    torch_named = torch.nn.Sequential(OrderedDict(first=torch.nn.Linear(5, 3), act=torch.nn.ReLU()))
    load_torch_state_dict(named, torch_named.state_dict())
    out, gx, grads = nnx_forward_backward(named, x)
    t_out, (t_gx,), t_grads = torch_forward_backward(torch_named, (x,), module=torch_named)
    assert_close(out, t_out)
    assert_close(gx, t_gx)
    for key in t_grads:
        assert_close(grads[key], t_grads[key], name=key)
