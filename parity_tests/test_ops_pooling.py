"""Parity of jaxcnn's pooling ops and modules with torch.

Max pooling is fed all-negative inputs (so padding must act as -inf: zero padding would
win every window that touches the border); indices from ``return_indices`` are compared
exactly with torch's flat ``h * W + w`` indices (NCHW vs NHWC transposition). Every case
also compares the input gradient of a random cotangent. The sensitivity tests at the end
break the implementation on purpose (monkeypatching) and check that the parity checks
then fail.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import assume, given
from hypothesis import strategies as st

import jaxcnn.nn as jnn
from jaxcnn.nn import functional as F
from jaxcnn.nn.functional import pooling as pooling_module

from conftest import (
    as_jax,
    assert_close,
    assert_equal,
    check_function_parity,
    fuzz_settings,
    randn,
    to_nchw,
    to_nhwc,
)


def negative_input(rng, *shape):
    """All entries <= -1: a max pool that pads with 0 instead of -inf gives wrong answers."""
    return -1.0 - np.abs(randn(rng, *shape))


def check_max_pool(rng, shape, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, negative=True):
    x = negative_input(rng, *shape) if negative else randn(rng, *shape)
    torch_fn = lambda t: TF.max_pool2d(t, kernel_size, stride, padding, dilation, ceil_mode)  # noqa: E731
    jax_fn = lambda a: F.max_pool2d(a, kernel_size, stride, padding, dilation, ceil_mode)  # noqa: E731
    check_function_parity(torch_fn, jax_fn, x, to_nhwc(x), rng)
    # Indices: torch's NCHW flat indices, transposed, equal jaxcnn's NHWC ones.
    t_values, t_indices = TF.max_pool2d(torch.from_numpy(x), kernel_size, stride, padding, dilation, ceil_mode, return_indices=True)
    j_values, j_indices = jax.jit(
        lambda a: F.max_pool2d(a, kernel_size, stride, padding, dilation, ceil_mode, return_indices=True)
    )(as_jax(to_nhwc(x)))
    assert_close(to_nchw(np.asarray(j_values)), t_values, name="values with return_indices")
    assert_equal(to_nchw(np.asarray(j_indices)), t_indices, name="indices")


def check_avg_pool(rng, shape, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None):
    x = randn(rng, *shape) + 1.0  # mostly positive: dividing by the wrong count shows clearly
    args = (kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    check_function_parity(lambda t: TF.avg_pool2d(t, *args), lambda a: F.avg_pool2d(a, *args), x, to_nhwc(x), rng)


# (shape NCHW, kernel, stride, padding, dilation, ceil_mode)
MAX_POOL_CASES = [
    ((2, 3, 8, 8), 2, None, 0, 1, False),  # the classic 2x2/2
    ((2, 3, 7, 7), 2, None, 0, 1, False),  # odd input: last row/col dropped
    ((2, 3, 7, 7), 2, None, 0, 1, True),  # odd input, ceil_mode keeps a partial window
    ((1, 2, 8, 9), 3, 2, 1, 1, False),  # ResNet stem pool
    ((1, 2, 9, 8), 3, 2, 1, 1, True),
    ((1, 2, 7, 6), 3, 2, 0, 1, True),  # AlexNet-style overlapping pool, ceil
    ((1, 2, 6, 6), 3, 1, 1, 1, False),  # stride 1, same-size output
    ((1, 2, 5, 5), 3, 2, 1, 1, True),  # input 5, k3 s2 p1 ceil
    ((1, 2, 6, 6), 2, 2, 1, 1, True),  # input 6, k2 s2 p1 ceil
    # ceil_mode configs where the last window would start inside the right padding and
    # torch drops it: (out-1)*s >= in + p.
    ((1, 2, 5, 5), 2, 2, 1, 1, True),
    ((1, 2, 3, 3), 2, 2, 1, 1, True),
    ((1, 2, 6, 6), 4, 4, 2, 1, True),
    ((1, 2, 9, 5), 2, 2, 1, 1, True),
    ((1, 2, 9, 8), 3, 2, 1, 2, False),  # dilation
    ((1, 2, 10, 9), 3, 3, 1, 2, True),  # dilation + ceil
    ((1, 2, 7, 9), (2, 3), (1, 2), (1, 1), (2, 1), True),  # everything rectangular
    ((1, 2, 7, 8), (3, 2), (2, 1), (0, 1), 1, False),
    ((1, 1, 1, 1), 1, 1, 0, 1, False),  # degenerate 1x1
    ((1, 2, 4, 4), 4, None, 2, 1, True),  # padding exactly k//2
]


@pytest.mark.parametrize("shape,kernel,stride,padding,dilation,ceil_mode", MAX_POOL_CASES)
def test_max_pool2d(rng, shape, kernel, stride, padding, dilation, ceil_mode):
    pairs = [(v, v) if isinstance(v, int) else v for v in (kernel, stride or kernel, padding, dilation)]
    for axis in range(2):
        assert _every_window_reads_input(shape[2 + axis], *(v[axis] for v in pairs), ceil_mode)
    check_max_pool(rng, shape, kernel, stride, padding, dilation, ceil_mode)


def test_max_pool2d_mixed_sign_inputs(rng):
    check_max_pool(rng, (2, 3, 9, 9), 3, 2, 1, ceil_mode=True, negative=False)


def test_max_pool2d_ties_gradient_goes_to_first_max(rng):
    """Constant (e.g. post-ReLU zero) windows: torch's gradient goes to the first maximum."""
    x = np.zeros((1, 2, 6, 6), np.float32)
    x[:, :, 3:, 3:] = rng.integers(-1, 2, size=(1, 2, 3, 3))
    for args in [(2, 2, 0, 1, False), (3, 1, 1, 1, False), (3, 2, 1, 1, True), (2, 1, 0, 2, False)]:
        check_function_parity(lambda t: TF.max_pool2d(t, *args), lambda a: F.max_pool2d(a, *args), x, to_nhwc(x), rng)
        t_idx = TF.max_pool2d(torch.from_numpy(x), *args, return_indices=True)[1]
        j_idx = jax.jit(lambda a: F.max_pool2d(a, *args, return_indices=True)[1])(as_jax(to_nhwc(x)))
        assert_equal(to_nchw(np.asarray(j_idx)), t_idx)


