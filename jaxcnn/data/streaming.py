"""Streaming input pipeline on ``grain``: image folders and TFDS data sources read lazily.

For datasets that do not fit in memory (:class:`~jaxcnn.data.pipeline.DeviceLoader` holds
the whole uint8 dataset on the device). A :class:`StreamSplit` lists the records of one split
(file paths of an image folder, or record indices of a ``tfds.data_source``/ArrayRecord
dataset) and nothing else; :class:`StreamingLoader` turns it into batches:

* a ``grain.MapDataset`` whose element ``g`` is global batch ``g`` (epoch ``g // len``, step
  ``g % len``): its records are ``perm(seed, epoch)[step * B : (step + 1) * B]`` (a numpy
  PCG64 permutation per epoch), each decoded with PIL and transformed (:mod:`.transforms`)
  with a ``numpy.random.Generator`` seeded by ``(seed, epoch, record index)``; so a batch is a
  pure function of ``(seed, epoch, step)``, whatever the number of workers;
* ``to_iter_dataset(ReadOptions)`` + ``mp_prefetch(MultiprocessingOptions)``: ``workers``
  processes build whole batches (uint8 NHWC + int32 labels) ahead of the consumer;
* on the host, up to ``prefetch`` batches are put on the device ahead of the one consumed
  (``jax.device_put`` onto the batch sharding; with several JAX processes each reads only its
  contiguous slice of every global batch and the global array is assembled with
  ``jax.make_array_from_process_local_data``), then normalised (and, with ``augment=True``,
  padded-crop + flip augmented exactly like ``DeviceLoader``) in one jitted function.

Host memory is bounded by the queue depths, not by the dataset: at most
``workers * (threads + 3 * buffer) + prefetch + 1`` batches exist at once (per worker: the
batches being built, its read-ahead buffer, the inter-process queue and grain's interleave
buffer in this process), plus the record index (a few dozen bytes per file). The iterator's state (``grain``'s ``get_state()`` and the
batch position) is JSON (:meth:`StreamingLoader.state_dict`), stored in the checkpoint's
metadata, so a resumed run continues with exactly the batches an uninterrupted run sees.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.data.arrays import ArrayDataset, DatasetError
from jaxcnn.data.pipeline import DeviceLoader, EpochPosition, _default_augment_fn, _num_shards, normalize
from jaxcnn.data.transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform, ImageNetEval, ImageNetTrain

__all__ = [
    "ImageFolderRecords",
    "StreamSplit",
    "StreamingLoader",
    "TfdsRecords",
    "choose_loader",
    "estimate_decoded_bytes",
    "image_folder_summary",
    "make_loader",
    "open_image_folder_splits",
    "open_tfds_split",
]

_GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
_NEVER = 10**9  # epochs of the (lazy) global-batch range; only its length depends on it


# --------------------------------------------------------------------------------- records
class ImageFolderRecords:
    """Random access to image files: ``read(i) -> (PIL image, label)``; picklable and small.

    The paths are kept relative to ``root`` in one byte buffer plus offsets (tens of bytes
    per file), the only per-record memory of the streaming pipeline.
    """

    def __init__(self, root: str | os.PathLike, paths: Sequence[str | os.PathLike], labels: np.ndarray):
        self.root = str(Path(root).expanduser())
        prefix = os.path.join(self.root, "")
        rel = [(p[len(prefix):] if p.startswith(prefix) else os.path.relpath(p, self.root)).encode()
               for p in map(str, paths)]  # fmt: skip
        self._blob = np.frombuffer(b"".join(rel), dtype=np.uint8).copy()
        self._offsets = np.cumsum([0] + [len(r) for r in rel]).astype(np.int64)
        self.labels = np.asarray(labels, dtype=np.int32)
        if len(self.labels) != len(rel):
            raise ValueError(f"{len(rel)} paths but {len(self.labels)} labels")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def path(self, i: int) -> str:
        a, b = self._offsets[i], self._offsets[i + 1]
        return os.path.join(self.root, self._blob[a:b].tobytes().decode())

    def subset(self, indices: np.ndarray) -> ImageFolderRecords:
        idx = np.asarray(indices, dtype=np.int64)
        return ImageFolderRecords(self.root, [self.path(int(i)) for i in idx], self.labels[idx])

    def read(self, i: int) -> tuple[Any, int]:
        from PIL import Image

        path = self.path(int(i))
        try:
            img = Image.open(path)
            img.load()
        except OSError as e:
            raise DatasetError(f"image_folder: cannot read image {path}: {e}") from e
        return img, int(self.labels[i])


class TfdsRecords:
    """Random access to a ``tfds.data_source`` split (ArrayRecord files, no TensorFlow):
    ``read(i) -> (PIL image, label)`` from the record's ``image`` (uint8 HWC) and ``label``.
    The data source is opened lazily in each process that reads (it is not pickled)."""

    def __init__(self, name: str, split: str, data_dir: str | os.PathLike | None, indices: np.ndarray | None = None,
                 image_key: str = "image", label_key: str = "label"):  # fmt: skip
        self.name, self.split = name, split
        self.data_dir = None if data_dir is None else str(data_dir)
        self.image_key, self.label_key = image_key, label_key
        self._source = None
        n = len(self._open())
        self.indices = np.arange(n, dtype=np.int64) if indices is None else np.asarray(indices, np.int64)

    def _open(self):
        if self._source is None:
            import tensorflow_datasets as tfds

            self._source = tfds.data_source(self.name, split=self.split, data_dir=self.data_dir, download=False)
        return self._source

    def __getstate__(self):
        return {**self.__dict__, "_source": None}

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    @property
    def labels(self) -> np.ndarray:
        src = self._open()
        return np.array([int(src[int(i)][self.label_key]) for i in self.indices], dtype=np.int32)

    def subset(self, indices: np.ndarray) -> TfdsRecords:
        out = TfdsRecords.__new__(TfdsRecords)
        out.__dict__.update(self.__getstate__())
        out.indices = self.indices[np.asarray(indices, np.int64)]
        return out

    def read(self, i: int) -> tuple[Any, int]:
        from PIL import Image

        record = self._open()[int(self.indices[i])]
        image = np.asarray(record[self.image_key], dtype=np.uint8)
        if image.ndim == 3 and image.shape[-1] == 1:
            image = image[..., 0]
        return Image.fromarray(image), int(record[self.label_key])


# ----------------------------------------------------------------------------------- splits
@dataclasses.dataclass(eq=False)
class StreamSplit:
    """One split for the streaming loader: its records and what the images become.

    Attributes:
      records: :class:`ImageFolderRecords` or :class:`TfdsRecords`.
      num_classes, name, class_names: as in :class:`~jaxcnn.data.ArrayDataset`.
      image_size: output ``(H, W)``.
      channels: 3 (RGB) or 1 (PIL mode ``L``).
      mean, std: per-channel statistics on the 0..1 scale used for normalisation.
      recipe: ``"resize"`` (plain BILINEAR resize to ``image_size``, the in-memory loader's
        images) or ``"imagenet"`` (training: RandomResizedCrop + flip; evaluation: Resize +
        CenterCrop; square ``image_size`` only).
      train: whether this split is augmented when the recipe is ``"imagenet"``.
      workers: worker processes its loaders use by default.
    """

    records: Any
    num_classes: int
    name: str
    image_size: tuple[int, int]
    channels: int = 3
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    class_names: tuple[str, ...] | None = None
    recipe: str = "resize"
    train: bool = False
    workers: int | None = None

    def __len__(self) -> int:
        return len(self.records)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (*self.image_size, self.channels)

    @property
    def labels(self) -> np.ndarray:
        return self.records.labels

    def subset(self, indices: np.ndarray | Sequence[int], name: str | None = None) -> StreamSplit:
        """The records ``indices`` (same metadata), like :meth:`ArrayDataset.subset`."""
        return dataclasses.replace(self, records=self.records.subset(np.asarray(indices)), name=name or self.name)

    def transform(self) -> Any:
        """The per-record transform: ``(PIL image, numpy Generator) -> uint8 (H, W, C)``."""
        h, w = self.image_size
        if self.recipe == "imagenet":
            if h != w:
                raise ValueError(f"the imagenet recipe needs a square image_size, got {self.image_size}")
            return ImageNetTrain(h) if self.train else ImageNetEval(h)
        return EvalTransform(h, w)


def estimate_decoded_bytes(num_images: int, image_size: tuple[int, int], channels: int = 3) -> int:
    """Bytes the in-memory loader would hold: ``N * H * W * C`` (uint8)."""
    return int(num_images) * int(image_size[0]) * int(image_size[1]) * int(channels)


def _sample_stats(records: Any, image_size: tuple[int, int], mode: str, count: int, seed: int):
    """Channel mean/std (0..1) of up to ``count`` seeded-random records, resized as the
    ``resize`` recipe does (the in-memory loader uses the whole training split)."""
    from jaxcnn.data.arrays import channel_stats

    n = len(records)
    idx = np.sort(np.random.default_rng(seed).permutation(n)[: min(n, count)])
    tf = EvalTransform(*image_size)
    images = np.stack([tf(records.read(int(i))[0].convert(mode)) for i in idx])
    return channel_stats(images)


def open_image_folder_splits(
    data_dir: str | os.PathLike,
    *,
    val_size: int | float | None = None,
    seed: int = 0,
    image_size: int | tuple[int, int] | None = None,
    grayscale: bool | None = None,
    recipe: str = "resize",
    workers: int | None = None,
    stats_sample: int = 512,
) -> dict[str, StreamSplit]:
    """``{'train', 'val', 'test'}`` :class:`StreamSplit` s of an image folder: the same files in
    the same splits as ``load_dataset('image_folder', ...)`` (:func:`image_folder_parts`), but
    only listed, never decoded up front.

    ``image_size`` ``None``: the first training file's size (``recipe="imagenet"``: 224).
    ``grayscale`` ``None``: 1 channel when every sampled image is grey-level. Normalisation
    statistics: ImageNet's for ``recipe="imagenet"``, else measured on ``stats_sample``
    seeded-random training images (the in-memory loader measures the whole split).
    """
    from PIL import Image

    from jaxcnn.data.image_folder import list_image_folder
    from jaxcnn.data.registry import image_folder_parts

    if recipe not in ("resize", "imagenet"):
        raise ValueError(f"recipe must be 'resize' or 'imagenet', got {recipe!r}")

    root = str(Path(data_dir).expanduser())

    all_paths: list[str] = []

    def read(folder, class_names=None):
        # the splits are arranged on indices into one list of str paths: no O(N) numpy string
        # arrays or Path objects outlive the listing (freed heap is not returned to the OS)
        paths, labels, classes = list_image_folder(folder, class_names=class_names)
        base = len(all_paths)
        all_paths.extend(map(str, paths))
        return np.arange(base, base + len(labels)), labels, classes

    parts, classes = image_folder_parts(data_dir, val_size, seed, read)
    records = {k: ImageFolderRecords(root, [all_paths[i] for i in x], y) for k, (x, y) in parts.items()}
    del all_paths
    train = records["train"]
    if len(train) == 0:
        raise DatasetError(f"image_folder: {root} has no training images")
    if image_size is None:
        if recipe == "imagenet":
            size_hw = (224, 224)
        else:
            with Image.open(train.path(0)) as im:
                size_hw = (im.height, im.width)
    elif isinstance(image_size, int):
        size_hw = (image_size, image_size)
    else:
        size_hw = (int(image_size[0]), int(image_size[1]))
    probe = np.sort(np.random.default_rng(seed).permutation(len(train))[: min(len(train), 64)])
    if grayscale is None:
        modes = []
        for i in probe:
            with Image.open(train.path(int(i))) as im:
                modes.append(im.mode)
        grayscale = all(m in _GREY_MODES for m in modes)
    mode = "L" if grayscale else "RGB"
    channels = 1 if grayscale else 3
    if recipe == "imagenet" and channels == 3:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        mean, std = _sample_stats(train, size_hw, mode, stats_sample, seed)
    return {
        split: StreamSplit(
            records=rec, num_classes=len(classes), name=f"image_folder/{split}", image_size=size_hw,
            channels=channels, mean=tuple(mean), std=tuple(std), class_names=tuple(classes), recipe=recipe,
            train=split == "train", workers=workers,
        )  # fmt: skip
        for split, rec in records.items()
    }


def open_tfds_split(
    name: str,
    split: str,
    data_dir: str | os.PathLike | None,
    *,
    image_size: int | tuple[int, int],
    num_classes: int,
    recipe: str = "resize",
    train: bool = False,
    channels: int = 3,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    workers: int | None = None,
) -> StreamSplit:
    """A :class:`StreamSplit` over ``tfds.data_source(name, split=split, data_dir=data_dir)``
    (a prepared ArrayRecord dataset; nothing is downloaded). Records need ``image`` (uint8
    HWC) and ``label`` features."""
    size_hw = (image_size, image_size) if isinstance(image_size, int) else tuple(int(v) for v in image_size)
    return StreamSplit(
        records=TfdsRecords(name, split, data_dir), num_classes=int(num_classes), name=f"{name}/{split}",
        image_size=size_hw, channels=channels, mean=tuple(mean), std=tuple(std), recipe=recipe, train=train,
        workers=workers,
    )  # fmt: skip


# ----------------------------------------------------------------------------- batch maker
class _BatchMaker:
    """Global batch ``g`` -> ``{"image": uint8 (b, H, W, C), "label": int32 (b,), "index": g}``
    (this JAX process's slice of the batch). Runs in grain's worker processes; the epoch
    permutation is cached per process."""

    def __init__(self, split: StreamSplit, batch_size: int, steps_per_epoch: int, tail: int, shuffle: bool,
                 seed: int, epoch_invariant: bool, process_index: int, process_count: int):  # fmt: skip
        self.records = split.records
        self.transform = split.transform()
        self.mode = "L" if split.channels == 1 else "RGB"
        self.shape = split.image_shape
        self.n = len(split)
        self.batch_size, self.spe, self.tail = batch_size, steps_per_epoch, tail
        self.shuffle, self.seed = shuffle, seed
        self.epoch_invariant = epoch_invariant
        self.pi, self.pc = process_index, process_count
        self._perm: tuple[int, np.ndarray] | None = None

    def permutation(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.n)
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, 0x5EED, epoch]).permutation(self.n))
        return self._perm[1]

    def indices(self, epoch: int, step: int) -> np.ndarray:
        size = self.tail if (self.tail and step == self.spe - 1) else self.batch_size
        idx = self.permutation(epoch)[step * self.batch_size : step * self.batch_size + size]
        local = size // self.pc
        return idx[self.pi * local : (self.pi + 1) * local]

    def __call__(self, g: int) -> dict[str, Any]:
        epoch, step = divmod(int(g), self.spe)
        if self.epoch_invariant:
            epoch = 0
        idx = self.indices(epoch, step)
        images = np.empty((len(idx), *self.shape), dtype=np.uint8)
        labels = np.empty((len(idx),), dtype=np.int32)
        for k, i in enumerate(idx):
            img, label = self.records.read(int(i))
            if img.mode != self.mode:
                img = img.convert(self.mode)
            rng = np.random.default_rng([self.seed, epoch, int(i)])
            images[k] = self.transform(img, rng)
            labels[k] = label
        return {"image": images, "label": labels, "index": np.int64(g)}


def _absl_flags_readable() -> None:
    """grain 0.2.18 reads an absl flag when it starts worker processes, which fails with
    ``UnparsedFlagAccessError`` in programs that do not parse absl flags (google/grain#1355,
    fixed after 0.2.18). Marking absl's flags as parsed makes them read as their defaults;
    done only when grain workers are started and no one has parsed the flags."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


@functools.lru_cache(maxsize=None)
def _finish_jit(out_shardings: Any):
    def finish(images, labels, key, epoch, step, *, augment_fn, mean, std):
        if augment_fn is not None:
            images = augment_fn(images, jax.random.fold_in(jax.random.fold_in(key, epoch), step))
        return normalize(images, mean, std), labels.astype(jnp.int32)

    return jax.jit(finish, static_argnames=("augment_fn", "mean", "std"), out_shardings=out_shardings)


# ---------------------------------------------------------------------------------- loader
class StreamingLoader(EpochPosition):
    """Seeded, resumable mini-batches decoded by ``grain`` worker processes (module docstring).

    Same iterator interface as :class:`~jaxcnn.data.pipeline.DeviceLoader`: ``len(loader)``
    batches per epoch, :meth:`iter_epoch` ``(epoch, start_step)`` yields float32 (B, H, W, C)
    NHWC normalised images and int32 (B,) labels on the device, and iterating the loader walks
    epochs from its position.

    Args:
      split: a :class:`StreamSplit`.
      batch_size: global examples per batch (each JAX process loads ``batch_size /
        jax.process_count()`` of them).
      shuffle, seed, drop_last: as ``DeviceLoader`` (a different, numpy-based permutation).
      augment: ``False``; ``True``: DeviceLoader's padded random crop + flip, on the device;
        ``"imagenet"``: the split's recipe must be ``"imagenet"`` (its transform then is
        RandomResizedCrop + flip for the training split).
      crop_padding, flip: parameters of ``augment=True``.
      sharding: ``NamedSharding`` of the image batches (data-parallel), or ``None``.
      workers: grain worker processes (0: decode in this process, in ``threads`` threads);
        ``None``: ``split.workers``, else ``os.cpu_count()``.
      threads: batches each worker builds concurrently (PIL decodes without the GIL).
      buffer: finished batches each worker may hold.
      prefetch: batches put on the device ahead of the one consumed.
      mean, std: override ``split.mean``/``split.std``.
    """

    def __init__(
        self,
        split: StreamSplit,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        augment: bool | str = False,
        crop_padding: int = 4,
        flip: bool = True,
        normalize: bool = True,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        sharding: jax.sharding.NamedSharding | None = None,
        workers: int | None = None,
        threads: int = 1,
        buffer: int = 2,
        prefetch: int = 2,
    ):
        n = len(split)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if n == 0:
            raise ValueError(f"{split.name}: cannot batch an empty split")
        if drop_last and n < batch_size:
            raise ValueError(f"{split.name}: {n} examples < batch_size {batch_size} with drop_last=True")
        if augment == "imagenet" and split.recipe != "imagenet":
            raise ValueError("augment='imagenet' needs a split opened with recipe='imagenet'")
        if not normalize:
            raise ValueError("the streaming loader always normalises (normalize=False is not supported)")
        self.split = split
        self.dataset_name = split.name
        self.num_examples = n
        self.batch_size = int(batch_size)
        self.shuffle, self.seed, self.drop_last = bool(shuffle), int(seed), bool(drop_last)
        self.mean = tuple(float(m) for m in (split.mean if mean is None else mean))
        self.std = tuple(float(s) for s in (split.std if std is None else std))
        self.image_shape = split.image_shape
        full, tail = divmod(n, self.batch_size)
        self.steps_per_epoch = full if (drop_last or tail == 0) else full + 1
        self._tail = 0 if drop_last else tail
        self.workers = int(split.workers if workers is None and split.workers is not None
                           else (os.cpu_count() or 1) if workers is None else workers)  # fmt: skip
        self.threads, self.buffer, self.prefetch = max(1, int(threads)), max(1, int(buffer)), max(0, int(prefetch))
        random_records = split.recipe == "imagenet" and split.train
        self.epoch_invariant = not self.shuffle and augment is not True and not random_records

        self.process_index, self.process_count = jax.process_index(), jax.process_count()
        self.sharding = sharding
        if sharding is not None:
            if not isinstance(sharding, jax.sharding.NamedSharding):
                raise TypeError("sharding must be a jax.sharding.NamedSharding (or None)")
            P = jax.sharding.PartitionSpec
            batch_axis = sharding.spec[0] if len(sharding.spec) else None
            label_sharding = jax.sharding.NamedSharding(sharding.mesh, P(batch_axis))
            shards = _num_shards(sharding.mesh, batch_axis)
            self._out_shardings: Any = (sharding, label_sharding)
        else:
            shards = 1
            self._out_shardings = None
        for size in {self.batch_size, self._tail} - {0}:
            if size % max(shards, self.process_count):
                raise ValueError(
                    f"batch of {size} examples does not split over {max(shards, self.process_count)} "
                    "shards/processes; choose a divisible batch_size or drop_last=True"
                )
        self._augment_fn = _default_augment_fn(int(crop_padding), bool(flip)) if augment is True else None
        self._aug_key = jax.random.fold_in(jax.random.key(self.seed), 1)
        self._maker = _BatchMaker(
            split, self.batch_size, self.steps_per_epoch, self._tail, self.shuffle, self.seed,
            self.epoch_invariant, self.process_index, self.process_count,
        )  # fmt: skip
        self._iter: Any = None  # the live grain iterator
        self._iter_start = 0  # global batch index of the live iterator's first element
        self._iter_next = 0  # global batch index of the next element it returns
        self._consumed: dict[str, Any] | None = None  # state after the last yielded batch
        self._restore: dict[str, Any] | None = None  # state from a checkpoint, not used yet
        self.resumed_from_iterator_state = False
        self._epoch = 0
        self._step = 0

    # ----------------------------------------------------------------------------- position
    def state_dict(self) -> dict[str, Any]:
        """JSON state after the last batch yielded (by :meth:`iter_epoch` or iteration):
        ``{"epoch", "step", "seed", "start", "workers", "grain"}`` -- the position of the next
        batch and grain's ``DatasetIterator.get_state()`` of the iterator (``workers``
        processes) started at global batch ``start`` (``None`` before the first batch)."""
        if self._consumed is not None:
            return dict(self._consumed)
        return {"epoch": self._epoch, "step": self._step, "seed": self.seed, "start": None, "grain": None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`: the next :meth:`iter_epoch` at that position resumes
        grain's iterator from the saved state (``set_state``). grain's state depends on the
        worker count; with another count the iterator starts afresh at the saved position
        (the same batches: a batch is a function of its position)."""
        if "seed" in state and int(state["seed"]) != self.seed:
            raise ValueError(f"checkpoint seed {state['seed']} != loader seed {self.seed}")
        self.set_position(int(state["epoch"]), int(state["step"]))
        self._consumed = dict(state)
        self._restore = dict(state) if state.get("grain") is not None else None

    # ------------------------------------------------------------------------------ batches
    def _dataset(self, start: int):
        import grain

        ds = grain.MapDataset.range(start, self.steps_per_epoch * _NEVER).map(self._maker)
        ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=self.threads, prefetch_buffer_size=self.buffer))
        if self.workers > 0:
            _absl_flags_readable()
            ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.workers, per_worker_buffer_size=self.buffer))
        return ds

    def _start(self, g: int) -> None:
        self.close()
        restore = self._restore
        self._restore = None
        usable = (
            restore is not None and restore.get("start") is not None
            and self._global(restore["epoch"], restore["step"]) == g
            and restore.get("workers") == self.workers  # grain's state has one entry per worker
        )  # fmt: skip
        if usable:
            start = int(restore["start"])
            self._iter = iter(self._dataset(start))
            self._iter.set_state(restore["grain"])
            self.resumed_from_iterator_state = True
        else:
            start = g
            self._iter = iter(self._dataset(start))
        self._iter_start, self._iter_next = start, g

    def _global(self, epoch: int, step: int) -> int:
        return int(epoch) * self.steps_per_epoch + int(step)

    def _pull(self) -> tuple[tuple[jax.Array, jax.Array], dict[str, Any]]:
        element = next(self._iter)
        if int(element["index"]) != self._iter_next:
            raise RuntimeError(f"grain returned batch {int(element['index'])}, expected {self._iter_next}")
        state = self._iter.get_state()
        g = self._iter_next
        self._iter_next += 1
        epoch, step = divmod(g, self.steps_per_epoch)
        batch = self._to_device(element["image"], element["label"], epoch, step)
        after = divmod(g + 1, self.steps_per_epoch)
        return batch, {"epoch": after[0], "step": after[1], "seed": self.seed, "start": self._iter_start,
                       "workers": self.workers, "grain": state}  # fmt: skip

    def _to_device(self, images: np.ndarray, labels: np.ndarray, epoch: int, step: int):
        if self._out_shardings is None:
            x, y = jax.device_put(images), jax.device_put(labels)
        elif self.process_count == 1:
            x, y = jax.device_put(images, self._out_shardings[0]), jax.device_put(labels, self._out_shardings[1])
        else:
            x = jax.make_array_from_process_local_data(self._out_shardings[0], images)
            y = jax.make_array_from_process_local_data(self._out_shardings[1], labels)
        return _finish_jit(self._out_shardings)(
            x, y, self._aug_key, epoch, step, augment_fn=self._augment_fn, mean=self.mean, std=self.std
        )

    def iter_epoch(self, epoch: int, start_step: int = 0) -> Iterator[tuple[jax.Array, jax.Array]]:
        """Yield batches ``start_step, ..., len(self) - 1`` of ``epoch``, keeping up to
        ``prefetch`` further batches of the epoch on the device. Continues the live grain
        iterator when it stands at that position, else starts one there (worker processes
        are started then; they keep decoding the next epoch's batches meanwhile)."""
        g = self._global(epoch, start_step)
        if self._iter is None:
            self._start(g)
        elif self._iter_next != g:
            # an epoch-invariant loader (evaluation) continues wherever the step matches
            if not (self.epoch_invariant and self._iter_next % self.steps_per_epoch == start_step):
                self._start(g)
        queue: collections.deque = collections.deque()
        remaining = self.steps_per_epoch - start_step
        while remaining and len(queue) <= self.prefetch:
            queue.append(self._pull())
            remaining -= 1
        while queue:
            batch, state = queue.popleft()
            if remaining:
                queue.append(self._pull())
                remaining -= 1
            self._consumed = state
            yield batch

    def __iter__(self) -> Iterator[tuple[jax.Array, jax.Array]]:
        epoch = self._epoch
        for x, y in self.iter_epoch(epoch, self._step):
            self._step += 1
            if self._step == self.steps_per_epoch:
                self._epoch, self._step = epoch + 1, 0
            yield x, y

    def close(self) -> None:
        """Stop the worker processes (a later :meth:`iter_epoch` starts new ones)."""
        if self._iter is not None:
            close = getattr(self._iter, "close", None)
            if close is not None:
                close()
            self._iter = None


# ------------------------------------------------------------------------------ selection
def choose_loader(kind: str, *, num_images: int, image_size: tuple[int, int], channels: int = 3,
                  memory_limit_bytes: int, augment: bool | str = False) -> str:  # fmt: skip
    """``"memory"`` or ``"streaming"`` for ``kind`` ``"auto"|"memory"|"streaming"``.

    ``auto`` streams when the decoded dataset (:func:`estimate_decoded_bytes`) exceeds
    ``memory_limit_bytes`` or when ``augment == "imagenet"`` (the recipe crops the source
    images, which only the streaming loader keeps).
    """
    if kind not in ("auto", "memory", "streaming"):
        raise ValueError(f"loader must be 'auto', 'memory' or 'streaming', got {kind!r}")
    if kind == "memory" and augment == "imagenet":
        raise ValueError("augment='imagenet' needs the streaming loader (it crops the source images)")
    if kind != "auto":
        return kind
    if augment == "imagenet":
        return "streaming"
    return "streaming" if estimate_decoded_bytes(num_images, image_size, channels) > memory_limit_bytes else "memory"


def make_loader(split: ArrayDataset | StreamSplit, batch_size: int, **kwargs: Any) -> DeviceLoader | StreamingLoader:
    """A :class:`DeviceLoader` for an :class:`ArrayDataset`, a :class:`StreamingLoader` for a
    :class:`StreamSplit` (same keyword arguments; ``augment="imagenet"`` only for the latter)."""
    if isinstance(split, StreamSplit):
        return StreamingLoader(split, batch_size, **kwargs)
    if kwargs.get("augment") == "imagenet":
        raise ValueError("augment='imagenet' needs the streaming loader (it crops the source images)")
    return DeviceLoader(split, batch_size, **kwargs)


def image_folder_summary(
    data_dir: str | os.PathLike | None, image_size: int | None = None, augment: bool | str = False
) -> tuple[int, tuple[int, int]]:
    """``(number of images, (H, W))`` of an image folder without decoding it: the files are
    counted, the size is ``image_size``, else 224 for ``augment="imagenet"``, else the first
    training file's size (read from its header). Input to :func:`choose_loader`."""
    from PIL import Image

    from jaxcnn.data.image_folder import list_image_folder
    from jaxcnn.data.registry import image_folder_parts

    first: list[str] = []

    def read(folder, class_names=None):
        paths, labels, classes = list_image_folder(folder, class_names=class_names)
        if not first and paths:
            first.append(str(paths[0]))
        return np.arange(len(labels)), labels, classes

    parts, _ = image_folder_parts(data_dir, 0, 0, read)
    num = sum(len(y) for _, y in parts.values())
    if image_size is not None:
        return num, (int(image_size), int(image_size))
    if augment == "imagenet":
        return num, (224, 224)
    with Image.open(first[0]) as im:
        return num, (im.height, im.width)
