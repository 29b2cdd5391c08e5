r"""Lesson: what a "convolution" layer really computes.

Cross-correlation
-----------------
Strictly speaking, convolutional layers are misnamed: the operation they compute is a
*cross-correlation*. For a two-dimensional input ``X`` and a ``k_h x k_w`` kernel ``K``,
output element ``(i, j)`` is::

    Y[i, j] = sum_a sum_b  X[i + a, j + b] * K[a, b]

The kernel window starts at the top-left corner of the input and slides from left to right
and from top to bottom. At each position, the part of the input inside the window and the
kernel are multiplied elementwise and the products are summed into one number::

    input         kernel     output
    0  1  2       0  1       19  25
    3  4  5   *   2  3   =   37  43
    6  7  8

    0*0 + 1*1 + 3*2 + 4*3 = 19      1*0 + 2*1 + 4*2 + 5*3 = 25
    3*0 + 4*1 + 6*2 + 7*3 = 37      4*0 + 5*1 + 7*2 + 8*3 = 43

The window fits ``n_h - k_h + 1`` times down and ``n_w - k_w + 1`` times across, so
without padding the output is ``(n_h - k_h + 1) x (n_w - k_w + 1)``.
:func:`cross_correlate2d` implements exactly this.

Convolution flips the kernel
----------------------------
The convolution of mathematics and signal processing walks the kernel *backwards*::

    (X conv K)[i, j] = sum_a sum_b  X[i - a, j - b] * K[a, b]

The top-left pixel of each window now meets the kernel's *bottom-right* tap. On the
positions where the kernel lies entirely inside the input, this is the same as flipping
the kernel upside down and left to right (a 180-degree rotation), then cross-correlating::

    convolve2d(X, K) == cross_correlate2d(X, K[::-1, ::-1])

:func:`convolve2d` is implemented exactly that way and matches ``scipy.signal.convolve2d``;
:func:`cross_correlate2d` matches ``scipy.signal.correlate2d`` and
``torch.nn.functional.conv2d``.

Why frameworks call cross-correlation "convolution"
---------------------------------------------------
In a network the kernel is learned from data. Had the layer computed a true convolution,
training would simply learn the flipped kernel, and the layer's outputs would be the same.
The flip costs work and changes nothing, so PyTorch, JAX (``lax.conv_general_dilated``)
and TensorFlow skip it and still say "convolution". This library follows that usage.

The flip does matter when a kernel is *not* learned: a hand-designed kernel, or one copied
from an image-processing textbook or from ``scipy.ndimage``/``scipy.signal`` code, where
"convolution" means the flipped operation. Take the horizontal edge detector
``K = [[1, -1]]``. Cross-correlation computes ``X[i, j] - X[i, j + 1]``: ``+1`` where a
bright region ends going rightwards, ``-1`` where it starts. True convolution with the
same ``K`` computes ``X[i, j + 1] - X[i, j]``, the opposite sign. An asymmetric kernel
loaded into a conv layer without flipping detects the opposite polarity, shifts an image
the other way, and so on. Symmetric kernels (box blur, Gaussian, Laplacian) equal their
flip and give the same answer either way.

Padding, stride, dilation and the output size
---------------------------------------------
*Padding* ``p`` adds ``p`` rows/columns of zeros on each side of the input. *Stride*
``s`` moves the window ``s`` positions at a time. *Dilation* ``d`` spaces the kernel taps
``d`` apart, so a ``k``-tap kernel spans ``k_eff = d(k - 1) + 1`` input positions. Along
each axis, an input of size ``n`` gives an output of size::

    n_out = floor((n + 2p - d(k - 1) - 1) / s) + 1

For example ResNet's first layer, a 7x7 kernel with stride 2 and padding 3 on a 224x224
image, gives ``floor((224 + 6 - 6 - 1) / 2) + 1 = 112``. With stride 1, choosing
``2p = d(k - 1)`` keeps the size unchanged ("same" padding). :func:`conv_output_size`
evaluates the formula and rejects configurations whose kernel does not fit.

Receptive field
---------------
The *receptive field* of a unit is the set of input pixels that can influence it. One 3x3
layer sees 3x3 pixels; a second 3x3 layer on top sees 3x3 units of the first, which
together cover 5x5 input pixels. Per axis, three numbers describe a layer's output:

* ``size`` ``r``: how many input pixels one unit sees;
* ``jump`` ``j``: how many input pixels apart two neighbouring units are (the product of
  the strides so far);
* ``start``: the input coordinate of the centre of the first unit's receptive field.

Starting from the input (``r = 1``, ``j = 1``, ``start = 0``), each layer with kernel
``k``, stride ``s``, padding ``p`` and dilation ``d`` updates them as::

    k_eff     = d(k - 1) + 1
    r_out     = r_in + (k_eff - 1) * j_in
    j_out     = j_in * s
    start_out = start_in + ((k_eff - 1) / 2 - p) * j_in

Two 3x3 layers see 5x5 and three see 7x7: VGG's argument for stacking 3x3 kernels, which
reach the receptive field of one 7x7 kernel with ``27 C^2`` instead of ``49 C^2`` weights
and three non-linearities instead of one. Stride multiplies the jump, so every layer after
a downsampling step grows the receptive field faster. :func:`receptive_field` applies the
recurrence to a stack of layers.

Multiple channels
-----------------
With ``C_in`` input channels, every output channel ``o`` has its own ``C_in x k_h x k_w``
kernel: the output is the *sum over input channels* of the 2-D cross-correlations, plus a
bias. With ``groups = g`` the channels are split into ``g`` independent groups, and each
output channel only sums over the input channels of its own group. :func:`conv2d_naive`
spells this out with loops, in PyTorch's NCHW/OIHW layout.

The backward pass is convolution too
------------------------------------
Training needs the gradients of a loss ``L`` with respect to the layer's input and kernel,
given ``G = dL/dY``, the gradient with respect to the output. With stride 1, no padding and
no dilation, ``Y[i, j] = sum_a sum_b X[i + a, j + b] * K[a, b]`` gives::

    dL/dX = full *convolution* of G with K            (G padded by k - 1 on every side)
    dL/dK = cross-correlation of X with G             (valid: a k_h x k_w result)

Each input pixel ``X[u, v]`` met kernel tap ``K[a, b]`` in output ``Y[u - a, v - b]``, so
its gradient sums ``G[u - a, v - b] * K[a, b]``: the index runs backwards through ``K``, the
definition of a true convolution (the flip that forward layers skip comes back here). Each
kernel tap met input ``X[i + a, j + b]`` in output ``(i, j)``, so its gradient sums
``X[i + a, j + b] * G[i, j]``: a cross-correlation with ``G`` playing the kernel.

Stride, padding and dilation fit the same two formulas. A stride-``s`` layer computes every
``s``-th output of the stride-1 layer, so its gradient is the stride-1 gradient with the
missing outputs' gradients set to zero: insert ``s - 1`` zeros between the entries of ``G``
(:func:`dilate2d`). A dilated kernel is a dense kernel with ``d - 1`` zeros between its
taps, so dilate ``K`` the same way. Padding only adds input pixels: compute the gradient of
the padded input and crop ``p`` from each side. When the stride leaves the last rows or
columns of the input unused, their gradient is zero. :func:`conv_input_grad2d` and
:func:`conv_kernel_grad2d` implement this for one channel, :func:`conv2d_naive_backward`
for a multi-channel layer; they match ``jax.grad`` and ``torch.autograd``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Layer",
    "ReceptiveField",
    "conv2d_naive",
    "conv2d_naive_backward",
    "conv_input_grad2d",
    "conv_kernel_grad2d",
    "conv_output_size",
    "convolve2d",
    "cross_correlate2d",
    "dilate2d",
    "effective_kernel_size",
    "flip_kernel",
    "pad2d",
    "receptive_field",
    "receptive_field_table",
]

IntOrPair = int | Sequence[int]


# --------------------------------------------------------------------------------------
# Argument helpers
# --------------------------------------------------------------------------------------


def _as_pair(value: IntOrPair, name: str) -> tuple[int, int]:
    """Return ``(value, value)`` for an int, or the (height, width) pair for a pair."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return (int(value), int(value))
    values = tuple(value)
    if len(values) != 2 or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values
    ):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return (int(values[0]), int(values[1]))


