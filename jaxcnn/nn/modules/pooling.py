"""Pooling layers: thin modules over ``jaxcnn.nn.functional``'s pooling ops (NHWC)."""

from __future__ import annotations

import jax
from flax import nnx

from jaxcnn.nn import functional as F


class MaxPool2d(nnx.Module):
    """``torch.nn.MaxPool2d`` (same argument order). ``(N, H, W, C)`` -> ``(N, H_out, W_out, C)``."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices: bool = False, ceil_mode: bool = False):
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.dilation = dilation
        self.return_indices = return_indices
        self.ceil_mode = ceil_mode

    def __call__(self, x: jax.Array):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode, self.return_indices)


class AvgPool2d(nnx.Module):
    """``torch.nn.AvgPool2d`` (same argument order). ``(N, H, W, C)`` -> ``(N, H_out, W_out, C)``."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode: bool = False, count_include_pad: bool = True, divisor_override=None):
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.ceil_mode = ceil_mode
        self.count_include_pad = count_include_pad
        self.divisor_override = divisor_override

    def __call__(self, x: jax.Array) -> jax.Array:
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad, self.divisor_override)


class AdaptiveAvgPool2d(nnx.Module):
    """``torch.nn.AdaptiveAvgPool2d``. ``(N, H, W, C)`` -> ``(N, *output_size, C)``."""

    def __init__(self, output_size):
        self.output_size = output_size

    def __call__(self, x: jax.Array) -> jax.Array:
        return F.adaptive_avg_pool2d(x, self.output_size)


class AdaptiveMaxPool2d(nnx.Module):
    """``torch.nn.AdaptiveMaxPool2d``. ``(N, H, W, C)`` -> ``(N, *output_size, C)``."""

    def __init__(self, output_size, return_indices: bool = False):
        self.output_size = output_size
        self.return_indices = return_indices

    def __call__(self, x: jax.Array):
        return F.adaptive_max_pool2d(x, self.output_size, self.return_indices)
