"""Invalid arguments: jaxcnn raises ``ValueError`` with an informative message.

Where torch also rejects the configuration (in its own NCHW layout), that is asserted
too, so jaxcnn's validation matches torch's rather than inventing stricter rules. A few
rejections are jaxcnn's own (noted inline): rank-3 inputs (torch would treat them as
unbatched) and zero adaptive output sizes (torch returns an empty tensor).
"""

from __future__ import annotations

import re

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from flax import nnx

import jaxcnn.nn as jnn
from jaxcnn.nn import functional as F

from conftest import abstract_module, to_nchw

X = jnp.ones((1, 5, 5, 2), jnp.float32)  # NHWC
W3 = jnp.ones((3, 3, 2, 4), jnp.float32)  # HWIO


def torch_rejects(fn, *args, **kwargs):
    """Assert torch raises (RuntimeError or ValueError) for the same configuration."""
    with pytest.raises((RuntimeError, ValueError)):
        fn(*args, **kwargs)


def nchw(x):
    return torch.from_numpy(np.array(to_nchw(np.asarray(x)), order="C"))


def oihw(w):
    return torch.from_numpy(np.array(np.asarray(w).transpose(3, 2, 0, 1), order="C"))


# ------------------------------------------------------------------------------------
# Wrong rank
# ------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(5, 5), (5, 5, 2), (1, 1, 5, 5, 2)])
@pytest.mark.parametrize(
    "op",
    [
        lambda x: F.conv2d(x, W3),
        lambda x: F.max_pool2d(x, 2),
        lambda x: F.avg_pool2d(x, 2),
        lambda x: F.adaptive_avg_pool2d(x, 2),
        lambda x: F.adaptive_max_pool2d(x, 2),
        lambda x: F.global_avg_pool2d(x),
        lambda x: F.global_max_pool2d(x),
    ],
    ids=["conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg", "adaptive_max", "global_avg", "global_max"],
)
def test_wrong_rank_rejected(shape, op):
    # jaxcnn's own rule for rank 3: torch would read (C, H, W) as one unbatched image, but
    # an NHWC library can't tell (H, W, C) from (N, H, W) -- so rank 4 is required.
    with pytest.raises(ValueError, match=r"4-D NHWC input.*got shape " + re.escape(str(shape))):
        op(jnp.ones(shape))


def test_wrong_rank_torch_also_rejects_2d_and_5d():
    torch_rejects(TF.conv2d, torch.ones(5, 5), oihw(W3))
    torch_rejects(TF.conv2d, torch.ones(1, 1, 2, 5, 5), oihw(W3))