def _check_2d(array: np.ndarray, name: str) -> None:
    """Raise ``ValueError`` unless ``array`` is a non-empty 2-D array."""
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D (height, width), got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {array.shape}")


# --------------------------------------------------------------------------------------
# Output size
# --------------------------------------------------------------------------------------


def effective_kernel_size(kernel_size: int, dilation: int = 1) -> int:
    """Number of input positions a dilated kernel spans: ``d * (k - 1) + 1``.

    >>> effective_kernel_size(3, dilation=1), effective_kernel_size(3, dilation=2)
    (3, 5)
    """
    if kernel_size <= 0:
        raise ValueError(f"kernel_size must be positive, got {kernel_size}")
    if dilation <= 0:
        raise ValueError(f"dilation must be positive, got {dilation}")
    return dilation * (kernel_size - 1) + 1


def conv_output_size(
    in_size: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1
) -> int:
    """Output length of a convolution or pooling window along one axis.

    ``floor((in_size + 2 * padding - dilation * (kernel_size - 1) - 1) / stride) + 1``,
    the formula PyTorch documents for ``Conv2d`` and ``MaxPool2d``.

    Args:
      in_size: input length along the axis (> 0).
      kernel_size: kernel length (> 0).
      stride: step between window positions (> 0).
      padding: zeros added on *each* side (>= 0).
      dilation: spacing between kernel taps (> 0).

    Raises:
      ValueError: for non-positive sizes, stride or dilation, negative padding, or when the
        dilated kernel is larger than the padded input (no window position fits).

    >>> conv_output_size(3, 2)            # the 3x3 input, 2x2 kernel example
    2
    >>> conv_output_size(224, 7, stride=2, padding=3)   # ResNet's first layer
    112
    >>> conv_output_size(32, 3, padding=2, dilation=2)  # "same" for a dilated 3x3
    32
    """
    if in_size <= 0:
        raise ValueError(f"in_size must be positive, got {in_size}")
    if stride <= 0:
        raise ValueError(f"stride must be positive, got {stride}")
    if padding < 0:
        raise ValueError(f"padding must be non-negative, got {padding}")
    k_eff = effective_kernel_size(kernel_size, dilation)
    padded = in_size + 2 * padding
    if k_eff > padded:
        raise ValueError(
            f"kernel spans {k_eff} positions (kernel_size={kernel_size}, dilation={dilation}) "
            f"but the padded input has only {padded} (in_size={in_size}, padding={padding})"
        )
    return (padded - k_eff) // stride + 1