def test_max_pool2d_module(rng):
    x = negative_input(rng, 2, 3, 9, 8)
    pool = jnn.MaxPool2d(3, 2, 1, ceil_mode=True)
    check_function_parity(torch.nn.MaxPool2d(3, 2, 1, ceil_mode=True), pool, x, to_nhwc(x), rng)
    values, indices = jnn.MaxPool2d(2, return_indices=True)(to_nhwc(x))
    t_values, t_indices = torch.nn.MaxPool2d(2, return_indices=True)(torch.from_numpy(x))
    assert_close(to_nchw(np.asarray(values)), t_values)
    assert_equal(to_nchw(np.asarray(indices)), t_indices)


@st.composite
def pool_configs(draw, with_dilation: bool):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    padding = (draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2)))  # torch: pad <= k//2
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if with_dilation else (1, 1)
    ceil_mode = draw(st.booleans())
    # Input at least as large as the dilated kernel minus the padding: a non-empty output.
    h = draw(st.integers(max(1, dilation[0] * (kh - 1) + 1 - 2 * padding[0]), 10))
    w = draw(st.integers(max(1, dilation[1] * (kw - 1) + 1 - 2 * padding[1]), 10))
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    # With dilation a window can straddle the input and touch only padding (e.g. input 1,
    # k=2, d=2, p=1 reads positions -1 and 1). Torch then returns -inf with out-of-range
    # indices, and its backward writes outside the gradient buffer (heap corruption that
    # crashes the process later), so such configurations are excluded.
    for size, k, s, p, d in zip((h, w), (kh, kw), stride, padding, dilation):
        assume(_every_window_reads_input(size, k, s, p, d, ceil_mode))
    return (n, c, h, w), (kh, kw), stride, padding, dilation, ceil_mode


def _every_window_reads_input(size, k, s, p, d, ceil_mode):
    """Whether every pooling window (torch's output size rule) covers at least one input element."""
    numerator = size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)
    out = numerator // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return all(any(0 <= i * s - p + j * d < size for j in range(k)) for i in range(out))


