"""Parity of ``jaxcnn.nn.functional.batch_norm`` and ``BatchNorm1d`` / ``BatchNorm2d`` with torch.

Training mode is checked over several steps: after every step the output, the input and
parameter gradients, ``running_mean``, ``running_var`` (updated with the *unbiased*
batch variance) and ``num_batches_tracked`` must match torch. Eval mode uses randomised
running statistics and affine parameters. The sensitivity tests at the end break the
statistics update on purpose and check that these comparisons then fail.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from jaxcnn.convert import torch_variables
import jaxcnn.nn as jnn
import jaxcnn.nn.functional as F

from conftest import (
    as_jax,
    assert_close,
    assert_equal,
    assert_state_close,
    check_module_parity,
    jax_forward_backward,
    randn,
    to_nchw,
    to_nhwc,
    torch_forward_backward,
)


def shifted_batch(rng, shape, step=0):
    """A batch whose per-channel mean and scale differ between channels and steps."""
    channels = shape[1]
    mean = rng.uniform(-2, 2, size=channels) + 0.3 * step
    scale = rng.uniform(0.5, 2.0, size=channels)
    bshape = (1, channels) + (1,) * (len(shape) - 2)
    return (randn(rng, *shape) * scale.reshape(bshape) + mean.reshape(bshape)).astype(np.float32)


def random_affine(rng, channels):
    return randn(rng, channels) * 0.5 + 1.0, randn(rng, channels) * 0.5


# ------------------------------------------------------------------------------------
# Functional batch_norm
# ------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(4, 3, 5, 6), (8, 5), (3, 4, 7)])
@pytest.mark.parametrize("momentum,eps", [(0.1, 1e-5), (0.35, 1e-3)])
def test_batch_norm_functional_training(rng, shape, momentum, eps):
    channels = shape[1]
    x = shifted_batch(rng, shape)
    weight, bias = random_affine(rng, channels)
    running_mean, running_var = randn(rng, channels), rng.uniform(0.5, 2.0, channels).astype(np.float32)
    cotangent = randn(rng, *shape)

    t_mean, t_var = torch.from_numpy(running_mean.copy()), torch.from_numpy(running_var.copy())

    def torch_fn(x, w, b):
        return TF.batch_norm(x, t_mean, t_var, w, b, training=True, momentum=momentum, eps=eps)

    t_out, t_grads, _ = torch_forward_backward(torch_fn, (x, weight, bias), cotangent)  # updates t_mean, t_var

    def jax_fn(x, w, b):
        return F.batch_norm(x, as_jax(running_mean), as_jax(running_var), w, b, training=True, momentum=momentum, eps=eps)[0]

    j_out, j_grads = jax_forward_backward(jax_fn, (to_nhwc(x), weight, bias), to_nhwc(cotangent))
    assert_close(to_nchw(j_out), t_out, name="output")
    assert_close(to_nchw(j_grads[0]), t_grads[0], name="grad x")
    assert_close(j_grads[1], t_grads[1], name="grad weight")
    assert_close(j_grads[2], t_grads[2], name="grad bias")

    _, new_mean, new_var = F.batch_norm(
        as_jax(to_nhwc(x)), as_jax(running_mean), as_jax(running_var), as_jax(weight), as_jax(bias), True, momentum, eps
    )
    assert_close(new_mean, t_mean, name="running_mean")
    assert_close(new_var, t_var, name="running_var")


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (6, 4), (2, 3, 5)])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_functional_eval(rng, shape, affine):
    channels = shape[1]
    x = shifted_batch(rng, shape)
    running_mean, running_var = randn(rng, channels), rng.uniform(0.2, 3.0, channels).astype(np.float32)
    weight, bias = random_affine(rng, channels)
    cotangent = randn(rng, *shape)
    t_stats = (torch.from_numpy(running_mean.copy()), torch.from_numpy(running_var.copy()))
    inputs = (x, weight, bias) if affine else (x,)

    def torch_fn(x, w=None, b=None):
        return TF.batch_norm(x, *t_stats, w, b, training=False, eps=1e-5)

    def jax_fn(x, w=None, b=None):
        return F.batch_norm(x, as_jax(running_mean), as_jax(running_var), w, b, training=False, eps=1e-5)[0]

    t_out, t_grads, _ = torch_forward_backward(torch_fn, inputs, cotangent)
    j_out, j_grads = jax_forward_backward(jax_fn, (to_nhwc(x),) + inputs[1:], to_nhwc(cotangent))
    assert_close(to_nchw(j_out), t_out, name="output")
    assert_close(to_nchw(j_grads[0]), t_grads[0], name="grad x")
    for i in range(1, len(inputs)):
        assert_close(j_grads[i], t_grads[i], name=f"grad of input {i}")
    # Eval leaves the statistics alone.
    _, m, v = F.batch_norm(as_jax(to_nhwc(x)), as_jax(running_mean), as_jax(running_var), training=False)
    assert_equal(np.asarray(m), running_mean)
    assert_equal(np.asarray(v), running_var)
    assert_equal(t_stats[0].numpy(), running_mean)


# ------------------------------------------------------------------------------------
# BatchNorm modules: several training steps, then eval
# ------------------------------------------------------------------------------------


def make_pair(kind, channels, rng=None, randomise=False, **kwargs):
    torch_bn = getattr(torch.nn, kind)(channels, **kwargs)
    jax_bn = getattr(jnn, kind)(channels, **kwargs)
    if randomise:
        with torch.no_grad():
            if torch_bn.affine:
                torch_bn.weight.copy_(torch.from_numpy(randn(rng, channels) * 0.5 + 1.0))
                torch_bn.bias.copy_(torch.from_numpy(randn(rng, channels)))
            if torch_bn.track_running_stats:
                torch_bn.running_mean.copy_(torch.from_numpy(randn(rng, channels)))
                torch_bn.running_var.copy_(torch.from_numpy(rng.uniform(0.2, 3.0, channels).astype(np.float32)))
                torch_bn.num_batches_tracked.fill_(int(rng.integers(0, 50)))
    return torch_bn, jax_bn


def run_steps(rng, torch_bn, jax_bn, shape, steps=3, jit=True):
    """Train-mode steps then an eval step; everything compared after each step."""
    torch_bn.train()
    jax_bn.train()
    for step in range(steps):
        check_module_parity(jax_bn, torch_bn, shifted_batch(rng, shape, step), rng, copy_weights=(step == 0), jit=jit)
    torch_bn.eval()
    jax_bn.eval()
    check_module_parity(jax_bn, torch_bn, shifted_batch(rng, shape, steps), rng, copy_weights=False, jit=jit)


@pytest.mark.parametrize("momentum", [0.1, 0.4, None])
def test_batchnorm2d_training_steps(rng, momentum):
    torch_bn, jax_bn = make_pair("BatchNorm2d", 3, momentum=momentum)
    run_steps(rng, torch_bn, jax_bn, (4, 3, 5, 6), steps=4)
    assert int(jax_bn.num_batches_tracked.get_value()) == 4


def test_batchnorm2d_momentum_none_is_cumulative_average(rng):
    """momentum=None: running stats are the plain average of all batch statistics."""
    _, jax_bn = make_pair("BatchNorm2d", 2, momentum=None)
    batches = [shifted_batch(rng, (3, 2, 4, 4), step) for step in range(3)]
    for b in batches:
        jax_bn(as_jax(to_nhwc(b)))
    means = np.mean([b.mean(axis=(0, 2, 3)) for b in batches], axis=0)
    variances = np.mean([b.var(axis=(0, 2, 3), ddof=1) for b in batches], axis=0)
    assert_close(jax_bn.running_mean.get_value(), means)
    assert_close(jax_bn.running_var.get_value(), variances)


def test_batchnorm2d_randomised_state_training_and_eval(rng):
    torch_bn, jax_bn = make_pair("BatchNorm2d", 4, rng, randomise=True, eps=1e-3, momentum=0.2)
    run_steps(rng, torch_bn, jax_bn, (2, 4, 3, 5), steps=2)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_batchnorm2d_eval_randomised(rng, momentum):
    torch_bn, jax_bn = make_pair("BatchNorm2d", 5, rng, randomise=True, momentum=momentum)
    torch_bn.eval()
    jax_bn.eval()
    check_module_parity(jax_bn, torch_bn, shifted_batch(rng, (2, 5, 4, 3)), rng)
    assert_state_close(jax_bn, torch_bn)  # eval leaves every buffer (incl. the counter) alone


@pytest.mark.parametrize("shape", [(8, 4), (3, 4, 6)])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_batchnorm1d_training_steps(rng, shape, momentum):
    """(N, C) and torch (N, C, L) == jaxcnn (N, L, C)."""
    torch_bn, jax_bn = make_pair("BatchNorm1d", 4, rng, randomise=True, momentum=momentum)
    run_steps(rng, torch_bn, jax_bn, shape, steps=3)


@pytest.mark.parametrize("kind,shape", [("BatchNorm2d", (3, 3, 4, 4)), ("BatchNorm1d", (5, 3)), ("BatchNorm1d", (2, 3, 5))])
def test_batchnorm_affine_false(rng, kind, shape):
    torch_bn, jax_bn = make_pair(kind, 3, rng, randomise=True, affine=False)
    assert jax_bn.weight is None and jax_bn.bias is None
    assert set(torch_variables(jax_bn)) == set(torch_bn.state_dict()) == {"running_mean", "running_var", "num_batches_tracked"}
    run_steps(rng, torch_bn, jax_bn, shape, steps=2)


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("kind,shape", [("BatchNorm2d", (3, 2, 4, 5)), ("BatchNorm1d", (6, 2)), ("BatchNorm1d", (2, 2, 5))])
def test_batchnorm_track_running_stats_false(rng, kind, shape, affine):
    """No running statistics: batch statistics in train *and* eval mode, no state."""
    torch_bn, jax_bn = make_pair(kind, 2, rng, randomise=True, affine=affine, track_running_stats=False)
    assert set(torch_variables(jax_bn)) == set(torch_bn.state_dict())
    run_steps(rng, torch_bn, jax_bn, shape, steps=1)


def test_batchnorm_state_dict_keys_and_dtypes():
    torch_bn, jax_bn = make_pair("BatchNorm2d", 3)
    variables = torch_variables(jax_bn)
    assert set(variables) == set(torch_bn.state_dict())
    for key, tensor in torch_bn.state_dict().items():
        value = variables[key].get_value()
        assert value.shape == tuple(tensor.shape), key
        assert np.issubdtype(value.dtype, np.integer) == (not tensor.is_floating_point()), key
    assert_state_close(jax_bn, torch_bn)  # the default init matches torch's


# ------------------------------------------------------------------------------------
# Sensitivity: breaking the statistics update makes the checks fail.
# ------------------------------------------------------------------------------------


def _biased_running_var(real):
    """batch_norm that updates running_var with the biased (1/n) variance."""

    def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
        out, mean, var = real(input, running_mean, running_var, weight, bias, training, momentum, eps)
        if training and running_var is not None:
            biased = jnp.var(input, axis=tuple(range(input.ndim - 1)))
            var = (1 - momentum) * running_var + momentum * biased
        return out, mean, var

    return batch_norm


def test_sensitivity_unbiased_running_var(rng, monkeypatch):
    shape = (4, 3, 2, 2)  # 16 values per channel: n/(n-1) = 1.067, far beyond tolerance
    torch_bn, jax_bn = make_pair("BatchNorm2d", 3)
    run_steps(rng, torch_bn, jax_bn, shape, steps=1, jit=False)  # the real code passes

    # jit=False: the patched function must be traced (see nnx_forward_backward).
    monkeypatch.setattr(F, "batch_norm", _biased_running_var(F.batch_norm))
    torch_bn, jax_bn = make_pair("BatchNorm2d", 3)
    with pytest.raises(AssertionError, match=r"state\[running_var\]"):
        run_steps(rng, torch_bn, jax_bn, shape, steps=1, jit=False)


def test_sensitivity_flax_momentum_convention(rng, monkeypatch):
    """Using Flax's momentum convention (1 - torch's) breaks the running statistics."""
    real = F.batch_norm

    def flax_momentum(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
        return real(input, running_mean, running_var, weight, bias, training, 1 - momentum, eps)

    monkeypatch.setattr(F, "batch_norm", flax_momentum)
    torch_bn, jax_bn = make_pair("BatchNorm2d", 3)
    with pytest.raises(AssertionError, match=r"state\[running_"):
        run_steps(rng, torch_bn, jax_bn, (4, 3, 2, 2), steps=1, jit=False)


def test_sensitivity_eval_uses_running_stats(rng, monkeypatch):
    """Normalising with batch statistics in eval mode is caught."""
    real = F.batch_norm

    def batch_stats_always(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
        out = real(input, None, None, weight, bias, True, momentum, eps)[0]
        return out, running_mean, running_var

    torch_bn, jax_bn = make_pair("BatchNorm2d", 3, rng, randomise=True)
    torch_bn.eval()
    jax_bn.eval()
    monkeypatch.setattr(F, "batch_norm", batch_stats_always)
    with pytest.raises(AssertionError, match="output"):
        check_module_parity(jax_bn, torch_bn, shifted_batch(rng, (2, 3, 4, 4)), rng, jit=False)