# --------------------------------------------------------------------------------------
# Single-channel cross-correlation and convolution
# --------------------------------------------------------------------------------------


def pad2d(image: np.ndarray, padding: IntOrPair) -> np.ndarray:
    """Surround a 2-D array with zeros: ``padding`` rows above and below, columns left and right.

    ``padding`` is an int or a ``(rows, columns)`` pair.

    >>> pad2d(np.array([[1, 2]]), 1)
    array([[0, 0, 0, 0],
           [0, 1, 2, 0],
           [0, 0, 0, 0]])
    """
    pad_h, pad_w = _as_pair(padding, "padding")
    if pad_h < 0 or pad_w < 0:
        raise ValueError(f"padding must be non-negative, got {padding!r}")
    return np.pad(np.asarray(image), ((pad_h, pad_h), (pad_w, pad_w)), mode="constant")


def cross_correlate2d(
    image: np.ndarray,
    kernel: np.ndarray,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
) -> np.ndarray:
    """2-D cross-correlation of one channel: what deep-learning "convolution" layers compute.

    ``Y[i, j] = sum_a sum_b X[i*s + a*d, j*s + b*d] * K[a, b]`` over the zero-padded input
    ``X``: slide the kernel window over the image, multiply elementwise, sum.

    Args:
      image: ``(H, W)`` input.
      kernel: ``(kh, kw)`` kernel, used as is (not flipped).
      stride: int or ``(sh, sw)``; the window moves this many positions per step.
      padding: int or ``(ph, pw)``; zeros added on each side before sliding.
      dilation: int or ``(dh, dw)``; spacing between the kernel taps.

    Returns:
      ``(H_out, W_out)`` array, sizes from :func:`conv_output_size`.

    The worked example (d2l.ai, "Convolutions for Images"):

    >>> X = np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8]])
    >>> K = np.array([[0, 1], [2, 3]])
    >>> cross_correlate2d(X, K)
    array([[19, 25],
           [37, 43]])
    """
    image = np.asarray(image)
    kernel = np.asarray(kernel)
    _check_2d(image, "image")
    _check_2d(kernel, "kernel")
    stride_h, stride_w = _as_pair(stride, "stride")
    pad_h, pad_w = _as_pair(padding, "padding")
    dil_h, dil_w = _as_pair(dilation, "dilation")
    kernel_h, kernel_w = kernel.shape

    out_h = conv_output_size(image.shape[0], kernel_h, stride_h, pad_h, dil_h)
    out_w = conv_output_size(image.shape[1], kernel_w, stride_w, pad_w, dil_w)
    padded = pad2d(image, (pad_h, pad_w))
    span_h = effective_kernel_size(kernel_h, dil_h)
    span_w = effective_kernel_size(kernel_w, dil_w)

    output = np.zeros((out_h, out_w), dtype=np.result_type(image, kernel))
    for i in range(out_h):
        for j in range(out_w):
            top, left = i * stride_h, j * stride_w
            # The input pixels under the kernel taps: a (kh, kw) window, every d-th pixel.
            window = padded[top : top + span_h : dil_h, left : left + span_w : dil_w]
            output[i, j] = np.sum(window * kernel)
    return output