@fuzz_settings(max_examples=25)
@given(config=pool_configs(with_dilation=True), seed=st.integers(0, 2**16))
def test_max_pool2d_fuzz(config, seed):
    shape, kernel, stride, padding, dilation, ceil_mode = config
    check_max_pool(np.random.default_rng(seed), shape, kernel, stride, padding, dilation, ceil_mode)


# ------------------------------------------------------------------------------------
# avg_pool2d
# ------------------------------------------------------------------------------------

# (shape, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
AVG_POOL_CASES = [
    ((2, 3, 8, 8), 2, None, 0, False, True, None),
    ((2, 3, 7, 7), 2, None, 0, True, True, None),  # partial last window (ceil)
    ((2, 3, 7, 7), 2, None, 0, True, False, None),
    ((1, 2, 8, 8), 3, 2, 1, False, True, None),
    ((1, 2, 8, 8), 3, 2, 1, False, False, None),
    ((1, 2, 9, 9), 3, 2, 1, True, True, None),
    ((1, 2, 9, 9), 3, 2, 1, True, False, None),
    # The last ceil_mode window overhangs past the padding: torch's count_include_pad
    # divisor counts the padding but not that overhang.
    ((1, 2, 6, 6), 3, 2, 1, True, True, None),
    ((1, 2, 6, 7), 3, 2, 1, True, False, None),
    # ceil_mode windows that would start in the right padding are dropped.
    ((1, 2, 5, 5), 2, 2, 1, True, True, None),
    ((1, 2, 5, 5), 2, 2, 1, True, False, None),
    ((1, 2, 6, 6), 4, 4, 2, True, True, None),
    ((1, 2, 6, 6), 4, 4, 2, True, False, None),
    ((1, 2, 5, 5), 3, 2, 1, True, True, None),
    ((1, 2, 6, 6), 2, 2, 1, True, False, None),
    ((1, 2, 7, 5), 3, 1, 1, False, True, None),  # stride 1 with padding
    ((1, 2, 7, 5), 3, 1, 1, False, False, None),
    ((1, 2, 7, 9), (2, 3), (1, 2), (1, 1), True, False, None),
    ((1, 2, 7, 9), (3, 2), (2, 1), (1, 0), False, True, None),
    ((1, 2, 8, 8), 3, 2, 1, False, True, 4),  # divisor_override
    ((1, 2, 7, 7), 3, 2, 1, True, False, 5),
    ((1, 2, 6, 6), 2, None, 0, False, True, 1),
    ((1, 1, 1, 1), 1, 1, 0, False, True, None),
]


@pytest.mark.parametrize("shape,kernel,stride,padding,ceil_mode,count_include_pad,divisor_override", AVG_POOL_CASES)
def test_avg_pool2d(rng, shape, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override):
    check_avg_pool(rng, shape, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)


def test_avg_pool2d_module(rng):
    x = randn(rng, 2, 3, 9, 8)
    for kwargs in [dict(), dict(stride=2, padding=1, ceil_mode=True, count_include_pad=False), dict(divisor_override=3, padding=1)]:
        check_function_parity(torch.nn.AvgPool2d(3, **kwargs), jnn.AvgPool2d(3, **kwargs), x, to_nhwc(x), rng)


@fuzz_settings(max_examples=30)
@given(
    config=pool_configs(with_dilation=False),
    count_include_pad=st.booleans(),
    divisor_override=st.sampled_from([None, None, None, 1, 3]),
    seed=st.integers(0, 2**16),
)
def test_avg_pool2d_fuzz(config, count_include_pad, divisor_override, seed):
    shape, kernel, stride, padding, _, ceil_mode = config
    check_avg_pool(np.random.default_rng(seed), shape, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)


# ------------------------------------------------------------------------------------
# Adaptive and global pooling
# ------------------------------------------------------------------------------------


def check_adaptive_avg(rng, shape, output_size):
    x = randn(rng, *shape)
    check_function_parity(
        lambda t: TF.adaptive_avg_pool2d(t, output_size), lambda a: F.adaptive_avg_pool2d(a, output_size), x, to_nhwc(x), rng
    )