def test_wrong_rank_modules():
    conv = abstract_module(lambda: jnn.Conv2d(2, 4, 3, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"Conv2d expects a 4-D NHWC input"):
        conv(jnp.ones((5, 5, 2)))
    with pytest.raises(ValueError, match=r"BatchNorm2d expects a 4-D NHWC .* input, got shape \(2, 3, 4\)"):
        jnn.BatchNorm2d(4)(jnp.ones((2, 3, 4)))
    torch_rejects(torch.nn.BatchNorm2d(4), torch.ones(2, 4, 3))
    with pytest.raises(ValueError, match=r"BatchNorm1d expects a \(N, C\) or \(N, L, C\) input, got shape \(2, 2, 2, 3\)"):
        jnn.BatchNorm1d(3)(jnp.ones((2, 2, 2, 3)))
    torch_rejects(torch.nn.BatchNorm1d(3), torch.ones(2, 3, 2, 2))
    with pytest.raises(ValueError, match=r"4-D HWIO weight"):
        F.conv2d(X, jnp.ones((3, 3, 2)))
    with pytest.raises(ValueError, match=r"at least a 2-D"):
        F.batch_norm(jnp.ones((3,)), None, None, training=True)


# ------------------------------------------------------------------------------------
# Channel / feature counts
# ------------------------------------------------------------------------------------


def test_conv2d_channel_mismatch():
    weight = jnp.ones((3, 3, 3, 4))  # expects 3 input channels, X has 2
    with pytest.raises(ValueError, match=r"input has 2 channels.*expects 3"):
        F.conv2d(X, weight)
    torch_rejects(TF.conv2d, nchw(X), oihw(weight))
    # groups: 2 groups of 1 input channel each -> 2 channels expected; X fits, 4 channels don't.
    grouped = jnp.ones((3, 3, 1, 4))
    assert F.conv2d(X, grouped, groups=2).shape == (1, 3, 3, 4)
    with pytest.raises(ValueError, match=r"input has 4 channels.*groups=2 expects 2"):
        F.conv2d(jnp.ones((1, 5, 5, 4)), grouped, groups=2)
    torch_rejects(TF.conv2d, torch.ones(1, 4, 5, 5), oihw(grouped), groups=2)


def test_conv2d_groups_must_divide_out_channels():
    weight = jnp.ones((3, 3, 1, 3))
    with pytest.raises(ValueError, match=r"out_channels \(3\) must be divisible by groups \(2\)"):
        F.conv2d(X, weight, groups=2)
    torch_rejects(TF.conv2d, nchw(X), oihw(weight), groups=2)
    with pytest.raises(ValueError, match=r"must be divisible by groups"):
        jnn.Conv2d(3, 4, 3, groups=2, rngs=nnx.Rngs(0))
    torch_rejects(torch.nn.Conv2d, 3, 4, 3, groups=2)


def test_module_channel_mismatch():
    conv = abstract_module(lambda: jnn.Conv2d(3, 4, 3, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"Conv2d\(3, 4\) got an input with 2 channels"):
        conv(X)
    torch_rejects(torch.nn.Conv2d(3, 4, 3), nchw(X))
    linear = abstract_module(lambda: jnn.Linear(3, 4, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"Linear\(3, 4\) got an input with 5 features"):
        linear(jnp.ones((2, 5)))
    torch_rejects(torch.nn.Linear(3, 4), torch.ones(2, 5))
    with pytest.raises(ValueError, match=r"linear: input has 5 features"):
        F.linear(jnp.ones((2, 5)), jnp.ones((3, 4)))
    with pytest.raises(ValueError, match=r"BatchNorm2d\(3\) got 2 channels on the last axis"):
        jnn.BatchNorm2d(3)(X)
    torch_rejects(torch.nn.BatchNorm2d(3), nchw(X))
    with pytest.raises(ValueError, match=r"running_mean has shape \(4,\), expected \(2,\)"):
        F.batch_norm(X, jnp.zeros(4), jnp.ones(2))


# ------------------------------------------------------------------------------------
# Kernel larger than the (padded) input
# ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape,kernel,padding,dilation",
    [((1, 3, 3, 1), 5, 0, 1), ((1, 3, 3, 1), 6, 1, 1), ((1, 5, 5, 1), 3, 0, 3), ((1, 8, 2, 1), (2, 3), 0, 1)],
)
def test_conv2d_kernel_larger_than_padded_input(shape, kernel, padding, dilation):
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    weight = jnp.ones((kh, kw, 1, 1))
    with pytest.raises(ValueError, match=r"larger than the padded input"):
        F.conv2d(jnp.ones(shape), weight, padding=padding, dilation=dilation)
    torch_rejects(TF.conv2d, nchw(jnp.ones(shape)), oihw(weight), padding=padding, dilation=dilation)


@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d"])
@pytest.mark.parametrize("shape,kernel,stride,padding", [((1, 2, 2, 1), 3, None, 0), ((1, 4, 1, 1), 2, 1, 0), ((1, 1, 3, 1), 6, 1, 2)])
def test_pool_kernel_larger_than_padded_input(op, shape, kernel, stride, padding):
    with pytest.raises(ValueError, match=rf"{op}: input .* is too small for kernel_size.*output size would be"):
        getattr(F, op)(jnp.ones(shape), kernel, stride, padding)
    torch_rejects(getattr(TF, op), nchw(jnp.ones(shape)), kernel, stride, padding)


# ------------------------------------------------------------------------------------
# Pooling padding larger than half the kernel (torch's rule)
# ------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d"])
@pytest.mark.parametrize("kernel,padding", [(3, 2), (2, 2), ((3, 4), (1, 3)), (1, 1)])
def test_pool_padding_larger_than_half_kernel(op, kernel, padding):
    x = jnp.ones((1, 8, 8, 2))
    with pytest.raises(ValueError, match=r"pad should be at most half of kernel size"):
        getattr(F, op)(x, kernel, 1, padding)
    torch_rejects(getattr(TF, op), nchw(x), kernel, 1, padding)
    module = jnn.MaxPool2d(kernel, 1, padding) if op == "max_pool2d" else jnn.AvgPool2d(kernel, 1, padding)
    with pytest.raises(ValueError, match=r"pad should be at most half of kernel size"):
        module(x)


def test_pool_padding_exactly_half_kernel_is_fine():
    assert F.max_pool2d(jnp.ones((1, 4, 4, 1)), 4, 1, 2).shape == (1, 5, 5, 1)
    assert TF.max_pool2d(torch.ones(1, 1, 4, 4), 4, 1, 2).shape == (1, 1, 5, 5)


# ------------------------------------------------------------------------------------
# Non-positive sizes and other invalid arguments
# ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call,match,torch_call",
    [
        (lambda: F.max_pool2d(X, 0), r"kernel_size must be positive", lambda: TF.max_pool2d(nchw(X), 0)),
        (lambda: F.max_pool2d(X, 2, 0), r"stride must be positive", lambda: TF.max_pool2d(nchw(X), 2, 0)),
        (lambda: F.max_pool2d(X, 2, (1, -1)), r"stride must be positive", None),
        (lambda: F.max_pool2d(X, 2, 1, 0, 0), r"dilation must be positive", lambda: TF.max_pool2d(nchw(X), 2, 1, 0, 0)),
        (lambda: F.max_pool2d(X, 2, 1, -1), r"padding must be non-negative", lambda: TF.max_pool2d(nchw(X), 2, 1, -1)),
        (lambda: F.avg_pool2d(X, 2, 0), r"stride must be positive", lambda: TF.avg_pool2d(nchw(X), 2, 0)),
        (lambda: F.avg_pool2d(X, (0, 2)), r"kernel_size must be positive", None),
        (lambda: F.avg_pool2d(X, 2, divisor_override=0), r"divisor_override must be non-zero",
         lambda: TF.avg_pool2d(nchw(X), 2, divisor_override=0)),
        (lambda: F.adaptive_avg_pool2d(X, -1), r"output_size must be positive", lambda: TF.adaptive_avg_pool2d(nchw(X), -1)),
        # jaxcnn's own rule: torch returns an empty tensor for a zero output size.
        (lambda: F.adaptive_avg_pool2d(X, 0), r"output_size must be positive", None),
        (lambda: F.adaptive_max_pool2d(X, (3, 0)), r"output_size must be positive", None),
        (lambda: F.adaptive_max_pool2d(X, (1, 2, 3)), r"output_size must be an int or a pair", None),
        (lambda: F.conv2d(X, W3, stride=0), r"stride must be positive", lambda: TF.conv2d(nchw(X), oihw(W3), stride=0)),
        (lambda: F.conv2d(X, W3, dilation=(1, 0)), r"dilation must be positive", None),
        (lambda: F.conv2d(X, W3, padding=-1), r"padding must be non-negative", lambda: TF.conv2d(nchw(X), oihw(W3), padding=-1)),
        (lambda: F.conv2d(X, W3, groups=0), r"groups must be positive", None),
        (lambda: F.conv2d(X, jnp.ones((0, 3, 2, 4))), r"kernel_size must be positive",
         lambda: TF.conv2d(nchw(X), torch.ones(4, 2, 0, 3))),
        (lambda: F.conv2d(X, W3, padding="full"), r"padding must be an int, a pair, 'same' or 'valid'",
         lambda: TF.conv2d(nchw(X), oihw(W3), padding="full")),
        (lambda: F.max_pool2d(X, (2, 2, 2)), r"kernel_size must be an int or a pair", None),
        # torch only fails on the first forward call (an empty kernel); jaxcnn at construction.
        (lambda: jnn.Conv2d(2, 4, 0, rngs=nnx.Rngs(0)), r"kernel_size must be positive", None),
        (lambda: jnn.Conv2d(2, 4, 3, stride=0, rngs=nnx.Rngs(0)), r"stride must be positive", None),
        (lambda: jnn.Conv2d(2, 4, 3, padding=-1, rngs=nnx.Rngs(0)), r"padding must be non-negative", None),
        (lambda: jnn.Conv2d(0, 4, 3, rngs=nnx.Rngs(0)), r"in_channels, out_channels and groups must be positive", None),
        (lambda: jnn.Conv2d(2, 4, 3, groups=0, rngs=nnx.Rngs(0)), r"must be positive", lambda: torch.nn.Conv2d(2, 4, 3, groups=0)),
        (lambda: jnn.Conv2d(2, 4, 3, padding_mode="zero", rngs=nnx.Rngs(0)), r"padding_mode must be",
         lambda: torch.nn.Conv2d(2, 4, 3, padding_mode="zero")),
        (lambda: jnn.Linear(0, 3, rngs=nnx.Rngs(0)), r"in_features and out_features must be positive", None),
        (lambda: jnn.BatchNorm2d(0), r"num_features must be positive", None),
        (lambda: jnn.Dropout(1.5), r"dropout probability has to be between 0 and 1", lambda: torch.nn.Dropout(1.5)),
        (lambda: F.dropout(X, -0.1), r"dropout probability has to be between 0 and 1", lambda: TF.dropout(nchw(X), -0.1)),
        (lambda: F.dropout(X, 0.5), r"needs a random key", None),
        (lambda: jnn.Dropout(0.5)(X), r"needs rngs", None),
        (lambda: F.cross_entropy(jnp.ones((2, 3)), jnp.array([0, 1]), reduction="avg"), r"reduction must be 'mean', 'sum' or 'none'",
         lambda: TF.cross_entropy(torch.ones(2, 3), torch.tensor([0, 1]), reduction="avg")),
        (lambda: F.flatten(jnp.ones((2, 3, 4)), 2, 1), r"start_dim 2 comes after end_dim 1", lambda: torch.flatten(torch.ones(2, 3, 4), 2, 1)),
        (lambda: jnn.BatchNorm1d(3)(jnp.ones((1, 3))), r"Expected more than 1 value per channel when training",
         lambda: torch.nn.BatchNorm1d(3)(torch.ones(1, 3))),
        (lambda: jnn.BatchNorm2d(3)(jnp.ones((1, 1, 1, 3))), r"Expected more than 1 value per channel when training",
         lambda: torch.nn.BatchNorm2d(3)(torch.ones(1, 3, 1, 1))),
    ],
)
def test_invalid_arguments(call, match, torch_call):
    with pytest.raises(ValueError, match=match):
        call()
    if torch_call is not None:
        torch_rejects(torch_call)


# ------------------------------------------------------------------------------------
# 'same' padding with stride > 1, and padding_mode limits
# ------------------------------------------------------------------------------------


@pytest.mark.parametrize("stride", [2, (1, 2), (3, 1)])
def test_same_padding_with_stride_rejected(stride):
    with pytest.raises(ValueError, match=r"padding='same' is not supported for strided convolutions"):
        F.conv2d(X, W3, stride=stride, padding="same")
    with pytest.raises(ValueError, match=r"padding='same' is not supported for strided convolutions"):
        jnn.Conv2d(2, 4, 3, stride=stride, padding="same", rngs=nnx.Rngs(0))
    torch_rejects(TF.conv2d, nchw(X), oihw(W3), stride=stride, padding="same")
    torch_rejects(torch.nn.Conv2d, 2, 4, 3, stride=stride, padding="same")


@pytest.mark.parametrize(
    "mode,padding,match",
    [("reflect", 3, r"reflect.*must be less than the input size 3"), ("reflect", (1, 4), r"reflect.*along W"),
     ("circular", 4, r"circular.*wrap around more than once")],
)
def test_padding_mode_limits_match_torch(mode, padding, match):
    x = jnp.ones((1, 3, 3, 2))
    conv = abstract_module(lambda: jnn.Conv2d(2, 2, 1, padding=padding, padding_mode=mode, rngs=nnx.Rngs(0)))
    conv.weight.set_value(jnp.ones((1, 1, 2, 2)))
    conv.bias.set_value(jnp.zeros(2))
    with pytest.raises(ValueError, match=match):
        conv(x)
    torch_rejects(torch.nn.Conv2d(2, 2, 1, padding=padding, padding_mode=mode), nchw(x))


def test_padding_mode_limits_boundaries_are_accepted():
    """reflect allows padding size - 1, circular allows padding == size (as torch)."""
    x = jnp.ones((1, 3, 3, 2))
    for mode, padding in [("reflect", 2), ("circular", 3), ("replicate", 5)]:
        conv = abstract_module(lambda: jnn.Conv2d(2, 2, 1, padding=padding, padding_mode=mode, rngs=nnx.Rngs(0)))
        conv.weight.set_value(jnp.ones((1, 1, 2, 2)))
        conv.bias.set_value(jnp.zeros(2))
        side = 3 + 2 * padding
        assert conv(x).shape == (1, side, side, 2)
        assert torch.nn.Conv2d(2, 2, 1, padding=padding, padding_mode=mode)(nchw(x)).shape == (1, 2, side, side)
