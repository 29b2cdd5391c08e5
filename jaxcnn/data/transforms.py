"""torchvision's ImageNet recipe on PIL images, with torch's semantics, for the streaming loader.

Training: ``RandomResizedCrop(size)`` (area scale U(0.08, 1), aspect ratio log-uniform in
(3/4, 4/3), 10 tries, then torchvision's central fallback) followed by
``RandomHorizontalFlip()``; evaluation: ``Resize(round(size / 0.875))`` (the short side;
256 for 224) followed by ``CenterCrop(size)``. Every resize is PIL's ``BILINEAR``, which is what
torchvision's ``F.resize`` does on PIL images (PIL's filter is antialiased when shrinking).
Normalisation (``(x / 255 - mean) / std`` with :data:`IMAGENET_MEAN`/:data:`IMAGENET_STD`)
is done on the device by the loader (:func:`jaxcnn.data.pipeline.normalize`); the transforms
here return uint8 (H, W, C) arrays.

Random draws come from a ``numpy.random.Generator`` passed in by the caller; the streaming
loader seeds one per record from ``(seed, epoch, record index)``, so every draw is
reproducible and independent of worker count and batch order. :func:`random_resized_crop_params`
mirrors ``torchvision.transforms.RandomResizedCrop.get_params`` line by line, including its
float32 arithmetic (``torch.log`` of the ratio bounds, ``torch.exp`` of the drawn log-ratio).
Only numpy and PIL are imported here (the module runs in the loader's worker processes).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Protocol

import numpy as np

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "EvalTransform",
    "ImageNetEval",
    "ImageNetTrain",
    "center_crop",
    "center_crop_box",
    "random_resized_crop_params",
    "resize_output_size",
    "resize_short_side",
    "to_array",
]

#: torchvision's ImageNet channel statistics (0..1 scale, RGB).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Draws(Protocol):
    """The random numbers a transform needs: ``numpy.random.Generator`` provides both."""

    def uniform(self, low: float, high: float) -> float: ...

    def integers(self, low: int, high: int) -> int: ...


def random_resized_crop_params(
    height: int,
    width: int,
    rng: Draws,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of a random crop, as ``RandomResizedCrop.get_params``.

    Up to 10 tries: area fraction ``s = rng.uniform(*scale)``, log aspect ratio
    ``r = rng.uniform(log ratio[0], log ratio[1])`` (float32, as torch), ``w = round(sqrt(A s
    e^r))``, ``h = round(sqrt(A s / e^r))``; the first try that fits draws ``top =
    rng.integers(0, height - h + 1)``, ``left = rng.integers(0, width - w + 1)``. If none fits,
    the central crop of the whole image clamped to the ratio range (no draw).
    """
    area = height * width
    log_ratio = np.log(np.asarray(ratio, dtype=np.float32))  # torch.log(torch.tensor(ratio))
    for _ in range(10):
        # torch draws float32 numbers (uniform_ on a float32 tensor, then .item())
        target_area = area * float(np.float32(rng.uniform(scale[0], scale[1])))
        log_r = np.float32(rng.uniform(float(log_ratio[0]), float(log_ratio[1])))
        aspect_ratio = float(np.exp(log_r))  # float32 exp, as torch.exp on a float32 tensor
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            i = int(rng.integers(0, height - h + 1))
            j = int(rng.integers(0, width - w + 1))
            return i, j, h, w
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def resize_output_size(height: int, width: int, size: int) -> tuple[int, int]:
    """``(new_h, new_w)`` of torchvision's ``Resize(size)`` with an int ``size``: the short side
    becomes ``size``, the long side ``int(size * long / short)`` (truncated, as torchvision)."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = int(size), int(size * long / short)
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    return new_h, new_w


def center_crop_box(height: int, width: int, crop_h: int, crop_w: int) -> tuple[int, int]:
    """``(top, left)`` of torchvision's ``CenterCrop``: ``int(round((H - h) / 2))`` per axis
    (Python's round: halves to even). The image must be at least the crop's size."""
    return int(round((height - crop_h) / 2.0)), int(round((width - crop_w) / 2.0))


def resize_short_side(img: Any, size: int) -> Any:
    """torchvision ``Resize(size)`` of a PIL image (BILINEAR; unchanged when already that size)."""
    from PIL import Image

    new_h, new_w = resize_output_size(img.height, img.width, size)
    if (new_h, new_w) == (img.height, img.width):
        return img
    return img.resize((new_w, new_h), Image.BILINEAR)


def center_crop(img: Any, size: int) -> Any:
    """torchvision ``CenterCrop(size)`` of a PIL image (zero-padded first when smaller, as
    torchvision: left/top get ``(size - W) // 2``, right/bottom the rest)."""
    from PIL import Image

    if size > img.width or size > img.height:
        pad_w, pad_h = max(size - img.width, 0), max(size - img.height, 0)
        canvas = Image.new(img.mode, (img.width + pad_w, img.height + pad_h), 0)
        canvas.paste(img, (pad_w // 2, pad_h // 2))
        img = canvas
        if img.size == (size, size):
            return img
    top, left = center_crop_box(img.height, img.width, size, size)
    return img.crop((left, top, left + size, top + size))


def to_array(img: Any, channels: int) -> np.ndarray:
    """uint8 (H, W, C) array of a PIL image (C = ``channels``, 1 or 3)."""
    arr = np.asarray(img, dtype=np.uint8)
    return arr.reshape(arr.shape[0], arr.shape[1], channels)


@dataclasses.dataclass(frozen=True)
class ImageNetTrain:
    """``RandomResizedCrop(size, scale, ratio)`` + ``RandomHorizontalFlip(p=0.5 if flip)``.

    Call with a PIL image (already in the wanted mode) and a ``numpy.random.Generator``;
    returns uint8 (size, size, C). Draw order as torchvision: crop box, then one
    ``rng.random()`` for the flip (flipped when below 0.5).
    """

    size: int = 224
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    flip: bool = True

    def __call__(self, img: Any, rng: np.random.Generator) -> np.ndarray:
        from PIL import Image

        i, j, h, w = random_resized_crop_params(img.height, img.width, rng, self.scale, self.ratio)
        out = img.crop((j, i, j + w, i + h)).resize((self.size, self.size), Image.BILINEAR)
        if self.flip and rng.random() < 0.5:
            out = out.transpose(Image.FLIP_LEFT_RIGHT)
        return to_array(out, len(img.getbands()))


@dataclasses.dataclass(frozen=True)
class ImageNetEval:
    """``Resize(resize)`` (short side) + ``CenterCrop(size)``; ``resize=None`` means
    ``round(size / 0.875)`` (256 for 224). Returns uint8 (size, size, C); no randomness."""

    size: int = 224
    resize: int | None = None

    def __call__(self, img: Any, rng: np.random.Generator | None = None) -> np.ndarray:
        resize = self.resize or int(round(self.size / 0.875))
        return to_array(center_crop(resize_short_side(img, resize), self.size), len(img.getbands()))


@dataclasses.dataclass(frozen=True)
class EvalTransform:
    """Plain resize to ``(height, width)`` with PIL BILINEAR, as the in-memory image-folder
    loader does (:func:`jaxcnn.data.image_folder.load_image_folder`); no randomness."""

    height: int
    width: int

    def __call__(self, img: Any, rng: np.random.Generator | None = None) -> np.ndarray:
        from PIL import Image

        if img.size != (self.width, self.height):
            img = img.resize((self.width, self.height), Image.BILINEAR)
        return to_array(img, len(img.getbands()))
