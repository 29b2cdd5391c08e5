"""Pooling with PyTorch's semantics on NHWC data.

Covers what Flax does not give for free: explicit symmetric padding, ``ceil_mode`` (with
torch's rule that a window starting in the right padding is dropped), max pooling padded
with -inf, ``count_include_pad`` and ``divisor_override`` for average pooling, and
adaptive pooling with torch's overlapping windows ``[floor(i*in/out), ceil((i+1)*in/out))``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcnn.nn._utils import check_nhwc, check_non_negative, check_positive, pair

IntOrPair = int | Sequence[int]
OutputSize = int | None | Sequence[int | None]


def pool_output_size(
    in_size: int, kernel_size: int, stride: int, padding: int, dilation: int, ceil_mode: bool
) -> int:
    """Output length of a pooling window sweep along one axis, exactly as torch computes it.

    ``floor((in + 2p - d(k-1) - 1)/s) + 1`` (``ceil`` with ``ceil_mode``), minus one when
    ``ceil_mode`` would start the last window inside the right padding.
    """
    numerator = in_size + 2 * padding - dilation * (kernel_size - 1) - 1
    if ceil_mode:
        numerator += stride - 1
    out = numerator // stride + 1
    if ceil_mode and (out - 1) * stride >= in_size + padding:
        out -= 1
    return out


@dataclasses.dataclass(frozen=True)
class PoolGeometry:
    """Static window layout of a 2-D pooling op over an NHWC input."""

    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    output_size: tuple[int, int]
    padding: tuple[tuple[int, int], tuple[int, int]]  # ((top, bottom), (left, right)), bottom/right include ceil_mode's overhang

    @property
    def window_dims(self) -> tuple[int, int, int, int]:
        return (1, *self.kernel_size, 1)

    @property
    def window_strides(self) -> tuple[int, int, int, int]:
        return (1, *self.stride, 1)

    @property
    def nhwc_padding(self) -> tuple[tuple[int, int], ...]:
        return ((0, 0), *self.padding, (0, 0))


def pool_geometry(
    op: str,
    input: jax.Array,
    kernel_size: IntOrPair,
    stride: IntOrPair | None,
    padding: IntOrPair,
    dilation: IntOrPair,
    ceil_mode: bool,
) -> PoolGeometry:
    """Validate pooling arguments as torch does and lay out the windows.

    Raises ``ValueError`` for a non-NHWC input, non-positive kernel/stride/dilation,
    negative padding, padding larger than half the kernel (torch's rule), or an output
    that would be empty.
    """
    check_nhwc(input, op)
    kernel = pair(kernel_size, "kernel_size")
    strides = kernel if stride is None or stride == [] or stride == () else pair(stride, "stride")
    pads = pair(padding, "padding")
    dilations = pair(dilation, "dilation")
    check_positive(kernel, f"{op}: kernel_size")
    check_positive(strides, f"{op}: stride")
    check_positive(dilations, f"{op}: dilation")
    check_non_negative(pads, f"{op}: padding")
    if any(p > k // 2 for p, k in zip(pads, kernel)):
        raise ValueError(
            f"{op}: pad should be at most half of kernel size, but got pad={pads} and kernel_size={kernel}"
        )
    out_sizes = []
    axis_padding = []
    for axis, size in enumerate(input.shape[1:3]):
        k, s, p, d = kernel[axis], strides[axis], pads[axis], dilations[axis]
        out = pool_output_size(size, k, s, p, d, ceil_mode)
        if out < 1:
            raise ValueError(
                f"{op}: input {tuple(input.shape)} (NHWC) is too small for kernel_size={kernel}, "
                f"stride={strides}, padding={pads}, dilation={dilations}: output size would be {out}"
            )
        extent = (out - 1) * s + d * (k - 1) + 1
        out_sizes.append(out)
        axis_padding.append((p, max(extent - size - p, 0)))
    return PoolGeometry(kernel, strides, dilations, tuple(out_sizes), tuple(axis_padding))  # type: ignore[arg-type]


def _lowest(dtype) -> np.ndarray:
    # A numpy (not jnp) scalar: under jit a jnp constant is a tracer, and lax.reduce_window
    # then cannot recognise the max monoid and falls back to a non-differentiable reduction.
    return np.array(-np.inf, dtype) if jnp.issubdtype(dtype, jnp.floating) else np.array(jnp.iinfo(dtype).min, dtype)


def _max_pool_windows(input: jax.Array, geometry: PoolGeometry) -> tuple[jax.Array, jax.Array]:
    """Max and torch-style flat argmax by stacking the window's strided slices.

    Used for dilation and ``return_indices``; the gradient flows to the first maximum of
    each window in row-major order, as in torch.
    """
    _, height, width, _ = input.shape
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = geometry.kernel_size, geometry.stride, geometry.dilation, geometry.output_size
    padded = lax.pad(input, _lowest(input.dtype), [(lo, hi, 0) for lo, hi in geometry.nhwc_padding])
    windows = jnp.stack(
        [
            padded[:, i * dh : i * dh + (oh - 1) * sh + 1 : sh, j * dw : j * dw + (ow - 1) * sw + 1 : sw, :]
            for i in range(kh)
            for j in range(kw)
        ],
        axis=3,
    )  # (N, oh, ow, kh*kw, C)
    position = jnp.argmax(windows, axis=3)  # (N, oh, ow, C)
    values = jnp.take_along_axis(windows, position[:, :, :, None, :], axis=3)[:, :, :, 0, :]
    (top, _), (left, _) = geometry.padding
    rows = jnp.arange(oh)[None, :, None, None] * sh - top + (position // kw) * dh
    cols = jnp.arange(ow)[None, None, :, None] * sw - left + (position % kw) * dw
    return values, rows * width + cols


def _max_pool_select_chain(input: jax.Array, geometry: PoolGeometry) -> jax.Array:
    """Max pooling as a chain of elementwise selects over the window's strided slices.

    ``m = w_00; m = where((w > m) | isnan(w), w, m)`` for the window positions ``w`` in
    row-major order is exactly torch's CPU rule (the first maximum wins ties, NaN propagates),
    and its gradient is a few fused elementwise selects plus strided pads, which XLA on CPU
    runs several times faster than the ``select_and_scatter`` that differentiating
    ``lax.reduce_window`` produces. Forward values are bit-identical to ``reduce_window``.
    """
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = geometry.kernel_size, geometry.stride, geometry.dilation, geometry.output_size
    padded = input
    if any(lo or hi for lo, hi in geometry.padding):
        padded = lax.pad(input, _lowest(input.dtype), [(lo, hi, 0) for lo, hi in geometry.nhwc_padding])
    result = None
    for i in range(kh):
        for j in range(kw):
            window = lax.slice(
                padded,
                (0, i * dh, j * dw, 0),
                (padded.shape[0], i * dh + (oh - 1) * sh + 1, j * dw + (ow - 1) * sw + 1, padded.shape[3]),
                (1, sh, sw, 1),
            )
            if result is None:
                result = window
            else:
                take = window > result
                if jnp.issubdtype(input.dtype, jnp.inexact):
                    take = take | jnp.isnan(window)
                result = jnp.where(take, window, result)
    return result


def max_pool2d(
    input: jax.Array,
    kernel_size: IntOrPair,
    stride: IntOrPair | None = None,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """2-D max pooling as ``torch.nn.functional.max_pool2d``; padding counts as -inf.

    Args:
      input: ``(N, H, W, C)`` NHWC.
      kernel_size, stride (defaults to ``kernel_size``), padding, dilation: ints or pairs.
      ceil_mode: round the output size up; a window that would start in the right
        padding is dropped.
      return_indices: also return torch's flat indices ``h * W + w`` into each input plane.

    Returns:
      ``(N, H_out, W_out, C)``, and with ``return_indices`` an int32 array of the same
      shape (NHWC; torch's indices are the same numbers in NCHW).
    """
    geometry = pool_geometry("max_pool2d", input, kernel_size, stride, padding, dilation, ceil_mode)
    if return_indices:
        return _max_pool_windows(input, geometry)
    return _max_pool_select_chain(input, geometry)


def _avg_pool_divisors(in_size: int, kernel: int, stride: int, padding: int, out: int, count_include_pad: bool) -> np.ndarray:
    starts = np.arange(out) * stride - padding
    ends = np.minimum(starts + kernel, in_size + padding)
    if count_include_pad:
        return ends - starts
    return np.minimum(ends, in_size) - np.maximum(starts, 0)


def avg_pool2d(
    input: jax.Array,
    kernel_size: IntOrPair,
    stride: IntOrPair | None = None,
    padding: IntOrPair = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> jax.Array:
    """2-D average pooling as ``torch.nn.functional.avg_pool2d``.

    Args:
      input: ``(N, H, W, C)`` NHWC.
      count_include_pad: divide by the window size including zero padding (but never
        including ``ceil_mode``'s overhang beyond the padding), else by the number of
        real input elements in the window.
      divisor_override: divide every window sum by this instead.

    Returns:
      ``(N, H_out, W_out, C)``.
    """
    geometry = pool_geometry("avg_pool2d", input, kernel_size, stride, padding, 1, ceil_mode)
    if divisor_override is not None and divisor_override == 0:
        raise ValueError("avg_pool2d: divisor_override must be non-zero")
    summed = lax.reduce_window(
        input, np.array(0, input.dtype), lax.add, geometry.window_dims, geometry.window_strides, geometry.nhwc_padding
    )
    if divisor_override is not None:
        return summed / divisor_override
    divisor_h, divisor_w = (
        _avg_pool_divisors(size, k, s, p, out, count_include_pad)
        for size, k, s, (p, _), out in zip(
            input.shape[1:3], geometry.kernel_size, geometry.stride, geometry.padding, geometry.output_size
        )
    )
    divisor = np.outer(divisor_h, divisor_w)[None, :, :, None]
    return summed / jnp.asarray(divisor, input.dtype)


def adaptive_windows(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Torch's adaptive pooling windows: ``start = floor(i*in/out)``, ``end = ceil((i+1)*in/out)``."""
    index = np.arange(out_size)
    starts = (index * in_size) // out_size
    ends = -((-(index + 1) * in_size) // out_size)
    return starts, ends


def resolve_output_size(op: str, input: jax.Array, output_size: OutputSize) -> tuple[int, int]:
    """Turn torch's ``output_size`` (int, pair, ``None`` entries = keep) into ``(H_out, W_out)``."""
    check_nhwc(input, op)
    sizes = (output_size, output_size) if output_size is None or isinstance(output_size, int) else tuple(output_size)
    if len(sizes) != 2:
        raise ValueError(f"{op}: output_size must be an int or a pair, got {output_size!r}")
    resolved = tuple(input.shape[1 + axis] if size is None else int(size) for axis, size in enumerate(sizes))
    check_positive(resolved, f"{op}: output_size")
    check_positive(input.shape[1:3], f"{op}: input spatial size")
    return resolved  # type: ignore[return-value]


def _adaptive_mean_axis(x: jax.Array, axis: int, out_size: int) -> jax.Array:
    in_size = x.shape[axis]
    if in_size % out_size == 0:
        shape = x.shape[:axis] + (out_size, in_size // out_size) + x.shape[axis + 1 :]
        return x.reshape(shape).mean(axis=axis + 1)
    starts, ends = adaptive_windows(in_size, out_size)
    positions = np.arange(in_size)
    inside = (positions[None, :] >= starts[:, None]) & (positions[None, :] < ends[:, None])
    weights = jnp.asarray(inside / (ends - starts)[:, None], x.dtype)  # (out, in)
    moved = jnp.moveaxis(x, axis, -1)
    pooled = jnp.einsum("...i,oi->...o", moved, weights, precision=lax.Precision.HIGHEST)
    return jnp.moveaxis(pooled, -1, axis)


def adaptive_avg_pool2d(input: jax.Array, output_size: OutputSize) -> jax.Array:
    """Adaptive average pooling as ``torch.nn.functional.adaptive_avg_pool2d``.

    Args:
      input: ``(N, H, W, C)`` NHWC.
      output_size: int or ``(H_out, W_out)``; ``None`` keeps that input size.

    Returns:
      ``(N, H_out, W_out, C)``; windows overlap where sizes do not divide, as in torch.
    """
    out_h, out_w = resolve_output_size("adaptive_avg_pool2d", input, output_size)
    return _adaptive_mean_axis(_adaptive_mean_axis(input, 1, out_h), 2, out_w)


def _adaptive_argmax_axis(x: jax.Array, axis: int, out_size: int) -> tuple[jax.Array, jax.Array]:
    """Max over torch's adaptive windows along ``axis`` and the input position of the first max."""
    starts, ends = adaptive_windows(x.shape[axis], out_size)
    longest = int((ends - starts).max())
    positions = np.minimum(starts[:, None] + np.arange(longest)[None, :], ends[:, None] - 1)  # (out, longest)
    windows = jnp.take(x, jnp.asarray(positions.reshape(-1)), axis=axis)
    windows = windows.reshape(x.shape[:axis] + (out_size, longest) + x.shape[axis + 1 :])
    offset = jnp.argmax(windows, axis=axis + 1, keepdims=True)
    values = jnp.squeeze(jnp.take_along_axis(windows, offset, axis=axis + 1), axis + 1)
    offset = jnp.squeeze(offset, axis + 1)
    index_shape = [1] * x.ndim
    index_shape[axis] = out_size
    window_starts = jnp.asarray(starts.reshape(index_shape))
    return values, window_starts + offset


def adaptive_max_pool2d(
    input: jax.Array, output_size: OutputSize, return_indices: bool = False
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Adaptive max pooling as ``torch.nn.functional.adaptive_max_pool2d``.

    Args:
      input: ``(N, H, W, C)`` NHWC.
      output_size: int or ``(H_out, W_out)``; ``None`` keeps that input size.
      return_indices: also return torch's flat indices ``h * W + w`` (int32, NHWC).

    Returns:
      ``(N, H_out, W_out, C)`` (and indices). Ties go to the first maximum in row-major
      order, and so does the gradient, as in torch.
    """
    out_h, out_w = resolve_output_size("adaptive_max_pool2d", input, output_size)
    width = input.shape[2]
    row_max, col_of_row_max = _adaptive_argmax_axis(input, 2, out_w)  # (N, H, out_w, C)
    values, rows = _adaptive_argmax_axis(row_max, 1, out_h)  # (N, out_h, out_w, C)
    if not return_indices:
        return values
    cols = jnp.take_along_axis(col_of_row_max, rows, axis=1)
    return values, rows * width + cols


def global_avg_pool2d(input: jax.Array, keepdims: bool = True) -> jax.Array:
    """Global average pooling (GAP): ``(N, H, W, C)`` -> ``(N, 1, 1, C)`` or ``(N, C)``."""
    check_nhwc(input, "global_avg_pool2d")
    return jnp.mean(input, axis=(1, 2), keepdims=keepdims)


def global_max_pool2d(input: jax.Array, keepdims: bool = True) -> jax.Array:
    """Global max pooling (GMP): ``(N, H, W, C)`` -> ``(N, 1, 1, C)`` or ``(N, C)``.

    Like torch's ``adaptive_max_pool2d(x, 1)`` the gradient goes to the first maximum in
    row-major order (``jnp.max`` would split it evenly between tied maxima).
    """
    check_nhwc(input, "global_max_pool2d")
    batch, height, width, channels = input.shape
    flat = input.reshape(batch, height * width, channels)
    first = jnp.argmax(flat, axis=1, keepdims=True)
    values = jnp.take_along_axis(flat, first, axis=1)  # (N, 1, C)
    return values.reshape(batch, 1, 1, channels) if keepdims else values.reshape(batch, channels)
