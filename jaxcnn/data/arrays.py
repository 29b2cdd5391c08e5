"""In-memory image datasets (:class:`ArrayDataset`), the data error type and seeded splitting.

Every dataset in :mod:`jaxcnn.data` ends up as an :class:`ArrayDataset`: a uint8 NHWC image
array plus int32 labels held in host (numpy) memory. Splitting helpers here are pure numpy
with ``np.random.default_rng`` (PCG64), so a given seed yields the same split on any machine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

__all__ = [
    "ArrayDataset",
    "DatasetError",
    "channel_stats",
    "resolve_count",
    "split_dataset",
    "stratified_split_indices",
]


class DatasetError(ValueError):
    """A dataset is missing, corrupt or inconsistent.

    The message always says what was expected, what was found and where the files should be
    placed (or how to obtain them).
    """


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and standard deviation of uint8 NHWC images, on the 0..1 scale.

    Args:
      images: uint8 array of shape (N, H, W, C).

    Returns:
      ``(mean, std)``, each a tuple of C Python floats computed as if the images were divided by
      255 (the torchvision convention, e.g. MNIST gives roughly (0.1307,), (0.3081,)). Computed
      from per-channel 256-bin histograms, so it is exact and uses O(1) extra memory. An empty
      array gives mean 0 and std 1 per channel.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise TypeError(f"expected uint8 (N, H, W, C) images, got {images.dtype} {images.shape}")
    channels = images.shape[-1]
    if images.shape[0] == 0 or images.size == 0:
        return (0.0,) * channels, (1.0,) * channels
    levels = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    for c in range(channels):
        counts = np.bincount(images[..., c].reshape(-1), minlength=256).astype(np.float64)
        total = counts.sum()
        mean = float((counts * levels).sum() / total)
        var = float((counts * (levels - mean) ** 2).sum() / total)
        means.append(mean)
        stds.append(max(var, 0.0) ** 0.5 or 1.0)  # a constant channel normalises by 1, not 0
    return tuple(means), tuple(stds)


@dataclasses.dataclass(frozen=True, eq=False)
class ArrayDataset:
    """An image-classification split held in host memory.

    Attributes:
      images: uint8 array of shape (N, H, W, C), NHWC, values 0..255.
      labels: int32 array of shape (N,), values in ``[0, num_classes)``.
      num_classes: number of classes (may exceed the number of classes present in a small split).
      name: dataset name plus split, e.g. ``"mnist/train"``.
      class_names: ``num_classes`` human-readable class names (default ``"0"``, ``"1"``, ...).
      mean: per-channel mean on the 0..1 scale (length C) used by
        :func:`jaxcnn.data.pipeline.normalize`. ``load_dataset`` sets it to the *training* split's
        statistics for every split; when left as ``None`` it is computed from ``images``.
      std: per-channel standard deviation on the 0..1 scale (length C); same rules as ``mean``.

    Construction validates dtypes, shapes and the label range and raises :class:`DatasetError`
    on a mismatch. Arrays are not copied; treat them as read-only.
    """

    images: np.ndarray
    labels: np.ndarray
    num_classes: int
    name: str
    class_names: tuple[str, ...] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        images = np.asarray(self.images)
        labels = np.asarray(self.labels)
        if images.dtype != np.uint8 or images.ndim != 4:
            raise DatasetError(
                f"{self.name}: images must be uint8 with shape (N, H, W, C), "
                f"got {images.dtype} with shape {images.shape}"
            )
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise DatasetError(
                f"{self.name}: labels must be a 1-D integer array, got {labels.dtype} {labels.shape}"
            )
        if labels.shape[0] != images.shape[0]:
            raise DatasetError(
                f"{self.name}: {images.shape[0]} images but {labels.shape[0]} labels; "
                "the counts must match"
            )
        num_classes = int(self.num_classes)
        if num_classes < 1:
            raise DatasetError(f"{self.name}: num_classes must be >= 1, got {num_classes}")
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise DatasetError(
                f"{self.name}: labels must lie in [0, {num_classes}), "
                f"found range [{labels.min()}, {labels.max()}]"
            )
        labels = labels.astype(np.int32, copy=False)
        class_names = self.class_names
        if class_names is None:
            class_names = tuple(str(i) for i in range(num_classes))
        class_names = tuple(str(c) for c in class_names)
        if len(class_names) != num_classes:
            raise DatasetError(
                f"{self.name}: {len(class_names)} class names for {num_classes} classes"
            )
        mean, std = self.mean, self.std
        if mean is None or std is None:
            auto_mean, auto_std = channel_stats(images)
            mean = auto_mean if mean is None else mean
            std = auto_std if std is None else std
        mean = tuple(float(m) for m in mean)
        std = tuple(float(s) for s in std)
        if len(mean) != images.shape[-1] or len(std) != images.shape[-1]:
            raise DatasetError(
                f"{self.name}: mean/std need one value per channel ({images.shape[-1]}), "
                f"got {len(mean)}/{len(std)}"
            )
        object.__setattr__(self, "images", images)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "num_classes", num_classes)
        object.__setattr__(self, "class_names", class_names)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        return (
            f"ArrayDataset(name={self.name!r}, images={self.images.dtype}{list(self.images.shape)}, "
            f"num_classes={self.num_classes})"
        )

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)`` of one image."""
        return tuple(int(d) for d in self.images.shape[1:])  # type: ignore[return-value]

    def class_counts(self) -> np.ndarray:
        """int64 array of shape (num_classes,): how many examples carry each label."""
        return np.bincount(self.labels, minlength=self.num_classes)

    def subset(self, indices: np.ndarray | Sequence[int], name: str | None = None) -> ArrayDataset:
        """A new dataset with ``images[indices]``, ``labels[indices]`` (copies), same metadata.

        ``mean``/``std`` are carried over unchanged (they describe the training statistics).
        """
        idx = np.asarray(indices, dtype=np.int64)
        return dataclasses.replace(
            self,
            images=np.ascontiguousarray(self.images[idx]),
            labels=self.labels[idx],
            name=self.name if name is None else name,
        )