def flip_kernel(kernel: np.ndarray) -> np.ndarray:
    """Rotate a 2-D kernel by 180 degrees: reverse it upside down and left to right.

    >>> flip_kernel(np.array([[0, 1], [2, 3]]))
    array([[3, 2],
           [1, 0]])
    """
    kernel = np.asarray(kernel)
    _check_2d(kernel, "kernel")
    return kernel[::-1, ::-1]


def convolve2d(
    image: np.ndarray,
    kernel: np.ndarray,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
) -> np.ndarray:
    """True 2-D convolution of one channel: flip the kernel, then cross-correlate.

    Same arguments and output size as :func:`cross_correlate2d`; without padding, equal to
    ``scipy.signal.convolve2d(image, kernel, mode="valid")``.

    >>> X = np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8]])
    >>> K = np.array([[0, 1], [2, 3]])
    >>> convolve2d(X, K)        # = cross_correlate2d(X, [[3, 2], [1, 0]])
    array([[ 5, 11],
           [23, 29]])
    """
    return cross_correlate2d(image, flip_kernel(kernel), stride, padding, dilation)


# --------------------------------------------------------------------------------------
# Multi-channel convolution layer, PyTorch layout
# --------------------------------------------------------------------------------------


def conv2d_naive(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
    groups: int = 1,
) -> np.ndarray:
    """A convolution layer's forward pass written with loops, as ``torch.nn.functional.conv2d``.

    For every image ``n`` and output channel ``o`` in group ``g``::

        y[n, o] = bias[o] + sum over input channels c of group g:
                      cross_correlate2d(x[n, c], weight[o, c - first channel of g])

    Args:
      x: ``(N, C_in, H, W)`` (NCHW), or one ``(C_in, H, W)`` image.
      weight: ``(C_out, C_in // groups, kh, kw)`` (OIHW).
      bias: ``(C_out,)`` or None.
      stride, padding, dilation: ints or ``(height, width)`` pairs, as in
        :func:`cross_correlate2d`.
      groups: split the channels into this many independent groups; ``C_in`` and
        ``C_out`` must both be divisible by it. ``groups == C_in`` is a depthwise conv.

    Returns:
      ``(N, C_out, H_out, W_out)``, or ``(C_out, H_out, W_out)`` for a 3-D ``x``.
    """
    x = np.asarray(x)
    weight = np.asarray(weight)
    single_image = x.ndim == 3
    if single_image:
        x = x[np.newaxis]
    if x.ndim != 4:
        raise ValueError(f"x must be NCHW (or CHW), got shape {x.shape}")
    if weight.ndim != 4:
        raise ValueError(f"weight must be OIHW, got shape {weight.shape}")
    if groups <= 0:
        raise ValueError(f"groups must be positive, got {groups}")

    batch, in_channels, height, width = x.shape
    out_channels, in_per_group, kernel_h, kernel_w = weight.shape
    if in_channels % groups or out_channels % groups:
        raise ValueError(
            f"in_channels ({in_channels}) and out_channels ({out_channels}) must be "
            f"divisible by groups ({groups})"
        )
    if in_per_group != in_channels // groups:
        raise ValueError(
            f"weight {weight.shape} expects {in_per_group * groups} input channels with "
            f"groups={groups}, but x has {in_channels}"
        )
    if bias is not None:
        bias = np.asarray(bias)
        if bias.shape != (out_channels,):
            raise ValueError(f"bias must have shape ({out_channels},), got {bias.shape}")
    out_per_group = out_channels // groups

    stride_h, stride_w = _as_pair(stride, "stride")
    pad_h, pad_w = _as_pair(padding, "padding")
    dil_h, dil_w = _as_pair(dilation, "dilation")
    out_h = conv_output_size(height, kernel_h, stride_h, pad_h, dil_h)
    out_w = conv_output_size(width, kernel_w, stride_w, pad_w, dil_w)

    dtypes = [x, weight] + ([bias] if bias is not None else [])
    output = np.zeros((batch, out_channels, out_h, out_w), dtype=np.result_type(*dtypes))
    for n in range(batch):
        for o in range(out_channels):
            group = o // out_per_group
            first_in_channel = group * in_per_group
            # Sum over the input channels of this group: one 2-D cross-correlation each.
            for c in range(in_per_group):
                output[n, o] += cross_correlate2d(
                    x[n, first_in_channel + c],
                    weight[o, c],
                    stride=(stride_h, stride_w),
                    padding=(pad_h, pad_w),
                    dilation=(dil_h, dil_w),
                )
            if bias is not None:
                output[n, o] += bias[o]
    return output[0] if single_image else output