def check_adaptive_max(rng, shape, output_size, negative=True):
    x = negative_input(rng, *shape) if negative else randn(rng, *shape)
    check_function_parity(
        lambda t: TF.adaptive_max_pool2d(t, output_size), lambda a: F.adaptive_max_pool2d(a, output_size), x, to_nhwc(x), rng
    )
    t_values, t_indices = TF.adaptive_max_pool2d(torch.from_numpy(x), output_size, return_indices=True)
    j_values, j_indices = jax.jit(lambda a: F.adaptive_max_pool2d(a, output_size, return_indices=True))(as_jax(to_nhwc(x)))
    assert_close(to_nchw(np.asarray(j_values)), t_values)
    assert_equal(to_nchw(np.asarray(j_indices)), t_indices, name="adaptive indices")


ADAPTIVE_CASES = [
    ((2, 3, 14, 14), 4),  # non-divisible: overlapping windows
    ((1, 2, 13, 13), 6),
    ((1, 2, 10, 10), 3),
    ((1, 2, 7, 7), (None, 3)),  # None keeps the input height
    ((1, 2, 9, 7), (3, None)),
    ((2, 3, 6, 5), 1),  # global
    ((1, 2, 1, 1), 1),  # 1x1 -> 1x1
    ((1, 2, 1, 1), (2, 3)),  # upsampling from 1x1
    ((1, 2, 3, 4), (5, 7)),  # output larger than input
    ((1, 2, 8, 12), (4, 6)),  # divisible (reshape path)
    ((1, 2, 12, 7), (4, 7)),  # divisible one axis, identity on the other
    ((1, 2, 11, 6), (5, 4)),
]


@pytest.mark.parametrize("shape,output_size", ADAPTIVE_CASES)
def test_adaptive_avg_pool2d(rng, shape, output_size):
    check_adaptive_avg(rng, shape, output_size)


@pytest.mark.parametrize("shape,output_size", ADAPTIVE_CASES)
def test_adaptive_max_pool2d(rng, shape, output_size):
    check_adaptive_max(rng, shape, output_size)


def test_adaptive_max_pool2d_ties(rng):
    x = np.zeros((1, 2, 7, 7), np.float32)
    x[:, :, 4:, :3] = rng.integers(-1, 2, size=(1, 2, 3, 3))
    for size in [1, 3, (2, 4), 5]:
        check_function_parity(lambda t: TF.adaptive_max_pool2d(t, size), lambda a: F.adaptive_max_pool2d(a, size), x, to_nhwc(x), rng)
        t_idx = TF.adaptive_max_pool2d(torch.from_numpy(x), size, return_indices=True)[1]
        j_idx = jax.jit(lambda a: F.adaptive_max_pool2d(a, size, return_indices=True)[1])(as_jax(to_nhwc(x)))
        assert_equal(to_nchw(np.asarray(j_idx)), t_idx)


def test_adaptive_pool_modules(rng):
    x = randn(rng, 2, 3, 9, 7)
    check_function_parity(torch.nn.AdaptiveAvgPool2d((4, None)), jnn.AdaptiveAvgPool2d((4, None)), x, to_nhwc(x), rng)
    check_function_parity(torch.nn.AdaptiveMaxPool2d(4), jnn.AdaptiveMaxPool2d(4), x, to_nhwc(x), rng)
    values, indices = jnn.AdaptiveMaxPool2d((2, 3), return_indices=True)(to_nhwc(x))
    t_values, t_indices = torch.nn.AdaptiveMaxPool2d((2, 3), return_indices=True)(torch.from_numpy(x))
    assert_close(to_nchw(np.asarray(values)), t_values)
    assert_equal(to_nchw(np.asarray(indices)), t_indices)


