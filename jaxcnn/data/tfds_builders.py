"""jaxcnn's own TFDS builders for MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100 (no TensorFlow).

The builders store raw uint8 images as ``tfds.features.Tensor`` (no PNG encoding, which would
need TensorFlow) in ``array_record`` files, and are read back with ``tfds.data_source`` (numpy
out). They are registered with TFDS under the names in :data:`BUILDER_NAMES`
(``jaxcnn_mnist``, ``jaxcnn_fashion_mnist``, ``jaxcnn_cifar10``, ``jaxcnn_cifar100``) so they
never clash with TFDS's own ``mnist``/``cifar10`` builders.

Source files: with ``source_dir=None`` the builder downloads the published files through the
TFDS download manager (URLs in :mod:`jaxcnn.data.idx` and :mod:`jaxcnn.data.cifar`); with
``source_dir`` set it reads the same published files from that local folder and never touches
the network. Parsing is shared with the plain-numpy readers, so both paths give identical
arrays. Examples keep the order of the source files (``disable_shuffling=True``).

Importing this module imports ``tensorflow_datasets`` (about 1 s); :mod:`jaxcnn.data` imports
it lazily, only when the TFDS path is used.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from jaxcnn.data.arrays import DatasetError
from jaxcnn.data.cifar import (
    CIFAR10_CLASS_NAMES,
    CIFAR100_CLASS_NAMES,
    CIFAR_SPECS,
    load_cifar_split,
)
from jaxcnn.data.idx import (
    FASHION_MNIST_CLASS_NAMES,
    FASHION_MNIST_URLS,
    MNIST_FILES,
    MNIST_URLS,
    find_mnist_files,
    load_mnist_arrays,
)

__all__ = [
    "BUILDER_NAMES",
    "JaxcnnCifar10",
    "JaxcnnCifar100",
    "JaxcnnFashionMnist",
    "JaxcnnMnist",
    "prepare",
    "read_split_arrays",
]


class _RawImageBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared machinery: uint8 ``Tensor`` image + ``ClassLabel`` label, splits train/test."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Raw uint8 tfds.features.Tensor images, array_record files."}
    IMAGE_SHAPE: tuple[int, int, int] = (28, 28, 1)
    CLASS_NAMES: tuple[str, ...] = ()
    HOMEPAGE = ""
    DESCRIPTION = ""

    def __init__(self, *, source_dir: str | os.PathLike | None = None, **kwargs: Any):
        """Args: source_dir: local folder with the published files (None: download them);
        other keyword arguments go to ``tfds.core.GeneratorBasedBuilder`` (``data_dir``,
        ``file_format``, ...)."""
        self._source_dir = None if source_dir is None else Path(source_dir).expanduser()
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=self.IMAGE_SHAPE, dtype=np.uint8),
                    "label": tfds.features.ClassLabel(names=list(self.CLASS_NAMES)),
                }
            ),
            supervised_keys=("image", "label"),
            homepage=self.HOMEPAGE,
            disable_shuffling=True,
        )

    def _read_split(self, dl_manager: Any, split: str) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _split_generators(self, dl_manager: Any) -> dict[str, Any]:
        return {
            "train": self._generate_examples(*self._read_split(dl_manager, "train")),
            "test": self._generate_examples(*self._read_split(dl_manager, "test")),
        }

    def _generate_examples(self, images: np.ndarray, labels: np.ndarray):
        for i in range(images.shape[0]):
            yield i, {"image": images[i], "label": int(labels[i])}


class _MnistLike(_RawImageBuilder, skip_registration=True):
    URLS: dict[str, str] = {}
    DATASET = "mnist"

    def _read_split(self, dl_manager: Any, split: str) -> tuple[np.ndarray, np.ndarray]:
        idx_split = "train" if split == "train" else "t10k"
        if self._source_dir is not None:
            img, lbl = find_mnist_files(self._source_dir, idx_split, self.DATASET)
        else:
            names = MNIST_FILES[idx_split]
            paths = dl_manager.download({n: self.URLS[n] for n in names})
            img, lbl = paths[names[0]], paths[names[1]]
        return load_mnist_arrays(img, lbl, dataset=f"{self.DATASET}/{split}")


class JaxcnnMnist(_MnistLike):
    """MNIST: 60,000 train + 10,000 test 28x28x1 uint8 digits (files from the CVDF mirror)."""

    name = "jaxcnn_mnist"
    URLS = MNIST_URLS
    DATASET = "mnist"
    IMAGE_SHAPE = (28, 28, 1)
    CLASS_NAMES = tuple(str(i) for i in range(10))
    HOMEPAGE = "http://yann.lecun.com/exdb/mnist/"
    DESCRIPTION = "MNIST handwritten digits, raw uint8 NHWC, prepared by jaxcnn."


class JaxcnnFashionMnist(_MnistLike):
    """Fashion-MNIST: 60,000 train + 10,000 test 28x28x1 uint8 clothing images (Zalando)."""

    name = "jaxcnn_fashion_mnist"
    URLS = FASHION_MNIST_URLS
    DATASET = "fashion_mnist"
    IMAGE_SHAPE = (28, 28, 1)
    CLASS_NAMES = FASHION_MNIST_CLASS_NAMES
    HOMEPAGE = "https://github.com/zalandoresearch/fashion-mnist"
    DESCRIPTION = "Fashion-MNIST, raw uint8 NHWC, prepared by jaxcnn."


class _CifarLike(_RawImageBuilder, skip_registration=True):
    DATASET = "cifar10"

    def _read_split(self, dl_manager: Any, split: str) -> tuple[np.ndarray, np.ndarray]:
        spec = CIFAR_SPECS[self.DATASET]
        if self._source_dir is not None:
            source = self._source_dir
        else:
            source = Path(dl_manager.download(spec.url))  # the .tar.gz, read without extracting
        images, labels, _ = load_cifar_split(source, split, dataset=self.DATASET)
        return images, labels


class JaxcnnCifar10(_CifarLike):
    """CIFAR-10: 50,000 train + 10,000 test 32x32x3 uint8 images, 10 classes."""

    name = "jaxcnn_cifar10"
    DATASET = "cifar10"
    IMAGE_SHAPE = (32, 32, 3)
    CLASS_NAMES = CIFAR10_CLASS_NAMES
    HOMEPAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"
    DESCRIPTION = "CIFAR-10 from the python batches, raw uint8 NHWC, prepared by jaxcnn."


class JaxcnnCifar100(_CifarLike):
    """CIFAR-100 (fine labels): 50,000 train + 10,000 test 32x32x3 uint8 images, 100 classes."""

    name = "jaxcnn_cifar100"
    DATASET = "cifar100"
    IMAGE_SHAPE = (32, 32, 3)
    CLASS_NAMES = CIFAR100_CLASS_NAMES
    HOMEPAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"
    DESCRIPTION = "CIFAR-100 (fine labels) from the python batches, raw uint8 NHWC, by jaxcnn."


#: jaxcnn dataset name -> builder class.
BUILDERS: dict[str, type[_RawImageBuilder]] = {
    "mnist": JaxcnnMnist,
    "fashion_mnist": JaxcnnFashionMnist,
    "cifar10": JaxcnnCifar10,
    "cifar100": JaxcnnCifar100,
}
#: jaxcnn dataset name -> registered TFDS name.
BUILDER_NAMES: dict[str, str] = {k: v.name for k, v in BUILDERS.items()}


def is_prepared(dataset: str, tfds_dir: str | os.PathLike) -> bool:
    """Whether ``dataset`` (``"mnist"``, ...) has already been prepared under ``tfds_dir``."""
    cls = BUILDERS[dataset]
    return (Path(tfds_dir) / cls.name / str(cls.VERSION) / "dataset_info.json").is_file()


def prepare(
    dataset: str,
    tfds_dir: str | os.PathLike,
    *,
    source_dir: str | os.PathLike | None = None,
    download: bool = False,
    download_dir: str | os.PathLike | None = None,
) -> Path:
    """Prepare (once) the array_record files of one dataset.

    Args:
      dataset: ``"mnist"``, ``"fashion_mnist"``, ``"cifar10"`` or ``"cifar100"``.
      tfds_dir: TFDS ``data_dir`` receiving ``<builder name>/<version>/``.
      source_dir: local folder with the published files; used when given.
      download: allowed to download the published files when ``source_dir`` is None. With
        ``download=False`` and no ``source_dir`` nothing is attempted and
        :class:`DatasetError` is raised (unless the dataset is already prepared).
      download_dir: where downloads go (default ``<tfds_dir>/downloads``).

    Returns:
      The prepared dataset's folder. An existing preparation is reused as is.
    """
    cls = BUILDERS[dataset]
    tfds_dir = Path(tfds_dir).expanduser()
    if is_prepared(dataset, tfds_dir):
        return tfds_dir / cls.name / str(cls.VERSION)
    if source_dir is None and not download:
        raise DatasetError(
            f"{dataset}: no local source files given and download=False; nothing prepared "
            f"under {tfds_dir}"
        )
    tfds_dir.mkdir(parents=True, exist_ok=True)
    # Constructing a builder for a not-yet-prepared dataset makes an empty tmp*tfds folder in
    # the temp dir (DatasetInfo.initialize_from_bucket); remove the ones this call created.
    before = set(Path(tempfile.gettempdir()).glob("tmp*tfds"))
    try:
        builder = cls(data_dir=os.fspath(tfds_dir), source_dir=source_dir, file_format="array_record")
        builder.download_and_prepare(
            download_dir=os.fspath(download_dir or tfds_dir / "downloads"),
            download_config=tfds.download.DownloadConfig(try_download_gcs=False),
            file_format="array_record",
        )
    finally:
        _remove_new_empty_tmp_dirs(before)
        if source_dir is not None and download_dir is None:
            for d in (tfds_dir / "downloads" / "extracted", tfds_dir / "downloads"):
                try:
                    d.rmdir()  # only succeeds when empty
                except OSError:
                    pass
    return Path(builder.data_dir)


def _remove_new_empty_tmp_dirs(before: set[Path]) -> None:
    """Remove empty ``tmp*tfds`` folders that appeared in the temp dir since ``before``."""
    for d in set(Path(tempfile.gettempdir()).glob("tmp*tfds")) - before:
        try:
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        except OSError:
            pass


def read_split_arrays(dataset: str, tfds_dir: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read a prepared split back with ``tfds.data_source``.

    Args:
      dataset: jaxcnn dataset name (``"mnist"``, ...).
      tfds_dir: the TFDS ``data_dir`` given to :func:`prepare`.
      split: ``"train"`` or ``"test"``.

    Returns:
      ``(images, labels)``: uint8 (N, H, W, C) NHWC and int32 (N,), in source-file order.
    """
    name = BUILDER_NAMES[dataset]
    source = tfds.data_source(name, split=split, data_dir=os.fspath(tfds_dir), download=False)
    n = len(source)
    shape = BUILDERS[dataset].IMAGE_SHAPE
    images = np.empty((n, *shape), dtype=np.uint8)
    labels = np.empty((n,), dtype=np.int32)
    chunk = 4096
    for start in range(0, n, chunk):
        items = source.__getitems__(list(range(start, min(n, start + chunk))))
        for j, ex in enumerate(items):
            images[start + j] = ex["image"]
            labels[start + j] = ex["label"]
    return images, labels


def clear_prepared(dataset: str, tfds_dir: str | os.PathLike) -> None:
    """Delete a prepared dataset (e.g. after replacing the source files)."""
    cls = BUILDERS[dataset]
    shutil.rmtree(Path(tfds_dir) / cls.name, ignore_errors=True)