def resolve_count(size: int | float | None, total: int, default: int | float, what: str) -> int:
    """Turn a split size given as a count or a fraction into a count.

    Args:
      size: ``None`` (use ``default``), an int count, or a float fraction in [0, 1) of ``total``
        (rounded half up).
      total: number of examples the split is carved from.
      default: used when ``size`` is None; same forms as ``size``.
      what: name used in error messages, e.g. ``"val_size"``.

    Returns:
      An int in ``[0, total]``. Raises ``ValueError`` when out of range.
    """
    if size is None:
        size = default
    if isinstance(size, bool):
        raise ValueError(f"{what} must be an int or a float, got {size!r}")
    if isinstance(size, (float, np.floating)):
        if not 0.0 <= float(size) < 1.0:
            raise ValueError(f"{what} as a fraction must be in [0, 1), got {size}")
        count = int(np.floor(float(size) * total + 0.5))  # round half up
    else:
        count = int(size)
    if not 0 <= count <= total:
        raise ValueError(f"{what}={count} is outside [0, {total}] (the pool has {total} examples)")
    return count


def stratified_split_indices(
    labels: np.ndarray, sizes: Sequence[int], seed: int, *, stratify: bool = True
) -> list[np.ndarray]:
    """Split ``range(len(labels))`` into disjoint index sets of the given sizes.

    Args:
      labels: int array of shape (N,).
      sizes: the size of each part; must sum to at most N (any rest is dropped, so pass
        ``[n_a, N - n_a]`` for an exhaustive split).
      seed: seed for ``np.random.default_rng`` (PCG64; identical on every machine).
      stratify: when True each part gets (as nearly as integers allow, by the largest-remainder
        method) the same class proportions as ``labels``; otherwise a plain random permutation.

    Returns:
      One int64 index array per part, each in random (seeded) order.
    """
    labels = np.asarray(labels)
    n = labels.shape[0]
    sizes = [int(s) for s in sizes]
    if any(s < 0 for s in sizes) or sum(sizes) > n:
        raise ValueError(f"split sizes {sizes} do not fit {n} examples")
    rng = np.random.default_rng(seed)
    if not stratify or n == 0:
        perm = rng.permutation(n)
        bounds = np.cumsum([0, *sizes])
        return [perm[bounds[i] : bounds[i + 1]].astype(np.int64) for i in range(len(sizes))]

    classes, inverse = np.unique(labels, return_inverse=True)
    per_class = [np.flatnonzero(inverse == k) for k in range(len(classes))]
    per_class = [rng.permutation(ix) for ix in per_class]
    class_sizes = np.array([len(ix) for ix in per_class], dtype=np.int64)
    remaining = class_sizes.copy()
    parts: list[list[np.ndarray]] = [[] for _ in sizes]
    offsets = np.zeros(len(classes), dtype=np.int64)
    for p, size in enumerate(sizes):
        # Quota of each class in this part: proportional to what is left, largest remainder.
        left = int(remaining.sum())
        if size == 0 or left == 0:
            alloc = np.zeros(len(classes), dtype=np.int64)
        else:
            exact = remaining * (size / left)
            alloc = np.floor(exact).astype(np.int64)
            short = size - int(alloc.sum())
            if short > 0:
                frac = exact - alloc
                frac[alloc >= remaining] = -1.0  # classes that are exhausted get nothing more
                order = np.lexsort((np.arange(len(classes)), -frac))  # stable tie-break
                alloc[order[:short]] += 1
        for k in range(len(classes)):
            parts[p].append(per_class[k][offsets[k] : offsets[k] + alloc[k]])
        offsets += alloc
        remaining -= alloc
    out = []
    for p in parts:
        idx = np.concatenate(p) if p else np.zeros(0, dtype=np.int64)
        out.append(rng.permutation(idx).astype(np.int64))
    return out


def split_dataset(
    ds: ArrayDataset,
    sizes: dict[str, int],
    seed: int,
    *,
    base_name: str,
    stratify: bool = True,
) -> dict[str, ArrayDataset]:
    """Split one :class:`ArrayDataset` into named parts (see :func:`stratified_split_indices`).

    Args:
      ds: the dataset to split.
      sizes: ordered mapping part name -> size; the sizes must sum to ``len(ds)``.
      seed: split seed.
      base_name: parts are named ``f"{base_name}/{part}"``.
      stratify: keep class proportions in every part.

    Returns:
      ``{part: ArrayDataset}`` in the order of ``sizes``; metadata (mean/std, class names) is
      copied from ``ds``.
    """
    if sum(sizes.values()) != len(ds):
        raise ValueError(f"split sizes {dict(sizes)} must sum to {len(ds)}")
    idx = stratified_split_indices(ds.labels, list(sizes.values()), seed, stratify=stratify)
    return {k: ds.subset(ix, name=f"{base_name}/{k}") for k, ix in zip(sizes, idx)}
