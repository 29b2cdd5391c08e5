"""Synthetic ImageNet-shaped image folders (random JPEGs of varied sizes) for tests and benchmarks.

No real ImageNet is available offline; :func:`write_image_folder` writes ``root/<class>/<i>.jpg``
with seeded random content (smooth colour gradients plus noise, so JPEG sizes and decode
costs resemble photos more than pure noise or flat colour would) and seeded random sizes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["write_image_folder"]


def write_image_folder(
    root: str | os.PathLike,
    num_images: int,
    *,
    num_classes: int = 10,
    min_size: int = 64,
    max_size: int = 96,
    seed: int = 0,
    quality: int = 90,
    fmt: str = "JPEG",
    grayscale: bool = False,
) -> Path:
    """Write ``num_images`` images into ``num_classes`` class folders under ``root``.

    Image ``i`` goes to class ``i % num_classes`` (balanced), named ``class_<k>/<i:07d>.jpg``;
    its height and width are drawn independently and uniformly from ``[min_size, max_size]``
    (ImageNet-like: ``min_size=200, max_size=500``, mean ~400x350). RGB, or grey-level (PIL mode
    ``L``, the channel mean) with ``grayscale``. Same arguments, same bytes.

    Returns:
      ``root`` as a ``Path``.
    """
    from PIL import Image

    root = Path(root).expanduser()
    rng = np.random.default_rng(seed)
    suffix = {"JPEG": ".jpg", "PNG": ".png"}.get(fmt.upper(), "." + fmt.lower())
    for k in range(num_classes):
        (root / f"class_{k:04d}").mkdir(parents=True, exist_ok=True)
    for i in range(num_images):
        h, w = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
        c0, c1 = rng.integers(0, 256, size=(2, 3))
        t = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :, None]
        s = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
        img = c0 * (1 - t) * (1 - s) + c1 * t * s + rng.normal(0, 24, size=(h, w, 3)).astype(np.float32)
        img = np.clip(img, 0, 255).astype(np.uint8)
        if grayscale:
            img = img.mean(axis=-1).astype(np.uint8)
        path = root / f"class_{i % num_classes:04d}" / f"{i:07d}{suffix}"
        Image.fromarray(img).save(path, format=fmt, **({"quality": quality} if fmt.upper() == "JPEG" else {}))
    return root