# --------------------------------------------------------------------------------------
# Backward pass
# --------------------------------------------------------------------------------------


def dilate2d(array: np.ndarray, factor: IntOrPair) -> np.ndarray:
    """Insert ``factor - 1`` zeros between neighbouring entries of a 2-D array.

    An ``(h, w)`` array becomes ``((h - 1) * fh + 1, (w - 1) * fw + 1)``; ``factor`` is an int
    or a ``(rows, columns)`` pair. Dilating a kernel gives the dense kernel a dilated
    convolution uses; dilating an output gradient undoes a stride.

    >>> dilate2d(np.array([[1, 2], [3, 4]]), 2)
    array([[1, 0, 2],
           [0, 0, 0],
           [3, 0, 4]])
    """
    array = np.asarray(array)
    _check_2d(array, "array")
    factor_h, factor_w = _as_pair(factor, "factor")
    if factor_h <= 0 or factor_w <= 0:
        raise ValueError(f"factor must be positive, got {factor!r}")
    height, width = array.shape
    dilated = np.zeros(((height - 1) * factor_h + 1, (width - 1) * factor_w + 1), array.dtype)
    dilated[::factor_h, ::factor_w] = array
    return dilated


def _check_grad_shape(grad_output, image_shape, kernel_shape, stride, padding, dilation) -> None:
    expected = tuple(
        conv_output_size(n, k, s, p, d)
        for n, k, s, p, d in zip(image_shape, kernel_shape, stride, padding, dilation)
    )
    if grad_output.shape != expected:
        raise ValueError(
            f"grad_output has shape {grad_output.shape}, but a {image_shape} input and a "
            f"{kernel_shape} kernel give a {expected} output"
        )


