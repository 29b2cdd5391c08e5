"""Parity of ``jaxcnn.nn.functional.conv2d`` and ``jaxcnn.nn.Conv2d`` with torch.

Every case copies the same weights into both frameworks, runs both on the same input
(NCHW for torch, NHWC for jaxcnn) and compares the output, the input gradient and the
weight/bias gradients (VJP with a random cotangent) at rtol 1e-5 of the reference scale.
The functional cases run with both convolution backends (oneDNN and XLA, see
``jaxcnn.nn.native.onednn_conv``); modules and models use the default.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st

import jaxcnn.nn as jnn
from jaxcnn.nn import functional as F
from jaxcnn.nn.functional import conv as conv_module
from jaxcnn.nn import using_conv_backend

from conftest import (
    abstract_module,
    assert_close,
    check_function_parity,
    check_module_parity,
    default_init_bound,
    fuzz_settings,
    randn,
    to_nhwc,
    uniformity_pvalue,
)

# torch warns that an even kernel with padding='same' needs a padded copy of the input.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")

OIHW_TO_HWIO = (2, 3, 1, 0)
HWIO_TO_OIHW = (3, 2, 0, 1)


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def check_conv2d(rng, n, cin, hw, cout, kernel, stride=1, padding=0, dilation=1, groups=1, bias=True):
    """F.conv2d vs torch.nn.functional.conv2d: output and gradients for x, weight, bias."""
    kh, kw = _pair(kernel)
    h, w = _pair(hw)
    x = randn(rng, n, cin, h, w)
    weight = randn(rng, cout, cin // groups, kh, kw, scale=0.5)
    inputs_t = [x, weight] + ([randn(rng, cout)] if bias else [])

    def torch_fn(x, weight, b=None):
        return torch.nn.functional.conv2d(x, weight, b, stride, padding, dilation, groups)

    def jax_fn(x, weight, b=None):
        return F.conv2d(x, weight, b, stride, padding, dilation, groups)

    inputs_j = [to_nhwc(x), weight.transpose(OIHW_TO_HWIO)] + inputs_t[2:]
    grads_to_torch = [lambda g: g.transpose(0, 3, 1, 2), lambda g: g.transpose(HWIO_TO_OIHW), None]
    return check_function_parity(torch_fn, jax_fn, inputs_t, inputs_j, rng, grads_to_torch=grads_to_torch)


# (n, cin, (h, w), cout, kernel, stride, padding, dilation, groups)
CONV_CASES = [
    (2, 3, 8, 4, 3, 1, 0, 1, 1),  # plain, even input
    (2, 3, 7, 4, 3, 1, 1, 1, 1),  # odd input, padding k//2
    (1, 3, 8, 5, 3, 2, 1, 1, 1),  # stride 2, even input
    (1, 3, 9, 5, 3, 2, 1, 1, 1),  # stride 2, odd input
    (1, 2, 9, 3, 3, 2, 0, 1, 1),  # stride 2 without padding, odd input
    (2, 2, 10, 3, 5, 2, 2, 1, 1),  # 5x5 stride 2 padding 2
    (1, 2, 11, 3, 5, 1, 1, 1, 1),  # padding smaller than k//2
    (1, 2, 6, 3, 4, 1, 2, 1, 1),  # even kernel, padding k//2
    (1, 2, 7, 3, 2, 2, 1, 1, 1),  # even kernel, stride 2
    (1, 1, 5, 2, 1, 1, 0, 1, 1),  # 1x1 conv
    (1, 4, 6, 6, 1, 2, 0, 1, 1),  # 1x1 strided (ResNet shortcut)
    (1, 2, 9, 3, 3, 1, 2, 2, 1),  # dilation 2
    (1, 2, 12, 3, 3, 2, 3, 3, 1),  # dilation 3, stride 2
    (2, 4, 7, 6, 3, 1, 1, 1, 2),  # groups 2
    (1, 6, 8, 9, 3, 2, 1, 1, 3),  # groups 3, stride 2
    (2, 4, 7, 4, 3, 1, 1, 1, 4),  # depthwise
    (1, 3, 8, 6, 3, 2, 1, 1, 3),  # depthwise with channel multiplier 2, stride 2
    (1, 2, (7, 10), 3, (3, 5), (1, 2), (1, 2), (1, 1), 1),  # rectangular everything
    (1, 2, (9, 6), 3, (5, 3), (2, 1), (0, 1), (2, 1), 1),  # asymmetric dilation
    (1, 2, 5, 3, 5, 1, 0, 1, 1),  # kernel == input: 1x1 output
    (1, 2, 3, 2, 5, 1, 1, 1, 1),  # kernel larger than input, fits the padded input
    (1, 2, 5, 3, 3, 1, 4, 1, 1),  # padding larger than the kernel (allowed for conv)
    (2, 3, 8, 4, 3, 1, "same", 1, 1),
    (1, 3, 7, 4, 4, 1, "same", 1, 1),  # even kernel: torch pads the extra row/col at the end
    (1, 3, 7, 4, (2, 4), 1, "same", (1, 1), 1),
    (1, 2, 9, 4, (4, 3), 1, "same", (2, 3), 2),  # even kernel + dilation + groups
    (1, 3, 7, 4, 3, 1, "valid", 1, 1),
    (1, 3, 8, 4, 4, 2, "valid", 1, 1),
]


# oneDNN's convolutions are XLA:CPU custom calls: off the CPU that case cannot run, and skips.
ONEDNN = pytest.param(
    "onednn",
    marks=pytest.mark.skipif(
        jax.default_backend() != "cpu", reason=f"oneDNN convolutions run on XLA:CPU only; JAX computes on {jax.default_backend()}"
    ),
)
BACKENDS = pytest.mark.parametrize("backend", [ONEDNN, "xla"])


@BACKENDS
@pytest.mark.parametrize("n,cin,hw,cout,kernel,stride,padding,dilation,groups", CONV_CASES)
def test_conv2d_functional(rng, backend, n, cin, hw, cout, kernel, stride, padding, dilation, groups):
    with using_conv_backend(backend):
        check_conv2d(rng, n, cin, hw, cout, kernel, stride, padding, dilation, groups)


def test_conv2d_functional_no_bias(rng):
    check_conv2d(rng, 2, 3, 6, 4, 3, 1, 1, 1, 1, bias=False)


def test_conv_padding_same_even_kernel_pads_at_end():
    # torch: total d*(k-1), total//2 before, the rest after.
    assert conv_module.conv_padding("same", (4, 3), (1, 1), (1, 1)) == ((1, 2), (1, 1))
    assert conv_module.conv_padding("same", (2, 2), (1, 1), (3, 1)) == ((1, 2), (0, 1))
    assert conv_module.conv_padding("valid", (4, 4), (2, 2), (1, 1)) == ((0, 0), (0, 0))
    assert conv_module.conv_padding((1, 2), (3, 5), (2, 2), (1, 1)) == ((1, 1), (2, 2))


@st.composite
def conv_configs(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cin = groups * draw(st.integers(1, 3))
    cout = groups * draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    mode = draw(st.sampled_from(["int", "int", "pair", "same", "valid"]))
    if mode == "same":
        stride = 1
    else:
        stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    if mode == "int":
        p = draw(st.integers(0, 2))
        padding, pads = p, (p, p)
    elif mode == "pair":
        pads = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
        padding = pads
    elif mode == "same":
        padding, pads = "same", (0, 0)  # torch pads as needed; any input size works
    else:
        padding, pads = "valid", (0, 0)
    # Inputs large enough that the dilated kernel fits the padded input (torch requires it).
    h = draw(st.integers(max(1, dh * (kh - 1) + 1 - 2 * pads[0]), 9))
    w = draw(st.integers(max(1, dw * (kw - 1) + 1 - 2 * pads[1]), 9))
    n = draw(st.integers(1, 2))
    return n, cin, (h, w), cout, (kh, kw), stride, padding, (dh, dw), groups


@BACKENDS
@fuzz_settings(max_examples=30)
@given(config=conv_configs(), seed=st.integers(0, 2**16))
def test_conv2d_functional_fuzz(backend, config, seed):
    n, cin, hw, cout, kernel, stride, padding, dilation, groups = config
    with using_conv_backend(backend):
        check_conv2d(np.random.default_rng(seed), n, cin, hw, cout, kernel, stride, padding, dilation, groups)


# ------------------------------------------------------------------------------------
# Conv2d module (weights copied from torch, gradients w.r.t. parameters)
# ------------------------------------------------------------------------------------

MODULE_CASES = [
    # (cin, cout, kernel, kwargs, (n, h, w))
    (3, 4, 3, dict(), (2, 6, 6)),
    (3, 4, 3, dict(stride=2, padding=1), (2, 7, 7)),
    (4, 4, 3, dict(padding=1, groups=4, bias=False), (1, 6, 5)),
    (4, 6, 3, dict(padding=2, dilation=2, groups=2), (1, 7, 8)),
    (2, 3, 4, dict(padding="same"), (1, 7, 6)),
    (2, 3, 3, dict(padding="valid", stride=(2, 1)), (1, 7, 6)),
    (2, 3, 3, dict(padding=1, padding_mode="reflect"), (2, 6, 7)),
    (2, 3, 5, dict(padding=2, stride=2, padding_mode="reflect"), (1, 7, 8)),
    (2, 3, 3, dict(padding=(1, 2), padding_mode="replicate"), (1, 5, 6)),
    (2, 3, 5, dict(padding=2, stride=2, padding_mode="replicate"), (1, 8, 7)),
    (2, 3, 3, dict(padding=1, padding_mode="circular"), (1, 6, 5)),
    (2, 3, 5, dict(padding=(2, 1), padding_mode="circular", dilation=(1, 2)), (1, 6, 7)),
    (2, 3, 4, dict(padding="same", padding_mode="reflect"), (1, 7, 6)),  # extra pad at the end
    (2, 4, (2, 4), dict(padding="same", padding_mode="circular", groups=2), (1, 5, 6)),
    (2, 3, 3, dict(padding=3, padding_mode="replicate"), (1, 4, 5)),  # replicate pad > input/2
]


@pytest.mark.parametrize("cin,cout,kernel,kwargs,nhw", MODULE_CASES)
def test_conv2d_module(rng, cin, cout, kernel, kwargs, nhw):
    torch_conv = torch.nn.Conv2d(cin, cout, kernel, **kwargs)
    jax_conv = abstract_module(lambda: jnn.Conv2d(cin, cout, kernel, **kwargs, rngs=nnx.Rngs(0)))
    n, h, w = nhw
    check_module_parity(jax_conv, torch_conv, randn(rng, n, cin, h, w), rng)


def test_conv2d_module_param_layout_and_metadata():
    conv = abstract_module(lambda: jnn.Conv2d(6, 8, (3, 5), groups=2, rngs=nnx.Rngs(0)))
    torch_conv = torch.nn.Conv2d(6, 8, (3, 5), groups=2)
    assert conv.weight.get_value().shape == (3, 5, 3, 8)
    perm = conv.weight.get_metadata()["torch_perm"]
    assert tuple(conv.weight.get_value().shape[axis] for axis in perm) == tuple(torch_conv.weight.shape)
    assert conv.bias.get_value().shape == tuple(torch_conv.bias.shape)
    assert abstract_module(lambda: jnn.Conv2d(6, 8, 3, bias=False, rngs=nnx.Rngs(0))).bias is None


@pytest.mark.parametrize(
    "cin,cout,kernel,groups",
    [(16, 32, 3, 1), (32, 32, 3, 32)],  # regular and depthwise (fan_in = 9)
)
def test_conv2d_default_init_matches_torch_distribution(cin, cout, kernel, groups):
    """Statistical: torch's default init is U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias."""
    conv = jnn.Conv2d(cin, cout, kernel, groups=groups, rngs=nnx.Rngs(3))
    torch_conv = torch.nn.Conv2d(cin, cout, kernel, groups=groups)
    kh, kw = _pair(kernel)
    bound = default_init_bound(cin // groups * kh * kw)
    weight, bias = np.asarray(conv.weight.get_value()), np.asarray(conv.bias.get_value())
    # Torch's own values respect the same bound (confirms the reference formula).
    assert torch_conv.weight.abs().max().item() <= bound
    assert torch_conv.bias.abs().max().item() <= bound
    assert np.abs(weight).max() <= bound and np.abs(bias).max() <= bound
    # Spread: uniform over the whole interval, not a narrower or a normal distribution.
    assert np.abs(weight).max() > 0.9 * bound
    assert abs(weight.std() - bound / np.sqrt(3)) < 0.15 * bound / np.sqrt(3)
    assert uniformity_pvalue(weight, bound) > 1e-4
    assert abs(weight.mean()) < 5 * bound / np.sqrt(3 * weight.size)  # 5 standard errors
    # Both frameworks' samples agree in distribution (two-sample KS).
    from scipy import stats

    assert stats.ks_2samp(weight.ravel(), torch_conv.weight.detach().numpy().ravel()).pvalue > 1e-4


def test_conv2d_init_differs_per_key_and_repeats_per_seed():
    # Same shapes as the init test above: the random-init programs are already compiled.
    a = jnn.Conv2d(16, 32, 3, rngs=nnx.Rngs(0)).weight.get_value()
    b = jnn.Conv2d(16, 32, 3, rngs=nnx.Rngs(0)).weight.get_value()
    c = jnn.Conv2d(16, 32, 3, rngs=nnx.Rngs(1)).weight.get_value()
    assert_close(a, b, 0.0)
    assert not np.allclose(np.asarray(a), np.asarray(c))


def test_sensitivity_same_padding_side(rng, monkeypatch):
    """Padding an even kernel's extra row/col at the start (XLA-style) instead of the end breaks parity."""
    case = (1, 2, 6, 3, 4, 1, "same", 1, 1)
    check_conv2d(rng, *case)
    real = conv_module.conv_padding

    def extra_at_start(padding, kernel_size, stride, dilation):
        pads = real(padding, kernel_size, stride, dilation)
        return tuple((hi, lo) for lo, hi in pads) if padding == "same" else pads

    monkeypatch.setattr(conv_module, "conv_padding", extra_at_start)
    with pytest.raises(AssertionError, match="max abs error"):
        check_conv2d(rng, *case)
