"""torchvision-``ImageFolder``-style datasets: one sub-folder per class, images read with PIL.

Layout::

    root/
      cat/  001.png  002.jpg ...
      dog/  a.png ...

Classes are the sub-folder names sorted by name (class index = position in that order, as in
torchvision). Files are found recursively under each class folder and read in sorted path
order. Images are converted to RGB (3 channels) or to grey-level ``L`` (1 channel) and resized
to one common size with PIL ``Image.BILINEAR`` (PIL's bilinear filter is antialiased when
shrinking).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from jaxcnn.data.arrays import DatasetError

__all__ = ["IMG_EXTENSIONS", "find_classes", "list_image_folder", "load_image_folder"]

#: File suffixes (lower-case) treated as images, as in torchvision.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


def find_classes(root: str | os.PathLike) -> list[str]:
    """Sorted names of the (non-hidden) sub-folders of ``root``; raises :class:`DatasetError`."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(
            f"image_folder: {root} does not exist or is not a folder. Expected one sub-folder per "
            "class holding that class's images, e.g. root/cat/1.png, root/dog/2.png."
        )
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DatasetError(
            f"image_folder: {root} has no class sub-folders. Expected one sub-folder per class "
            "holding that class's images, e.g. root/cat/1.png, root/dog/2.png."
        )
    return classes


def _list_images(folder: Path) -> list[Path]:
    files = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if not f.startswith(".") and f.lower().endswith(IMG_EXTENSIONS):
                files.append(Path(dirpath) / f)
    return files


def list_image_folder(
    root: str | os.PathLike, *, class_names: list[str] | tuple[str, ...] | None = None
) -> tuple[list[Path], np.ndarray, tuple[str, ...]]:
    """The image files below ``root`` and their labels, without opening any image.

    Args:
      root: folder with one sub-folder per class.
      class_names: use this class list instead of the sorted sub-folders of ``root`` (see
        :func:`load_image_folder`).

    Returns:
      ``(paths, labels, class_names)``: file paths in class order then sorted path order,
      int32 (N,) labels, class names in label order.

    Raises:
      DatasetError: missing folder, no classes, a class without images, or a sub-folder
        missing from ``class_names``.
    """
    root = Path(root).expanduser()
    found = find_classes(root)
    if class_names is None:
        class_names = found
    class_names = tuple(class_names)
    unknown = sorted(set(found) - set(class_names))
    if unknown:
        raise DatasetError(f"image_folder: {root} has class folders {unknown} not in {class_names}")
    paths: list[Path] = []
    labels: list[int] = []
    for label, cname in enumerate(class_names):
        if cname not in found:
            continue
        files = _list_images(root / cname)
        if not files:
            raise DatasetError(
                f"image_folder: class folder {root / cname} holds no images with a suffix in "
                f"{IMG_EXTENSIONS}"
            )
        paths.extend(files)
        labels.extend([label] * len(files))
    return paths, np.array(labels, dtype=np.int32), class_names


def load_image_folder(
    root: str | os.PathLike,
    *,
    image_size: int | tuple[int, int] | None = None,
    grayscale: bool | None = None,
    class_names: list[str] | tuple[str, ...] | None = None,
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Read every image below ``root`` into one uint8 NHWC array.

    Args:
      root: folder with one sub-folder per class.
      image_size: output ``(H, W)`` (an int means square). ``None``: the size of the first image
        (in sorted order); images of other sizes are resized to it.
      grayscale: ``True``: 1 channel (PIL mode ``L``); ``False``: 3 channels (RGB, alpha dropped);
        ``None``: 1 channel when every image is grey-level, else RGB.
      class_names: use this class list (e.g. the training folder's) instead of the sorted
        sub-folders of ``root``; every sub-folder of ``root`` must be in it.

    Returns:
      ``(images, labels, class_names)``: uint8 (N, H, W, C), int32 (N,), class names in label
      order.

    Raises:
      DatasetError: missing folder, no classes, a class without images, an unreadable image,
        or a sub-folder missing from ``class_names``.
    """
    from PIL import Image, UnidentifiedImageError

    paths, labels, class_names = list_image_folder(root, class_names=class_names)
    entries = list(zip(paths, labels.tolist()))

    # Pass 1 reads headers only (mode and size); pass 2 decodes straight into the output array.
    headers = []
    for path, _ in entries:
        try:
            with Image.open(path) as im:
                headers.append((im.mode, im.size))
        except (UnidentifiedImageError, OSError) as e:
            raise DatasetError(f"image_folder: cannot read image {path}: {e}") from e
    if grayscale is None:
        grayscale = all(m in _GREY_MODES for m, _ in headers)
    mode = "L" if grayscale else "RGB"
    if image_size is None:
        w0, h0 = headers[0][1]
        size_hw = (h0, w0)
    elif isinstance(image_size, int):
        size_hw = (image_size, image_size)
    else:
        size_hw = (int(image_size[0]), int(image_size[1]))
    channels = 1 if grayscale else 3
    out = np.empty((len(entries), size_hw[0], size_hw[1], channels), dtype=np.uint8)
    for i, (path, _) in enumerate(entries):
        try:
            with Image.open(path) as im:
                im = im.convert(mode)
                if im.size != (size_hw[1], size_hw[0]):
                    im = im.resize((size_hw[1], size_hw[0]), Image.BILINEAR)
                out[i] = np.asarray(im, dtype=np.uint8).reshape(size_hw[0], size_hw[1], channels)
        except (UnidentifiedImageError, OSError) as e:
            raise DatasetError(f"image_folder: cannot read image {path}: {e}") from e
    return out, labels, class_names