def conv_input_grad2d(
    grad_output: np.ndarray,
    kernel: np.ndarray,
    input_shape: Sequence[int],
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
) -> np.ndarray:
    """Gradient of :func:`cross_correlate2d` with respect to its input: a *true* convolution.

    ``dL/dX`` = the full convolution of the output gradient ``G`` with the kernel, after
    inserting ``stride - 1`` zeros between the entries of ``G`` and ``dilation - 1`` between
    the kernel taps (:func:`dilate2d`); then the padding is cropped off. Input rows/columns
    that the stride left unused get zero.

    Args:
      grad_output: ``(H_out, W_out)`` gradient of the loss with respect to the output.
      kernel: ``(kh, kw)`` kernel of the forward pass.
      input_shape: ``(H, W)`` of the forward input (the stride hides its exact size).
      stride, padding, dilation: those of the forward pass (ints or pairs).

    Returns:
      ``(H, W)`` gradient with respect to the input.

    >>> G = np.array([[1, 0], [0, 0]])      # only Y[0, 0] matters
    >>> conv_input_grad2d(G, np.array([[0, 1], [2, 3]]), (3, 3))
    array([[0, 1, 0],
           [2, 3, 0],
           [0, 0, 0]])
    """
    grad_output = np.asarray(grad_output)
    kernel = np.asarray(kernel)
    _check_2d(grad_output, "grad_output")
    _check_2d(kernel, "kernel")
    stride, padding, dilation = (
        _as_pair(stride, "stride"), _as_pair(padding, "padding"), _as_pair(dilation, "dilation")
    )  # fmt: skip
    input_shape = _as_pair(input_shape, "input_shape")
    _check_grad_shape(grad_output, input_shape, kernel.shape, stride, padding, dilation)

    spread = dilate2d(grad_output, stride)  # the stride-1 output gradient, zeros where skipped
    dense_kernel = dilate2d(kernel, dilation)  # the dilated kernel as a dense one
    full_padding = (dense_kernel.shape[0] - 1, dense_kernel.shape[1] - 1)
    grad_padded = convolve2d(spread, dense_kernel, padding=full_padding)  # full convolution
    # The stride may leave the last padded rows/columns unused: their gradient is zero.
    padded_h, padded_w = input_shape[0] + 2 * padding[0], input_shape[1] + 2 * padding[1]
    grad_padded = np.pad(
        grad_padded,
        ((0, padded_h - grad_padded.shape[0]), (0, padded_w - grad_padded.shape[1])),
    )
    return grad_padded[padding[0] : padded_h - padding[0], padding[1] : padded_w - padding[1]]


def conv_kernel_grad2d(
    image: np.ndarray,
    grad_output: np.ndarray,
    kernel_shape: Sequence[int],
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
) -> np.ndarray:
    """Gradient of :func:`cross_correlate2d` with respect to its kernel: a cross-correlation.

    ``dL/dK`` = the cross-correlation of the zero-padded input with the output gradient
    ``G``, after inserting ``stride - 1`` zeros between the entries of ``G``; a dilated
    kernel's taps sit ``dilation`` pixels apart, so every ``dilation``-th result is kept.

    Args:
      image: ``(H, W)`` forward input.
      grad_output: ``(H_out, W_out)`` gradient of the loss with respect to the output.
      kernel_shape: ``(kh, kw)`` of the forward kernel.
      stride, padding, dilation: those of the forward pass (ints or pairs).

    Returns:
      ``(kh, kw)`` gradient with respect to the kernel.

    >>> X = np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8]])
    >>> conv_kernel_grad2d(X, np.ones((2, 2), int), (2, 2))   # L = sum(Y)
    array([[ 8, 12],
           [20, 24]])
    """
    image = np.asarray(image)
    grad_output = np.asarray(grad_output)
    _check_2d(image, "image")
    _check_2d(grad_output, "grad_output")
    stride, padding, dilation = (
        _as_pair(stride, "stride"), _as_pair(padding, "padding"), _as_pair(dilation, "dilation")
    )  # fmt: skip
    kernel_h, kernel_w = _as_pair(kernel_shape, "kernel_shape")
    _check_grad_shape(grad_output, image.shape, (kernel_h, kernel_w), stride, padding, dilation)

    correlation = cross_correlate2d(pad2d(image, padding), dilate2d(grad_output, stride))
    # Tap (a, b) of a dilated kernel read the input at offset (a * dh, b * dw).
    return correlation[:: dilation[0], :: dilation[1]][:kernel_h, :kernel_w]