@fuzz_settings(max_examples=15)
@given(
    h=st.integers(1, 12),
    w=st.integers(1, 12),
    out_h=st.one_of(st.none(), st.integers(1, 8)),
    out_w=st.one_of(st.none(), st.integers(1, 8)),
    seed=st.integers(0, 2**16),
)
def test_adaptive_pool_fuzz(h, w, out_h, out_w, seed):
    rng = np.random.default_rng(seed)
    check_adaptive_avg(rng, (1, 2, h, w), (out_h, out_w))
    check_adaptive_max(rng, (1, 2, h, w), (out_h, out_w), negative=bool(seed % 2))


@pytest.mark.parametrize("shape", [(2, 3, 7, 5), (1, 4, 1, 1), (2, 2, 8, 8)])
def test_global_pools_match_adaptive_pooling_to_one(rng, shape):
    x = randn(rng, *shape)
    xn = to_nhwc(x)
    check_function_parity(lambda t: TF.adaptive_avg_pool2d(t, 1), F.global_avg_pool2d, x, xn, rng)
    check_function_parity(lambda t: TF.adaptive_max_pool2d(t, 1), F.global_max_pool2d, x, xn, rng)
    # keepdims=False: (N, C) like torch.flatten(pool(x), 1).
    flat = lambda pool: lambda t: torch.flatten(pool(t, 1), 1)  # noqa: E731
    check_function_parity(flat(TF.adaptive_avg_pool2d), lambda a: F.global_avg_pool2d(a, keepdims=False), x, xn, rng)
    check_function_parity(flat(TF.adaptive_max_pool2d), lambda a: F.global_max_pool2d(a, keepdims=False), x, xn, rng)


def test_global_max_pool_ties_gradient_matches_torch(rng):
    """A constant channel (e.g. dead ReLU): torch's adaptive_max_pool2d(x, 1) sends the whole
    gradient to the first element; an even split (jnp.max's rule) would not match."""
    x = np.zeros((2, 3, 4, 5), np.float32)
    x[:, 1] = rng.integers(-1, 2, size=(2, 4, 5))
    check_function_parity(lambda t: TF.adaptive_max_pool2d(t, 1), F.global_max_pool2d, x, to_nhwc(x), rng)


def test_max_pooling_propagates_nan_like_torch(rng):
    """A NaN wins its windows in torch; values and indices match (one NaN per channel: with
    several NaNs in one window torch's index is not specified by its docs)."""
    x = randn(rng, 1, 2, 6, 7)
    x[0, 0, 1, 1] = np.nan
    x[0, 1, 4, 6] = np.nan
    xt, xj = torch.from_numpy(x), as_jax(to_nhwc(x))
    for args in [(2,), (3, 2, 1), (3, 1, 1, 1, True), (2, 1, 0, 2)]:
        t_values, t_indices = TF.max_pool2d(xt, *args, return_indices=True)
        plain, (j_values, j_indices) = jax.jit(
            lambda a: (F.max_pool2d(a, *args), F.max_pool2d(a, *args, return_indices=True))
        )(xj)
        assert_close(to_nchw(np.asarray(plain)), t_values, name=f"max_pool2d{args}")
        assert_close(to_nchw(np.asarray(j_values)), t_values)
        assert_equal(to_nchw(np.asarray(j_indices)), t_indices)
    for size in [1, 3, (2, 5)]:
        t_values, t_indices = TF.adaptive_max_pool2d(xt, size, return_indices=True)
        j_values, j_indices = jax.jit(lambda a: F.adaptive_max_pool2d(a, size, return_indices=True))(xj)
        assert_close(to_nchw(np.asarray(j_values)), t_values, name=f"adaptive_max_pool2d({size})")
        assert_equal(to_nchw(np.asarray(j_indices)), t_indices)
    assert_close(to_nchw(np.asarray(jax.jit(F.global_max_pool2d)(xj))), TF.adaptive_max_pool2d(xt, 1))


# ------------------------------------------------------------------------------------
# Sensitivity: the checks above fail when pooling semantics are broken.
# ------------------------------------------------------------------------------------


