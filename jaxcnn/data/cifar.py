"""CIFAR-10 / CIFAR-100 reader for the published "python version" batches.

CIFAR-10 (https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz) unpacks to
``cifar-10-batches-py/`` holding ``data_batch_1`` ... ``data_batch_5`` (10,000 images each),
``test_batch`` (10,000) and ``batches.meta``. CIFAR-100
(https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz) unpacks to ``cifar-100-python/``
holding ``train`` (50,000), ``test`` (10,000) and ``meta``. Each batch is a pickled dict with
``data``: uint8 (N, 3072) rows in channel-major (C, H, W) order, and ``labels`` (CIFAR-10) or
``fine_labels``/``coarse_labels`` (CIFAR-100).

Pickles are read with a restricted unpickler that only rebuilds plain containers and numpy
arrays, so a tampered file cannot run code. Any of these source layouts is accepted:
the folder holding the batch files, its parent (holding ``cifar-10-batches-py/``), or a folder
holding the unextracted ``cifar-10-python.tar.gz`` (read in place, not extracted).
"""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from jaxcnn.data.arrays import DatasetError

__all__ = [
    "CIFAR100_CLASS_NAMES",
    "CIFAR100_COARSE_CLASS_NAMES",
    "CIFAR10_CLASS_NAMES",
    "CIFAR_SPECS", "CifarSpec", "load_cifar_split", "read_cifar_batch", "write_cifar_batch"]


#: CIFAR-10 class names in label order (as in ``batches.meta``).
CIFAR10_CLASS_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip

#: CIFAR-100 fine class names in label order (alphabetical, as in ``meta``).
CIFAR100_CLASS_NAMES = tuple(
    """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus
    butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab
    crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo
    keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse
    mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy
    porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper
    snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television
    tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm""".split()
)

#: CIFAR-100 coarse (superclass) names in label order.
CIFAR100_COARSE_CLASS_NAMES = tuple(
    """aquatic_mammals fish flowers food_containers fruit_and_vegetables
    household_electrical_devices household_furniture insects large_carnivores
    large_man-made_outdoor_things large_natural_outdoor_scenes large_omnivores_and_herbivores
    medium_mammals non-insect_invertebrates people reptiles small_mammals trees vehicles_1
    vehicles_2""".split()
)


@dataclasses.dataclass(frozen=True)
class CifarSpec:
    """Where the files of one CIFAR variant live and how they are named."""

    name: str
    url: str
    archive: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str
    num_classes: int


CIFAR_SPECS = {
    "cifar10": CifarSpec(
        "cifar10",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "cifar-10-python.tar.gz",
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        "batches.meta",
        "labels",
        "label_names",
        10,
    ),
    "cifar100": CifarSpec(
        "cifar100",
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "cifar-100-python.tar.gz",
        "cifar-100-python",
        ("train",),
        ("test",),
        "meta",
        "fine_labels",
        "fine_label_names",
        100,
    ),
}

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")