def conv2d_naive_backward(
    x: np.ndarray,
    weight: np.ndarray,
    grad_output: np.ndarray,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
    groups: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The backward pass of :func:`conv2d_naive`, built from the single-channel gradients.

    Output channel ``o`` of group ``g`` used input channel ``c`` through ``weight[o, c']``, so
    ``grad_x[n, c]`` sums :func:`conv_input_grad2d` over the output channels of its group and
    ``grad_weight[o, c']`` sums :func:`conv_kernel_grad2d` over the batch.

    Args:
      x: ``(N, C_in, H, W)`` (NCHW) forward input.
      weight: ``(C_out, C_in // groups, kh, kw)`` (OIHW).
      grad_output: ``(N, C_out, H_out, W_out)`` gradient of the loss with respect to the output.
      stride, padding, dilation, groups: those of the forward pass.

    Returns:
      ``(grad_x, grad_weight, grad_bias)`` shaped like ``x``, ``weight`` and ``(C_out,)``.
    """
    x = np.asarray(x)
    weight = np.asarray(weight)
    grad_output = np.asarray(grad_output)
    if x.ndim != 4 or weight.ndim != 4 or grad_output.ndim != 4:
        raise ValueError(
            f"x, weight and grad_output must be 4-D (NCHW, OIHW, NCHW), got {x.shape}, "
            f"{weight.shape}, {grad_output.shape}"
        )
    batch, in_channels, height, width = x.shape
    out_channels, in_per_group, kernel_h, kernel_w = weight.shape
    if groups <= 0 or in_channels % groups or out_channels % groups:
        raise ValueError(f"channels ({in_channels}, {out_channels}) must divide by groups ({groups})")
    if in_per_group != in_channels // groups or grad_output.shape[:2] != (batch, out_channels):
        raise ValueError(
            f"shapes do not fit: x {x.shape}, weight {weight.shape}, grad_output "
            f"{grad_output.shape}, groups={groups}"
        )
    out_per_group = out_channels // groups
    options = dict(stride=stride, padding=padding, dilation=dilation)

    dtype = np.result_type(x, weight, grad_output)
    grad_x = np.zeros(x.shape, dtype)
    grad_weight = np.zeros(weight.shape, dtype)
    for n in range(batch):
        for o in range(out_channels):
            first_in_channel = (o // out_per_group) * in_per_group
            for c in range(in_per_group):
                grad_x[n, first_in_channel + c] += conv_input_grad2d(
                    grad_output[n, o], weight[o, c], (height, width), **options
                )
                grad_weight[o, c] += conv_kernel_grad2d(
                    x[n, first_in_channel + c], grad_output[n, o], (kernel_h, kernel_w), **options
                )
    grad_bias = grad_output.sum(axis=(0, 2, 3)).astype(dtype)
    return grad_x, grad_weight, grad_bias


# --------------------------------------------------------------------------------------
# Receptive field
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """One sliding-window layer (convolution or pooling) along one spatial axis.

    Pooling has the same window arithmetic as convolution, so ``kind`` is only a label.
    """

    kernel_size: int
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    kind: str = "conv"

    def __post_init__(self) -> None:
        """Reject sizes the output-size formula cannot use."""
        if self.kernel_size <= 0 or self.stride <= 0 or self.dilation <= 0:
            raise ValueError(f"kernel_size, stride and dilation must be positive: {self}")
        if self.padding < 0:
            raise ValueError(f"padding must be non-negative: {self}")

    @property
    def effective_kernel_size(self) -> int:
        """Input positions the dilated kernel spans: ``dilation * (kernel_size - 1) + 1``."""
        return effective_kernel_size(self.kernel_size, self.dilation)


@dataclass(frozen=True)
class ReceptiveField:
    """Receptive field of the units in one layer's output, along one spatial axis.

    Attributes:
      layer: the layer whose output this describes.
      size: input pixels one output unit sees.
      jump: input pixels between two neighbouring output units (product of the strides).
      start: input coordinate of the centre of the first output unit's receptive field
        (pixel ``i`` has coordinate ``i``; negative values reach into the padding).
      output_size: the layer's output length, when an input size was given.
    """

    layer: Layer
    size: int
    jump: int
    start: float
    output_size: int | None = None


def _as_layer(spec: Layer | Sequence[int]) -> Layer:
    """A :class:`Layer` from a Layer or a ``(kernel_size, stride, padding, dilation)`` prefix."""
    if isinstance(spec, Layer):
        return spec
    values = tuple(spec)
    if not 1 <= len(values) <= 4:
        raise ValueError(
            f"a layer is a Layer or a (kernel_size, stride, padding, dilation) tuple, got {spec!r}"
        )
    return Layer(*values)


def receptive_field(
    layers: Iterable[Layer | Sequence[int]], input_size: int | None = None
) -> list[ReceptiveField]:
    """Receptive field size, jump and start after each layer of a stack, along one axis.

    Applies, from ``size = 1, jump = 1, start = 0`` at the input::

        k_eff = dilation * (kernel_size - 1) + 1
        size  = size + (k_eff - 1) * jump
        start = start + ((k_eff - 1) / 2 - padding) * jump
        jump  = jump * stride

    Args:
      layers: :class:`Layer` objects, or ``(kernel_size, stride, padding, dilation)``
        tuples where the trailing entries may be left out (defaults 1, 0, 1).
      input_size: optional input length; when given, each entry also carries the layer's
        output length from :func:`conv_output_size`.

    Returns:
      One :class:`ReceptiveField` per layer, in order.

    Two stacked 3x3 convolutions see 5x5 pixels, three see 7x7:

    >>> [rf.size for rf in receptive_field([(3, 1, 1)] * 3)]
    [3, 5, 7]

    ResNet's stem, a 7x7 stride-2 convolution and a 3x3 stride-2 max pool, on 224 pixels:

    >>> stem = [Layer(7, stride=2, padding=3), Layer(3, stride=2, padding=1, kind="pool")]
    >>> [(rf.size, rf.jump, rf.start, rf.output_size) for rf in receptive_field(stem, 224)]
    [(7, 2, 0.0, 112), (11, 4, 0.0, 56)]

    VGG-16's feature extractor: five blocks of 3x3 convolutions, each closed by a 2x2
    stride-2 max pool. The last conv (conv5_3) sees 196 pixels, pool5 212:

    >>> vgg16 = []
    >>> for convs in (2, 2, 3, 3, 3):
    ...     vgg16 += [Layer(3, padding=1)] * convs + [Layer(2, stride=2, kind="pool")]
    >>> fields = receptive_field(vgg16, input_size=224)
    >>> fields[-2].size, fields[-1].size, fields[-1].jump, fields[-1].output_size
    (196, 212, 32, 7)

    Dilation grows the receptive field without downsampling (dilations 1, 2, 4):

    >>> [rf.size for rf in receptive_field([(3, 1, 1, 1), (3, 1, 2, 2), (3, 1, 4, 4)])]
    [3, 7, 15]
    """
    size, jump, start = 1, 1, 0.0
    length = input_size
    fields = []
    for spec in layers:
        layer = _as_layer(spec)
        k_eff = layer.effective_kernel_size
        size = size + (k_eff - 1) * jump
        start = start + ((k_eff - 1) / 2 - layer.padding) * jump
        jump = jump * layer.stride
        if length is not None:
            length = conv_output_size(
                length, layer.kernel_size, layer.stride, layer.padding, layer.dilation
            )
        fields.append(ReceptiveField(layer, size, jump, start, length))
    return fields


def receptive_field_table(
    layers: Iterable[Layer | Sequence[int]], input_size: int | None = None
) -> str:
    """A plain-text table of :func:`receptive_field`'s results, one row per layer.

    >>> print(receptive_field_table([Layer(7, 2, 3), Layer(3, 2, 1, kind="pool")], 224))
    layer  kind  k  s  p  d  out  size  jump  start
        1  conv  7  2  3  1  112     7     2    0.0
        2  pool  3  2  1  1   56    11     4    0.0
    """
    fields = receptive_field(layers, input_size)
    header = ("layer", "kind", "k", "s", "p", "d", "out", "size", "jump", "start")
    rows = [header]
    for index, rf in enumerate(fields, start=1):
        layer = rf.layer
        rows.append(
            (
                str(index),
                layer.kind,
                str(layer.kernel_size),
                str(layer.stride),
                str(layer.padding),
                str(layer.dilation),
                "-" if rf.output_size is None else str(rf.output_size),
                str(rf.size),
                str(rf.jump),
                f"{rf.start:.1f}",
            )
        )
    widths = [max(len(row[col]) for row in rows) for col in range(len(header))]
    return "\n".join(
        "  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in rows
    )
