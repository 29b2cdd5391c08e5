"""2-D convolution with PyTorch's argument semantics on NHWC data."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from jaxcnn.nn._utils import check_nhwc, check_non_negative, check_positive, conv_output_hw, pair
from jaxcnn.nn.native.onednn_conv import onednn_conv2d, use_onednn

IntOrPair = int | Sequence[int]


def conv_padding(
    padding: IntOrPair | str,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Explicit ``((top, bottom), (left, right))`` padding for torch's ``padding`` argument.

    ``'valid'`` is no padding. ``'same'`` follows torch: total padding ``d*(k-1)`` per axis,
    ``total // 2`` before and the rest after (so an even kernel pads one more on the
    bottom/right), and only for stride 1. XLA's ``'SAME'`` is never used: it pads
    asymmetrically for strided convolutions where torch pads symmetrically.
    """
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0), (0, 0))
        if padding == "same":
            if stride != (1, 1):
                raise ValueError("padding='same' is not supported for strided convolutions")
            totals = [d * (k - 1) for k, d in zip(kernel_size, dilation)]
            return tuple((t // 2, t - t // 2) for t in totals)  # type: ignore[return-value]
        raise ValueError(f"padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
    ph, pw = pair(padding, "padding")
    check_non_negative((ph, pw), "padding")
    return ((ph, ph), (pw, pw))


def _swapped_by_xla(
    in_hw: Sequence[int],
    kernel: tuple[int, int],
    strides: tuple[int, int],
    pads: tuple[tuple[int, int], tuple[int, int]],
    dilations: tuple[int, int],
) -> bool:
    """True when XLA would swap this convolution's operands (forward or input gradient).

    XLA's conv operand swapper turns a convolution whose spatial input is smaller than its
    kernel (``H * W < kH * kW``, e.g. a 3x3 convolution on a 2x2 map, as in the last VGG /
    ResNet stage at 32x32 / 64x64 inputs) into one with the operands exchanged. On CPU the
    swapped convolution no longer has the NHWC/HWIO layout of XLA's Eigen kernel and runs in
    XLA's generic loop emitter, 30-70x slower than the same work as a matmul. The gradient
    with respect to the input is a convolution over the output's spatial size, so the output
    size is checked as well.
    """
    area = kernel[0] * kernel[1]
    if area <= 1:
        return False
    out_h, out_w = conv_output_hw(in_hw, kernel, strides, pads, dilations)
    return in_hw[0] * in_hw[1] < area or out_h * out_w < area


def _conv2d_as_matmul(
    input: jax.Array,
    weight: jax.Array,
    strides: tuple[int, int],
    pads: tuple[tuple[int, int], tuple[int, int]],
    dilations: tuple[int, int],
) -> jax.Array:
    """The same ``groups=1`` cross-correlation as one matmul over explicit patches (im2col).

    Only used for small spatial maps (see :func:`_swapped_by_xla`), where the patch matrix is
    tiny. Patch features are ordered ``(kh, kw, c_in)``, which is the HWIO weight reshaped to
    ``(kH * kW * C_in, C_out)``. Autodiff gives slices/pads and matmuls, never a convolution.
    """
    kernel_h, kernel_w, in_channels, out_channels = weight.shape
    out_h, out_w = conv_output_hw(input.shape[1:3], (kernel_h, kernel_w), strides, pads, dilations)
    x = jnp.pad(input, ((0, 0), pads[0], pads[1], (0, 0)))
    (sh, sw), (dh, dw) = strides, dilations
    n = x.shape[0]
    cols = [
        lax.slice(
            x,
            (0, i * dh, j * dw, 0),
            (n, i * dh + (out_h - 1) * sh + 1, j * dw + (out_w - 1) * sw + 1, in_channels),
            (1, sh, sw, 1),
        )
        for i in range(kernel_h)
        for j in range(kernel_w)
    ]
    patches = cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)
    w = weight.reshape(kernel_h * kernel_w * in_channels, out_channels)
    out = lax.dot_general(patches, w, (((3,), (0,)), ((), ())))
    return out.astype(jnp.result_type(input, weight))


def conv2d(
    input: jax.Array,
    weight: jax.Array,
    bias: jax.Array | None = None,
    stride: IntOrPair = 1,
    padding: IntOrPair | str = 0,
    dilation: IntOrPair = 1,
    groups: int = 1,
) -> jax.Array:
    """2-D cross-correlation, as ``torch.nn.functional.conv2d`` computes it.

    Args:
      input: ``(N, H, W, C_in)`` NHWC.
      weight: ``(kH, kW, C_in // groups, C_out)`` HWIO (torch's OIHW transposed by
        ``(2, 3, 1, 0)``).
      bias: ``(C_out,)`` or None.
      stride, padding, dilation: ints or pairs; ``padding`` may also be ``'same'`` or
        ``'valid'``. Padding is explicit and symmetric, as in torch.
      groups: number of channel groups; ``C_in`` and ``C_out`` must divide by it.

    Returns:
      ``(N, H_out, W_out, C_out)`` with ``H_out = floor((H + 2p - d(k-1) - 1)/s) + 1``.

    On the CPU, float32 convolutions run through oneDNN (the library torch uses) when
    jaxcnn's native kernels are available, XLA's convolution otherwise; see
    :mod:`jaxcnn.nn.native.onednn_conv` for the choice and ``JAXCNN_CONV_BACKEND``.
    """
    check_nhwc(input, "conv2d")
    if weight.ndim != 4:
        raise ValueError(f"conv2d expects a 4-D HWIO weight, got shape {tuple(weight.shape)}")
    kernel_h, kernel_w, in_per_group, out_channels = weight.shape
    check_positive((kernel_h, kernel_w), "conv2d: kernel_size")
    if groups <= 0:
        raise ValueError(f"groups must be positive, got {groups}")
    if out_channels % groups:
        raise ValueError(f"out_channels ({out_channels}) must be divisible by groups ({groups})")
    if input.shape[-1] != in_per_group * groups:
        raise ValueError(
            f"conv2d: input has {input.shape[-1]} channels (last axis of NHWC shape "
            f"{tuple(input.shape)}), but weight {tuple(weight.shape)} with groups={groups} "
            f"expects {in_per_group * groups}"
        )
    strides = pair(stride, "stride")
    dilations = pair(dilation, "dilation")
    check_positive(strides, "stride")
    check_positive(dilations, "dilation")
    pads = conv_padding(padding, (kernel_h, kernel_w), strides, dilations)
    for axis, (size, k, d, (lo, hi)) in enumerate(
        zip(input.shape[1:3], (kernel_h, kernel_w), dilations, pads)
    ):
        if d * (k - 1) + 1 > size + lo + hi:
            raise ValueError(
                f"conv2d: kernel size {(kernel_h, kernel_w)} with dilation {dilations} is larger "
                f"than the padded input {size + lo + hi} along {'HW'[axis]} "
                f"(input {tuple(input.shape)}, padding {pads})"
            )
    if use_onednn(input, weight):
        out = onednn_conv2d(input, weight, strides, pads, dilations, groups)
    elif groups == 1 and _swapped_by_xla(input.shape[1:3], (kernel_h, kernel_w), strides, pads, dilations):
        out = _conv2d_as_matmul(input, weight, strides, pads, dilations)
    else:
        out = lax.conv_general_dilated(
            input,
            weight,
            window_strides=strides,
            padding=pads,
            rhs_dilation=dilations,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=groups,
        )
    if bias is not None:
        out = out + bias.astype(out.dtype)
    return out


def pad_input(input: jax.Array, padding: tuple[tuple[int, int], tuple[int, int]], mode: str) -> jax.Array:
    """Pad the spatial axes of an NHWC array with torch's ``padding_mode`` names.

    ``mode`` is ``'reflect'``, ``'replicate'`` or ``'circular'``; returns NHWC.
    """
    numpy_mode = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}
    if mode not in numpy_mode:
        raise ValueError(f"padding_mode must be 'zeros', 'reflect', 'replicate' or 'circular', got {mode!r}")
    # torch refuses what numpy would silently do: reflecting more than once or wrapping
    # around more than once.
    for axis, (size, (lo, hi)) in enumerate(zip(input.shape[1:3], padding)):
        if mode == "reflect" and max(lo, hi) >= size:
            raise ValueError(
                f"padding_mode='reflect': padding {(lo, hi)} along {'HW'[axis]} must be less than the "
                f"input size {size} (NHWC input {tuple(input.shape)})"
            )
        if mode == "circular" and max(lo, hi) > size:
            raise ValueError(
                f"padding_mode='circular': padding {(lo, hi)} along {'HW'[axis]} would wrap around more than "
                f"once (input size {size}, NHWC input {tuple(input.shape)})"
            )
    return jnp.pad(input, ((0, 0), padding[0], padding[1], (0, 0)), mode=numpy_mode[mode])
