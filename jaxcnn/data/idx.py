"""IDX file reader/writer for MNIST and Fashion-MNIST (the published ``*-ubyte[.gz]`` files).

IDX layout (big-endian): two zero bytes, a dtype code, the number of dimensions ``ndim``, then
``ndim`` uint32 sizes, then the data in C order. MNIST image files have magic 2051
(``0x00000803``: uint8, 3 dims) and label files magic 2049 (``0x00000801``: uint8, 1 dim).
Both the gzip-compressed (``.gz``) and the uncompressed files are accepted.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from jaxcnn.data.arrays import DatasetError

__all__ = [
    "FASHION_MNIST_CLASS_NAMES",
    "FASHION_MNIST_URLS",
    "IMAGES_MAGIC",
    "LABELS_MAGIC",
    "MNIST_FILES",
    "MNIST_URLS",
    "find_mnist_files",
    "load_mnist_arrays",
    "load_mnist_split",
    "read_idx",
    "write_idx",
]

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049

#: File names of the published MNIST / Fashion-MNIST files per split ("train" or "t10k").
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "t10k": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

#: Published MNIST files (Google's CVDF mirror of Yann LeCun's files).
MNIST_URLS = {
    fname: f"https://storage.googleapis.com/cvdf-datasets/mnist/{fname}"
    for pair in MNIST_FILES.values()
    for fname in pair
}

#: Published Fashion-MNIST files (Zalando Research's GitHub repository).
FASHION_MNIST_URLS = {
    fname: f"https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/{fname}"
    for pair in MNIST_FILES.values()
    for fname in pair
}

FASHION_MNIST_CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {np.dtype(v).newbyteorder("="): k for k, v in _DTYPES.items()}


def _read_bytes(path: Path) -> bytes:
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except FileNotFoundError as e:
        raise DatasetError(f"IDX file not found: {path}") from e
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as e:
        raise DatasetError(
            f"could not read {path} ({type(e).__name__}: {e}); the file is probably truncated "
            "or corrupt. Delete it and download it again."
        ) from e


def read_idx(path: str | os.PathLike, *, expected_magic: int | None = None) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed) into a numpy array.

    Args:
      path: ``*.gz`` (gzip) or an uncompressed IDX file.
      expected_magic: when given, the 32-bit magic number the file must carry (2051 for MNIST
        images, 2049 for labels).

    Returns:
      An array of the stored shape, in native byte order (uint8 for MNIST files).

    Raises:
      DatasetError: missing file, bad magic / dtype code, or a payload shorter or longer than
        the header promises.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DatasetError(f"{path}: {len(data)} bytes is too short for an IDX header (truncated)")
    (magic,) = struct.unpack(">I", data[:4])
    zero, code, ndim = magic >> 16, (magic >> 8) & 0xFF, magic & 0xFF
    if expected_magic is not None and magic != expected_magic:
        raise DatasetError(
            f"{path}: bad IDX magic number {magic} (0x{magic:08x}); expected {expected_magic} "
            f"(0x{expected_magic:08x}). Is this the right file, and is it uncompressed or named *.gz?"
        )
    if zero != 0 or code not in _DTYPES:
        raise DatasetError(f"{path}: bad IDX magic number {magic} (0x{magic:08x}); not an IDX file")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{path}: truncated IDX header ({len(data)} bytes, need {header})")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    got = len(data) - header
    if got != expected:
        kind = "truncated" if got < expected else "has trailing bytes"
        raise DatasetError(
            f"{path}: IDX file {kind}: header says shape {tuple(shape)} ({expected} data bytes) "
            f"but the file holds {got} data bytes"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file (gzip-compressed when ``path`` ends in ``.gz``).

    Args:
      path: destination.
      array: uint8/int8/int16/int32/float32/float64 array of any shape (at most 255 dims).
        MNIST images are (N, 28, 28) uint8 (magic 2051), labels (N,) uint8 (magic 2049).

    Returns:
      The path written.
    """
    path = Path(path)
    array = np.asarray(array)
    code = _CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        raise TypeError(f"IDX cannot store dtype {array.dtype}")
    header = struct.pack(">I", (code << 8) | array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    payload = header + np.ascontiguousarray(array, dtype=_DTYPES[code]).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
            f.write(payload)
    else:
        path.write_bytes(payload)
    return path


def _missing_message(directory: Path, dataset: str, names: tuple[str, ...]) -> str:
    urls = FASHION_MNIST_URLS if dataset == "fashion_mnist" else MNIST_URLS
    listing = "\n".join(f"  {directory / n}   (from {urls[n]})" for n in names)
    return (
        f"{dataset}: expected the published IDX files in {directory}:\n{listing}\n"
        "(gzip-compressed or not, i.e. with or without the .gz suffix). Copy them there or pass "
        "data_dir=<folder holding them>"
        + ("." if dataset == "mnist_t10k" else ", or call load_dataset(..., download=True).")
    )


def find_mnist_files(directory: str | os.PathLike, split: str, dataset: str = "mnist") -> tuple[Path, Path]:
    """Locate the images and labels IDX files of one split.

    Args:
      directory: folder holding the published files.
      split: ``"train"`` or ``"t10k"``.
      dataset: ``"mnist"`` or ``"fashion_mnist"`` (only used in messages).

    Returns:
      ``(images_path, labels_path)``; each is the ``.gz`` file if present, else the
      uncompressed one.

    Raises:
      DatasetError: the folder or a file is missing; the message lists the expected files and
        where to get them.
    """
    directory = Path(directory).expanduser()
    names = MNIST_FILES[split]
    found = []
    for gz in names:
        for cand in (directory / gz, directory / gz[: -len(".gz")]):
            if cand.is_file():
                found.append(cand)
                break
        else:
            raise DatasetError(
                f"{dataset}: missing {gz} (or {gz[:-3]})"
                + ("" if directory.is_dir() else f"; the folder {directory} does not exist")
                + ".\n"
                + _missing_message(
                    directory,
                    dataset,
                    names if dataset == "mnist_t10k" else MNIST_FILES["train"] + MNIST_FILES["t10k"],
                )
            )
    return found[0], found[1]


def load_mnist_split(
    directory: str | os.PathLike,
    split: str,
    *,
    dataset: str = "mnist",
    image_shape: tuple[int, int] = (28, 28),
    num_classes: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """Read one split of MNIST-format IDX files from a folder.

    Args:
      directory: folder holding ``{split}-images-idx3-ubyte[.gz]`` and
        ``{split}-labels-idx1-ubyte[.gz]``.
      split: ``"train"`` or ``"t10k"``.
      dataset: name used in error messages.
      image_shape: required (H, W).
      num_classes: labels must lie in ``[0, num_classes)``.

    Returns:
      ``(images, labels)``: uint8 (N, H, W, 1) NHWC and int32 (N,).

    Raises:
      DatasetError: missing files, bad magic, truncated files, wrong image size, label/image
        count mismatch or out-of-range labels.
    """
    img_path, lbl_path = find_mnist_files(directory, split, dataset)
    return load_mnist_arrays(
        img_path, lbl_path, dataset=f"{dataset}/{split}", image_shape=image_shape,
        num_classes=num_classes,
    )  # fmt: skip


def load_mnist_arrays(
    images_path: str | os.PathLike,
    labels_path: str | os.PathLike,
    *,
    dataset: str = "mnist",
    image_shape: tuple[int, int] = (28, 28),
    num_classes: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """Read and validate an MNIST-format (images, labels) pair of IDX files given by path.

    Returns:
      ``(images, labels)``: uint8 (N, H, W, 1) NHWC and int32 (N,). Raises
      :class:`DatasetError` like :func:`load_mnist_split`.
    """
    img_path, lbl_path = Path(images_path), Path(labels_path)
    images = read_idx(img_path, expected_magic=IMAGES_MAGIC)
    labels = read_idx(lbl_path, expected_magic=LABELS_MAGIC)
    if tuple(images.shape[1:]) != tuple(image_shape):
        raise DatasetError(
            f"{img_path}: expected {image_shape[0]}x{image_shape[1]} images, got shape "
            f"{tuple(images.shape[1:])}"
        )
    if labels.shape[0] != images.shape[0]:
        raise DatasetError(
            f"{dataset}: label/image count mismatch: {img_path.name} holds "
            f"{images.shape[0]} images but {lbl_path.name} holds {labels.shape[0]} labels"
        )
    if labels.size and int(labels.max()) >= num_classes:
        raise DatasetError(f"{lbl_path}: label {int(labels.max())} outside [0, {num_classes})")
    return np.ascontiguousarray(images[..., None]), labels.astype(np.int32)