def _unpickle(data: bytes, where: str) -> dict[str, Any]:
    try:
        obj = _SafeUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise DatasetError(
            f"{where}: not a readable CIFAR python batch ({type(e).__name__}: {e}); the file is "
            "truncated or corrupt. Delete it and download it again."
        ) from e
    if not isinstance(obj, dict):
        raise DatasetError(f"{where}: expected a pickled dict, got {type(obj).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}


def read_cifar_batch(
    data: bytes, where: str, label_key: str, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Decode one pickled CIFAR batch.

    Args:
      data: the raw bytes of a batch file (e.g. ``data_batch_1``).
      where: file description for error messages.
      label_key: ``"labels"`` (CIFAR-10) or ``"fine_labels"``/``"coarse_labels"`` (CIFAR-100).
      num_classes: labels must lie in ``[0, num_classes)``.

    Returns:
      ``(images, labels)``: uint8 (N, 32, 32, 3) NHWC and int32 (N,).
    """
    d = _unpickle(data, where)
    if "data" not in d or label_key not in d:
        raise DatasetError(
            f"{where}: a CIFAR batch needs keys 'data' and {label_key!r}, found {sorted(d)}"
        )
    raw = np.asarray(d["data"])
    if raw.dtype != np.uint8 or raw.ndim != 2 or raw.shape[1] != 3 * 32 * 32:
        raise DatasetError(
            f"{where}: expected 'data' uint8 of shape (N, 3072) (32x32 RGB, channel-major), "
            f"got {raw.dtype} {raw.shape}"
        )
    labels = np.asarray(d[label_key], dtype=np.int64).reshape(-1)
    if labels.shape[0] != raw.shape[0]:
        raise DatasetError(
            f"{where}: label/image count mismatch: {raw.shape[0]} images, {labels.shape[0]} labels"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DatasetError(f"{where}: labels outside [0, {num_classes})")
    images = raw.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.int32)


def _missing(spec: CifarSpec, source: Path) -> DatasetError:
    return DatasetError(
        f"{spec.name}: could not find the CIFAR python batches under {source}. Expected one of:\n"
        f"  {source / spec.archive}   (the published archive {spec.url}, read without extracting)\n"
        f"  {source / spec.folder}/{{{', '.join(spec.train_files + spec.test_files)}}}\n"
        f"  {source}/{{{', '.join(spec.train_files + spec.test_files)}}}\n"
        "Copy the files there, pass data_dir=<that folder>, or call load_dataset(..., download=True)."
    )


def _read_members(spec: CifarSpec, source: Path, names: tuple[str, ...]) -> dict[str, tuple[bytes, str]]:
    """Return {basename: (bytes, description)} for the wanted files from a folder or archive."""
    for folder in (source, source / spec.folder):
        if all((folder / n).is_file() for n in names):
            return {n: ((folder / n).read_bytes(), str(folder / n)) for n in names}
    archive = source if source.is_file() else source / spec.archive
    if archive.is_file():
        out: dict[str, tuple[bytes, str]] = {}
        try:
            with tarfile.open(archive, "r:*") as tar:
                for member in tar:
                    base = member.name.rsplit("/", 1)[-1]
                    if member.isfile() and base in names and base not in out:
                        f = tar.extractfile(member)
                        assert f is not None
                        out[base] = (f.read(), f"{archive}:{member.name}")
        except (tarfile.TarError, EOFError, OSError) as e:
            raise DatasetError(
                f"{archive}: cannot read the archive ({type(e).__name__}: {e}); it is truncated "
                "or corrupt. Delete it and download it again."
            ) from e
        missing = [n for n in names if n not in out]
        if missing:
            raise DatasetError(f"{archive}: the archive lacks {missing}; expected {spec.url}")
        return out
    raise _missing(spec, source)


def load_cifar_split(
    source: str | os.PathLike, split: str, *, dataset: str = "cifar10", label_mode: str = "fine"
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Read the train or test split of CIFAR-10 / CIFAR-100.

    Args:
      source: a folder holding the batch files, their ``cifar-*-py*`` folder, or the published
        ``.tar.gz`` (or the archive path itself).
      split: ``"train"`` or ``"test"``.
      dataset: ``"cifar10"`` or ``"cifar100"``.
      label_mode: CIFAR-100 only: ``"fine"`` (100 classes) or ``"coarse"`` (20 superclasses).

    Returns:
      ``(images, labels, class_names)``: uint8 (N, 32, 32, 3) NHWC, int32 (N,), and the class
      names from the meta file (the published names when the meta file is absent).

    Raises:
      DatasetError: missing or corrupt files, wrong array shapes, label/image count mismatch.
    """
    spec = CIFAR_SPECS[dataset]
    label_key, names_key, num_classes = spec.label_key, spec.names_key, spec.num_classes
    if dataset == "cifar100" and label_mode == "coarse":
        label_key, names_key, num_classes = "coarse_labels", "coarse_label_names", 20
    elif label_mode not in ("fine", "coarse"):
        raise ValueError(f"label_mode must be 'fine' or 'coarse', got {label_mode!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    files = spec.train_files if split == "train" else spec.test_files
    source = Path(source).expanduser()
    members = _read_members(spec, source, files)
    parts = [read_cifar_batch(*members[n], label_key, num_classes) for n in files]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if dataset == "cifar10":
        class_names = CIFAR10_CLASS_NAMES
    else:
        class_names = CIFAR100_COARSE_CLASS_NAMES if num_classes == 20 else CIFAR100_CLASS_NAMES
    try:
        meta = _read_members(spec, source, (spec.meta_file,))[spec.meta_file]
    except DatasetError:
        meta = None
    if meta is not None:
        d = _unpickle(*meta)
        names = d.get(names_key)
        if names is not None and len(names) == num_classes:
            class_names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    return images, labels, class_names


def write_cifar_batch(
    path: str | os.PathLike,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    label_key: str = "labels",
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a CIFAR-format python batch (for tests and small fixtures).

    Args:
      path: destination file.
      images: uint8 (N, 32, 32, 3) NHWC; stored as (N, 3072) channel-major rows like the
        published files.
      labels: ints of shape (N,), stored as a list under ``label_key``.
      extra: further keys to store (e.g. ``coarse_labels``).
    """
    images = np.asarray(images, dtype=np.uint8)
    data = {
        "batch_label": "jaxcnn fixture",
        "data": np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), -1)),
        label_key: [int(x) for x in labels],
        **(extra or {}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=2)
    return path