def _ceil_mode_ignored(in_size, kernel_size, stride, padding, dilation, ceil_mode):
    return (in_size + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


_real_pool_output_size = pooling_module.pool_output_size


def _no_drop_rule(in_size, kernel_size, stride, padding, dilation, ceil_mode):
    numerator = in_size + 2 * padding - dilation * (kernel_size - 1) - 1 + (stride - 1 if ceil_mode else 0)
    return numerator // stride + 1


def test_sensitivity_ceil_mode(rng, monkeypatch):
    config = ((1, 2, 7, 7), 2, None, 0, 1, True)
    check_max_pool(rng, *config)  # passes with the real code
    monkeypatch.setattr(pooling_module, "pool_output_size", _ceil_mode_ignored)
    with pytest.raises(AssertionError, match="shape mismatch"):
        check_max_pool(rng, *config)
    with pytest.raises(AssertionError, match="shape mismatch"):
        check_avg_pool(rng, (1, 2, 8, 8), 3, 2, 1, ceil_mode=True)  # 4 rows without ceil_mode, 5 with


def test_sensitivity_ceil_mode_drop_rule(rng, monkeypatch):
    """Without torch's "drop a window starting in the right padding" rule the drop cases fail."""
    drop_cases = [((1, 2, 5, 5), 2, 2, 1, 1, True), ((1, 2, 6, 6), 4, 4, 2, 1, True)]
    for in_size, k, s, p in [(5, 2, 2, 1), (3, 2, 2, 1), (6, 4, 4, 2)]:
        assert _no_drop_rule(in_size, k, s, p, 1, True) == _real_pool_output_size(in_size, k, s, p, 1, True) + 1
    for config in drop_cases:
        check_max_pool(rng, *config)
    monkeypatch.setattr(pooling_module, "pool_output_size", _no_drop_rule)
    for config in drop_cases:
        with pytest.raises(AssertionError, match="shape mismatch"):
            check_max_pool(rng, *config)
        with pytest.raises(AssertionError, match="shape mismatch"):
            check_avg_pool(rng, *config[:4], ceil_mode=True, count_include_pad=False)


def test_sensitivity_max_pool_minus_inf_padding(rng, monkeypatch):
    config = ((1, 2, 8, 8), 3, 2, 1, 1, False)
    check_max_pool(rng, *config)
    monkeypatch.setattr(pooling_module, "_lowest", lambda dtype: np.zeros((), dtype))
    with pytest.raises(AssertionError, match="max abs error"):
        check_max_pool(rng, *config)
    with pytest.raises(AssertionError, match="max abs error"):  # the dilated / return_indices path
        check_max_pool(rng, (1, 2, 9, 9), 3, 2, 1, 2, False)


def test_sensitivity_count_include_pad(rng, monkeypatch):
    config = ((1, 2, 8, 8), 3, 2, 1, False, False, None)
    check_avg_pool(rng, *config)
    real = pooling_module._avg_pool_divisors
    monkeypatch.setattr(
        pooling_module, "_avg_pool_divisors", lambda size, k, s, p, out, include: real(size, k, s, p, out, True)
    )
    with pytest.raises(AssertionError, match="max abs error"):
        check_avg_pool(rng, *config)


def test_sensitivity_count_include_pad_overhang(rng, monkeypatch):
    """Counting ceil_mode's overhang beyond the padding (i.e. always k*k) breaks parity."""
    config = ((1, 2, 6, 6), 3, 2, 1, True, True, None)
    check_avg_pool(rng, *config)
    monkeypatch.setattr(
        pooling_module, "_avg_pool_divisors", lambda size, k, s, p, out, include: np.full(out, k)
    )
    with pytest.raises(AssertionError, match="max abs error"):
        check_avg_pool(rng, *config)


def test_sensitivity_adaptive_windows(rng, monkeypatch):
    """Non-overlapping floor windows instead of torch's floor/ceil windows break parity."""
    check_adaptive_avg(rng, (1, 2, 13, 13), 6)

    def floor_windows(in_size, out_size):
        index = np.arange(out_size)
        return (index * in_size) // out_size, ((index + 1) * in_size) // out_size

    monkeypatch.setattr(pooling_module, "adaptive_windows", floor_windows)
    with pytest.raises(AssertionError, match="max abs error"):
        check_adaptive_avg(rng, (1, 2, 13, 13), 6)
    with pytest.raises(AssertionError):
        check_adaptive_max(rng, (1, 2, 10, 10), 3, negative=False)
