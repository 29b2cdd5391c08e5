"""``load_dataset``: every jaxcnn dataset by name, as seeded train/val/test :class:`ArrayDataset` s.

=================  ==========================================  ===============================
name               source                                      default train / val / test
=================  ==========================================  ===============================
``digits``         scikit-learn's bundled 8x8 digits, 28x28x1  1,257 / 180 / 360
``mnist``          MNIST IDX files                              50,000 / 10,000 / 10,000
``fashion_mnist``  Fashion-MNIST IDX files                      50,000 / 10,000 / 10,000
``cifar10``        CIFAR-10 python batches, 32x32x3             40,000 / 10,000 / 10,000
``cifar100``       CIFAR-100 python batches (fine labels)       40,000 / 10,000 / 10,000
``mnist_t10k``     only MNIST's 10,000 test images              7,000 / 1,000 / 2,000
``image_folder``   ``data_dir/<class>/<image>`` (PIL)           80% / 10% / 10% (see below)
=================  ==========================================  ===============================

Splits are stratified (every split keeps the class proportions, largest-remainder rounding)
and drawn with ``np.random.default_rng`` (PCG64), so they are identical on every machine.
For ``mnist``/``fashion_mnist``/``cifar*`` the test split is the official test set and the
validation split is carved out of the official training set with ``seed``. For ``digits``,
``mnist_t10k`` and a flat ``image_folder`` the test split is carved with a fixed seed (0) that
does not depend on ``seed`` (so test sets stay comparable across runs) and ``seed`` only
reshuffles train/val. ``mean``/``std`` of every returned split are the *training* split's.

Local files (``download=False``, the default, never touches the network): ``data_dir`` or, when
None, ``$JAXCNN_DATA_DIR/<name>`` or ``~/jaxcnn_data/<name>`` (``mnist_t10k`` reads
``.../mnist``):

* mnist, fashion_mnist, mnist_t10k: ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
  ``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz`` (``.gz`` optional; mnist_t10k
  needs only the t10k pair).
* cifar10: ``cifar-10-python.tar.gz`` or its extracted ``cifar-10-batches-py/`` (or the batch
  files themselves); cifar100: ``cifar-100-python.tar.gz`` or ``cifar-100-python/``.

Backends (``backend=``): ``"numpy"`` parses those files directly (fast: about 1 s for MNIST);
``"tfds"`` prepares jaxcnn's TFDS builders (:mod:`jaxcnn.data.tfds_builders`) into
``<data_dir>/tfds`` once (about 30 s for MNIST) and reads them with ``tfds.data_source``;
``"auto"`` uses ``"tfds"`` when ``download=True`` (the TFDS download manager fetches the
published files into ``<data_dir>/downloads``, only if neither local files nor a prepared copy
exist), otherwise ``"numpy"`` when the local files exist, else an already prepared TFDS copy.
Both backends give identical arrays.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from jaxcnn.data.arrays import ArrayDataset, DatasetError, channel_stats, resolve_count
from jaxcnn.data.arrays import stratified_split_indices
from jaxcnn.errors import UnknownNameError

__all__ = ["DEFAULT_VAL_SIZES", "dataset_names", "default_data_dir", "load_dataset"]

#: Default validation sizes (int: examples; float: fraction of the non-test pool).
DEFAULT_VAL_SIZES: dict[str, int | float] = {
    "digits": 180,
    "mnist": 10_000,
    "fashion_mnist": 10_000,
    "cifar10": 10_000,
    "cifar100": 10_000,
    "mnist_t10k": 1_000,
    "image_folder": 0.1,
}
#: Test sizes of the datasets whose test split is carved out (fixed seed 0).
CARVED_TEST_SIZES: dict[str, int | float] = {"digits": 360, "mnist_t10k": 2_000, "image_folder": 0.1}
_TEST_SEED = 0

_MNIST_LIKE = ("mnist", "fashion_mnist")
_BACKENDS = ("auto", "numpy", "tfds")


def dataset_names() -> list[str]:
    """Names accepted by :func:`load_dataset`; the first (``"digits"``) is the default."""
    return ["digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "mnist_t10k", "image_folder"]


def default_data_dir(name: str) -> Path:
    """Default folder of ``name``'s files: ``$JAXCNN_DATA_DIR/<name>`` or ``~/jaxcnn_data/<name>``.

    ``mnist_t10k`` shares MNIST's folder.
    """
    root = os.environ.get("JAXCNN_DATA_DIR") or Path.home() / "jaxcnn_data"
    return Path(root).expanduser() / ("mnist" if name == "mnist_t10k" else name)


def _finish(
    name: str,
    parts: dict[str, tuple[np.ndarray, np.ndarray]],
    num_classes: int,
    class_names: tuple[str, ...] | None,
) -> dict[str, ArrayDataset]:
    mean, std = channel_stats(parts["train"][0])
    return {
        split: ArrayDataset(
            images=np.ascontiguousarray(x), labels=y, num_classes=num_classes,
            name=f"{name}/{split}", class_names=class_names, mean=mean, std=std,
        )  # fmt: skip
        for split, (x, y) in ((s, parts[s]) for s in ("train", "val", "test"))
    }


def _carve_val(
    x: np.ndarray, y: np.ndarray, val_size: int | float | None, default: int | float, seed: int
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    n_val = resolve_count(val_size, len(y), default, "val_size")
    val_idx, train_idx = stratified_split_indices(y, [n_val, len(y) - n_val], seed)
    return (x[train_idx], y[train_idx]), (x[val_idx], y[val_idx])


def _carve_all(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    val_size: int | float | None,
    seed: int,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    n = len(y)
    n_test = resolve_count(None, n, CARVED_TEST_SIZES[name], "test size")
    test_idx, pool_idx = stratified_split_indices(y, [n_test, n - n_test], _TEST_SEED)
    train, val = _carve_val(x[pool_idx], y[pool_idx], val_size, DEFAULT_VAL_SIZES[name], seed)
    return {"train": train, "val": val, "test": (x[test_idx], y[test_idx])}


def _load_digits(name, data_dir, download, val_size, seed, image_size=None, **_):
    from jaxcnn.data.digits import digits_arrays

    x, y = digits_arrays(image_size or 28)
    return _finish("digits", _carve_all("digits", x, y, val_size, seed), 10, None)


def _load_mnist_t10k(name, data_dir, download, val_size, seed, **_):
    from jaxcnn.data.idx import load_mnist_split

    if download:
        raise ValueError(
            "mnist_t10k reads local files only; fetch MNIST with load_dataset('mnist', "
            "download=True) first, or place t10k-images-idx3-ubyte.gz and "
            "t10k-labels-idx1-ubyte.gz in the data folder"
        )
    x, y = load_mnist_split(data_dir, "t10k", dataset="mnist_t10k")
    return _finish("mnist_t10k", _carve_all("mnist_t10k", x, y, val_size, seed), 10, None)


def image_folder_parts(
    data_dir: str | os.PathLike | None,
    val_size: int | float | None,
    seed: int,
    read: Callable[..., tuple[np.ndarray, np.ndarray, tuple[str, ...]]],
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], tuple[str, ...]]:
    """The train/val/test arrangement of an image folder (module docstring), for any reader.

    ``read(folder, class_names=None) -> (x, y, class_names)`` reads one class-per-sub-folder
    tree; ``x`` is indexed along axis 0 (images for the in-memory loader, file paths for the
    streaming one), so both loaders get identical splits. Returns ``({split: (x, y)},
    class_names)``.
    """
    from jaxcnn.data.image_folder import find_classes

    if data_dir is None:
        raise DatasetError(
            "image_folder needs data_dir=<folder with one sub-folder per class> (or with "
            "train/[val/][test/] sub-folders each holding class sub-folders)"
        )
    root = Path(data_dir).expanduser()
    if (root / "train").is_dir() and find_classes(root / "train"):
        x, y, classes = read(root / "train")

        def read_split(sub: str):
            for cand in (sub, *{"val": ("valid", "validation")}.get(sub, ())):
                if (root / cand).is_dir():
                    xi, yi, _ = read(root / cand, class_names=classes)
                    return xi, yi
            return None

        test = read_split("test")
        if test is None:
            n_test = resolve_count(None, len(y), CARVED_TEST_SIZES["image_folder"], "test size")
            test_idx, pool = stratified_split_indices(y, [n_test, len(y) - n_test], _TEST_SEED)
            test, x, y = (x[test_idx], y[test_idx]), x[pool], y[pool]
        val = read_split("val")
        if val is None:
            (x, y), val = _carve_val(x, y, val_size, DEFAULT_VAL_SIZES["image_folder"], seed)
        return {"train": (x, y), "val": val, "test": test}, tuple(classes)
    x, y, classes = read(root)
    return _carve_all("image_folder", x, y, val_size, seed), tuple(classes)


def _load_image_folder(name, data_dir, download, val_size, seed, image_size=None, grayscale=None, **_):
    from jaxcnn.data.image_folder import load_image_folder

    fixed: dict[str, object] = {"image_size": image_size, "grayscale": grayscale}

    def read(folder, class_names=None):
        x, y, classes = load_image_folder(folder, class_names=class_names, **fixed)  # type: ignore[arg-type]
        # the first (training) folder fixes the size and channels of the others
        fixed.update(image_size=x.shape[1:3], grayscale=x.shape[-1] == 1)
        return x, y, classes

    parts, classes = image_folder_parts(data_dir, val_size, seed, read)
    return _finish("image_folder", parts, len(classes), classes)


def _local_files_present(name: str, data_dir: Path) -> bool:
    try:
        if name in _MNIST_LIKE:
            from jaxcnn.data.idx import find_mnist_files

            find_mnist_files(data_dir, "train", name)
            find_mnist_files(data_dir, "t10k", name)
            return True
        from jaxcnn.data.cifar import CIFAR_SPECS

        spec = CIFAR_SPECS[name]
        files = spec.train_files + spec.test_files
        return (data_dir / spec.archive).is_file() or any(
            all((d / f).is_file() for f in files) for d in (data_dir, data_dir / spec.folder)
        )
    except DatasetError:
        return False


def _read_numpy(name: str, data_dir: Path, split: str):
    if name in _MNIST_LIKE:
        from jaxcnn.data.idx import FASHION_MNIST_CLASS_NAMES, load_mnist_split

        x, y = load_mnist_split(data_dir, "train" if split == "train" else "t10k", dataset=name)
        names = FASHION_MNIST_CLASS_NAMES if name == "fashion_mnist" else None
        return x, y, names
    from jaxcnn.data.cifar import load_cifar_split

    return load_cifar_split(data_dir, split, dataset=name)


def _load_published(name, data_dir, download, val_size, seed, backend="auto", **_):
    data_dir = Path(data_dir).expanduser()
    tfds_dir = data_dir / "tfds"
    local = _local_files_present(name, data_dir)
    if backend == "auto":
        if download:
            backend = "tfds"
        elif local:
            backend = "numpy"
        else:
            from jaxcnn.data import tfds_builders as tb

            backend = "tfds" if tb.is_prepared(name, tfds_dir) else "numpy"  # numpy: clear error
    if backend == "numpy":
        if download:
            raise ValueError("download=True needs backend='auto' or 'tfds' (TFDS downloads files)")
        train_x, train_y, names = _read_numpy(name, data_dir, "train")
        test_x, test_y, _ = _read_numpy(name, data_dir, "test")
    else:
        from jaxcnn.data import tfds_builders as tb

        if not tb.is_prepared(name, tfds_dir):
            if not local and not download:
                _read_numpy(name, data_dir, "train")  # raises the DatasetError naming the files
            tb.prepare(
                name, tfds_dir, source_dir=data_dir if local else None, download=download,
                download_dir=data_dir / "downloads",
            )  # fmt: skip
        train_x, train_y = tb.read_split_arrays(name, tfds_dir, "train")
        test_x, test_y = tb.read_split_arrays(name, tfds_dir, "test")
        names = tb.BUILDERS[name].CLASS_NAMES
    num_classes = 100 if name == "cifar100" else 10
    if names is not None and all(n == str(i) for i, n in enumerate(names)):
        names = None
    train, val = _carve_val(train_x, train_y, val_size, DEFAULT_VAL_SIZES[name], seed)
    return _finish(name, {"train": train, "val": val, "test": (test_x, test_y)}, num_classes, names)


_LOADERS: dict[str, Callable[..., dict[str, ArrayDataset]]] = {
    "digits": _load_digits,
    "mnist": _load_published,
    "fashion_mnist": _load_published,
    "cifar10": _load_published,
    "cifar100": _load_published,
    "mnist_t10k": _load_mnist_t10k,
    "image_folder": _load_image_folder,
}


def load_dataset(
    name: str = "digits",
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    val_size: int | float | None = None,
    seed: int = 0,
    backend: str = "auto",
    image_size: int | tuple[int, int] | None = None,
    grayscale: bool | None = None,
) -> dict[str, ArrayDataset]:
    """Load a dataset as ``{'train', 'val', 'test'}`` splits of uint8 NHWC images.

    Args:
      name: one of :func:`dataset_names` (default ``"digits"``, which needs no files).
      data_dir: folder with the dataset's published files (see the module docstring); default
        ``$JAXCNN_DATA_DIR/<name>`` or ``~/jaxcnn_data/<name>``. Required for ``image_folder``;
        ignored by ``digits``.
      download: allow downloading the published files through TFDS's download manager (mnist,
        fashion_mnist, cifar10, cifar100). With ``False`` nothing is ever downloaded.
      val_size: validation examples (int), or a fraction in [0, 1) of the non-test pool;
        ``None`` = the default in :data:`DEFAULT_VAL_SIZES`; ``0`` = an empty val split.
      seed: seed of the train/validation split.
      backend: ``"auto"``, ``"numpy"`` or ``"tfds"`` for the published datasets (module doc).
      image_size: ``digits``: output side (default 28); ``image_folder``: output ``(H, W)`` or
        side (default: the first image's size). Ignored otherwise.
      grayscale: ``image_folder`` only: force 1 (True) or 3 (False) channels; None = auto.

    Returns:
      ``{"train": ArrayDataset, "val": ArrayDataset, "test": ArrayDataset}``; images uint8
      (N, H, W, C), labels int32 (N,), ``mean``/``std`` of the training split on the 0..1 scale.

    Raises:
      DatasetError: files missing or corrupt (the message names the expected files and folder).
      ValueError: unknown name/backend, or a split size that does not fit.
    """
    if name not in _LOADERS:
        raise UnknownNameError("dataset", name, dataset_names())
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    if data_dir is None and name not in ("digits", "image_folder"):
        data_dir = default_data_dir(name)
    return _LOADERS[name](
        name, data_dir, download, val_size, seed, backend=backend, image_size=image_size,
        grayscale=grayscale,
    )  # fmt: skip
