"""The default, file-free dataset: scikit-learn's bundled handwritten digits, upsampled to 28x28.

scikit-learn ships ``load_digits``: 1,797 real 8x8 grey-level digit images (UCI optdigits test
set) with integer values 0..16 and labels 0..9. They are turned into MNIST-like images here:

1. bilinear upsampling 8x8 -> 28x28 with half-pixel centres and replicated edges (the same
   interpolation as PIL ``Image.BILINEAR`` and ``torch.nn.functional.interpolate(...,
   mode="bilinear", align_corners=False)`` give when *upsampling*; antialiasing only matters
   for downsampling, so there is none), and
2. scaling 0..16 -> 0..255, rounding half up.

Both steps run in exact integer arithmetic, so the uint8 result is bit-identical on every
machine and BLAS.
"""

from __future__ import annotations

import numpy as np

__all__ = ["bilinear_weights", "digits_arrays", "upsample_bilinear_exact"]


def bilinear_weights(in_size: int, out_size: int) -> tuple[np.ndarray, int]:
    """Integer interpolation matrix for bilinear resizing along one axis.

    Output pixel ``i`` samples the input at ``(i + 0.5) * in_size / out_size - 0.5`` (half-pixel
    centres), clamped to ``[0, in_size - 1]`` (edge replication).

    Args:
      in_size: input length.
      out_size: output length (>= in_size; this is an upsampling helper).

    Returns:
      ``(W, denom)``: int64 matrix of shape (out_size, in_size) whose rows sum to ``denom``
      (``2 * out_size``); the resized signal is ``W @ x / denom`` exactly.
    """
    if out_size < in_size:
        raise ValueError("bilinear_weights is for upsampling (out_size >= in_size)")
    denom = 2 * out_size
    w = np.zeros((out_size, in_size), dtype=np.int64)
    for i in range(out_size):
        num = (2 * i + 1) * in_size - out_size  # source coordinate * denom
        if num <= 0:
            w[i, 0] = denom
            continue
        i0, frac = divmod(num, denom)
        if i0 >= in_size - 1:
            w[i, in_size - 1] = denom
            continue
        w[i, i0] += denom - frac
        w[i, i0 + 1] += frac
    return w, denom


def upsample_bilinear_exact(
    images: np.ndarray, out_hw: tuple[int, int], max_value: int
) -> np.ndarray:
    """Bilinearly upsample small-integer images and scale them to uint8, exactly.

    Args:
      images: integer array of shape (N, h, w) with values in ``[0, max_value]``.
      out_hw: ``(H, W)`` output size, each >= the input size.
      max_value: the input value that maps to 255.

    Returns:
      uint8 array of shape (N, H, W): ``round_half_up(resize(x) * 255 / max_value)``.
    """
    x = np.asarray(images, dtype=np.int64)
    wh, dh = bilinear_weights(x.shape[1], out_hw[0])
    ww, dw = bilinear_weights(x.shape[2], out_hw[1])
    num = np.einsum("hi,nij,wj->nhw", wh, x, ww)  # integer einsum: exact
    den = dh * dw * int(max_value)
    out = (num * 255 * 2 + den) // (2 * den)
    return np.clip(out, 0, 255).astype(np.uint8)


def digits_arrays(image_size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 scikit-learn digits as MNIST-like uint8 images.

    Args:
      image_size: output height and width (>= 8); 28 matches MNIST.

    Returns:
      ``(images, labels)``: uint8 (1797, image_size, image_size, 1) NHWC with values 0..255,
      and int32 (1797,) labels 0..9, in scikit-learn's order.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    raw = np.asarray(bunch.images).round().astype(np.int64)  # (1797, 8, 8), values 0..16
    images = upsample_bilinear_exact(raw, (image_size, image_size), max_value=16)
    return images[..., None], np.asarray(bunch.target, dtype=np.int32)
