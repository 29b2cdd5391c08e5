"""Device-resident input pipeline: normalisation, augmentation and a seeded, resumable loader.

The whole uint8 dataset is copied to the accelerator once; every batch is then an on-device
gather by a seeded per-epoch permutation, followed by optional augmentation and normalisation,
all inside one jitted function. The per-step host work is a single dispatch with scalar
arguments, independent of the batch size, and JAX's asynchronous dispatch plus a small queue
of batches dispatched ahead (``prefetch``) overlaps input work with the training step.

Determinism: the permutation of epoch ``e`` is ``jax.random.permutation(fold_in(k_shuffle, e),
N)`` and the augmentation key of step ``s`` of epoch ``e`` is ``fold_in(fold_in(k_augment, e),
s)``, with ``k_shuffle, k_augment`` derived from ``seed``. A batch is therefore a pure function
of ``(seed, epoch, step)``, so a run restored from a checkpoint at ``(epoch, step)`` sees
exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import collections
import functools
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.data.arrays import ArrayDataset

__all__ = ["DeviceLoader", "augment", "measure_throughput", "normalize"]

AugmentFn = Callable[[jax.Array, jax.Array], jax.Array]


def normalize(images: jax.Array | np.ndarray, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
    """Scale uint8 images to float32 and standardise each channel: ``(x / 255 - mean) / std``.

    Args:
      images: uint8 (or any real dtype on the 0..255 scale) array of shape (..., H, W, C), NHWC.
      mean: C per-channel means on the 0..1 scale (e.g. ``ArrayDataset.mean``).
      std: C per-channel standard deviations on the 0..1 scale.

    Returns:
      float32 array of the same shape. Same formula as torchvision's ``ToTensor`` followed by
      ``Normalize(mean, std)``. jit-able; runs wherever ``images`` lives.
    """
    x = jnp.asarray(images).astype(jnp.float32) / jnp.float32(255.0)
    return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def augment(
    images: jax.Array, key: jax.Array, *, crop_padding: int = 4, flip: bool = True
) -> jax.Array:
    """Random crop with zero padding plus random horizontal flip, independently per image.

    Equivalent in distribution to torchvision's ``RandomCrop(H, padding=crop_padding)`` followed
    by ``RandomHorizontalFlip()``: each image is zero-padded by ``crop_padding`` pixels on every
    side, an H x W window is taken at a uniformly random offset in ``[0, 2 * crop_padding]``
    per axis, and the result is mirrored left-right with probability 1/2. Apply it to the uint8
    images *before* :func:`normalize`, so padding is black as in torchvision.

    Args:
      images: array of shape (N, H, W, C), NHWC, any dtype.
      key: a JAX PRNG key; the output is a deterministic function of ``(images, key)``.
      crop_padding: padding in pixels (static); 0 disables cropping.
      flip: whether to apply random horizontal flips (static).

    Returns:
      Array of the same shape and dtype as ``images``. jit-able.
    """
    n, h, w, c = images.shape
    key_crop, key_flip = jax.random.split(key)
    if crop_padding > 0:
        p = int(crop_padding)
        offsets = jax.random.randint(key_crop, (n, 2), 0, 2 * p + 1)
        padded = jnp.pad(images, ((0, 0), (p, p), (p, p), (0, 0)))

        def crop(img: jax.Array, off: jax.Array) -> jax.Array:
            return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, c))

        images = jax.vmap(crop)(padded, offsets)
    if flip:
        mirror = jax.random.bernoulli(key_flip, 0.5, (n,))
        images = jnp.where(mirror[:, None, None, None], images[:, :, ::-1, :], images)
    return images


_default_augment = augment  # DeviceLoader's ``augment`` argument shadows the function name


@functools.lru_cache(maxsize=None)
def _default_augment_fn(crop_padding: int, flip: bool) -> AugmentFn:
    # Cached so that equal settings give the *same* callable: it is a static jit argument,
    # and reusing it lets loaders share compiled batch functions.
    return functools.partial(_default_augment, crop_padding=crop_padding, flip=flip)


def _batch_impl(images, labels, perm, start, aug_key, epoch, step, *, size, augment_fn,
                do_normalize, mean, std):  # fmt: skip
    idx = jax.lax.dynamic_slice_in_dim(perm, start, size)
    x = jnp.take(images, idx, axis=0)
    y = jnp.take(labels, idx, axis=0)
    if augment_fn is not None:
        x = augment_fn(x, jax.random.fold_in(jax.random.fold_in(aug_key, epoch), step))
    if do_normalize:
        x = normalize(x, mean, std)
    return x, y


def _perm_impl(key, epoch, *, n):
    return jax.random.permutation(jax.random.fold_in(key, epoch), n)


@functools.lru_cache(maxsize=None)
def _batch_jit(out_shardings: Any) -> Callable[..., tuple[jax.Array, jax.Array]]:
    # One jitted function per output sharding; jax's cache then keys on the static settings
    # and the argument shapes, so loaders over same-shaped data share compilations.
    return jax.jit(
        _batch_impl,
        static_argnames=("size", "augment_fn", "do_normalize", "mean", "std"),
        out_shardings=out_shardings,
    )


@functools.partial(jax.jit, static_argnames=("size",))
def _slice_jit(perm: jax.Array, start: int, *, size: int) -> jax.Array:
    return jax.lax.dynamic_slice_in_dim(perm, start, size)


@functools.lru_cache(maxsize=None)
def _perm_jit(out_shardings: Any) -> Callable[..., jax.Array]:
    return jax.jit(_perm_impl, static_argnames=("n",), out_shardings=out_shardings)


class EpochPosition:
    """Where a loader's iteration stands: the epoch and step of the next batch it yields.

    Shared by :class:`DeviceLoader` and :class:`jaxcnn.data.StreamingLoader`; a subclass sets
    ``steps_per_epoch``, ``_epoch`` and ``_step``.
    """

    steps_per_epoch: int
    _epoch: int
    _step: int

    def __len__(self) -> int:
        """Batches per epoch."""
        return self.steps_per_epoch

    @property
    def epoch(self) -> int:
        """Epoch of the next batch iteration yields."""
        return self._epoch

    @property
    def step(self) -> int:
        """Step (within :attr:`epoch`) of the next batch iteration yields."""
        return self._step

    def set_position(self, epoch: int, step: int = 0) -> None:
        """Make the next batch yielded by iteration batch ``step`` of ``epoch``."""
        if epoch < 0 or not 0 <= step <= self.steps_per_epoch:
            raise ValueError(f"invalid position epoch={epoch} step={step}")
        if step == self.steps_per_epoch:
            epoch, step = epoch + 1, 0
        self._epoch, self._step = int(epoch), int(step)


class DeviceLoader(EpochPosition):
    """Seeded, resumable mini-batches gathered on device from a device-resident dataset.

    Args:
      dataset: an :class:`ArrayDataset` (uint8 NHWC images, int32 labels).
      batch_size: examples per batch.
      shuffle: permute the examples each epoch (seeded, epoch-dependent); ``False``: file order.
      seed: seed of the permutations and of the augmentation keys.
      drop_last: drop the last partial batch (every batch then has ``batch_size`` examples).
        With ``False`` the last batch of an epoch holds the ``N % batch_size`` remaining
        examples (a second, smaller compiled shape), so every example is seen exactly once per
        epoch.
      augment: ``False`` (none), ``True`` (:func:`augment` with ``crop_padding``/``flip``), or a
        callable ``(uint8 images (B, H, W, C), key) -> images`` applied before normalisation.
      crop_padding, flip: parameters of the default augmentation.
      normalize: ``True``: yield float32 ``(x / 255 - mean) / std``; ``False``: yield the (possibly
        augmented) uint8 images unchanged.
      mean, std: per-channel statistics on the 0..1 scale; default ``dataset.mean``/``dataset.std``.
      sharding: optional ``jax.sharding.NamedSharding`` for the *image batches* of a
        data-parallel run (e.g. ``NamedSharding(mesh, P("data"))``). The dataset is then
        replicated over ``sharding.mesh``, labels are sharded like the batch axis, and
        ``batch_size`` (and the last partial batch, if kept) must divide evenly over it.
        ``None``: everything on the default device.
      prefetch: how many batches to keep dispatched ahead of the one being consumed.

    Iterating the loader yields ``(images, labels)``: float32 (B, H, W, C) NHWC and int32 (B,).
    ``for x, y in loader`` runs from the current position to the end of the current epoch and
    then advances to the next epoch, so ``for epoch ...: for batch in loader:`` is the usual
    loop. ``state_dict()``/``load_state_dict()`` (or ``set_position``) save and restore the
    position ``(epoch, step)`` of the next batch; :meth:`iter_epoch` and :meth:`batch` are
    stateless accessors.
    """

    def __init__(
        self,
        dataset: ArrayDataset,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        augment: bool | AugmentFn = False,
        crop_padding: int = 4,
        flip: bool = True,
        normalize: bool = True,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        sharding: jax.sharding.NamedSharding | None = None,
        prefetch: int = 2,
    ):
        n = len(dataset)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if n == 0:
            raise ValueError(f"{dataset.name}: cannot batch an empty dataset")
        if drop_last and n < batch_size:
            raise ValueError(
                f"{dataset.name}: {n} examples < batch_size {batch_size} with drop_last=True "
                "gives empty epochs"
            )
        self.dataset_name = dataset.name
        self.num_examples = n
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.prefetch = max(0, int(prefetch))
        self.mean = tuple(float(m) for m in (dataset.mean if mean is None else mean))
        self.std = tuple(float(s) for s in (dataset.std if std is None else std))
        self.image_shape = dataset.image_shape
        full, tail = divmod(n, self.batch_size)
        self.steps_per_epoch = full if (drop_last or tail == 0) else full + 1
        self._tail = 0 if drop_last else tail

        if augment is True:
            augment_fn: AugmentFn | None = _default_augment_fn(int(crop_padding), bool(flip))
        elif augment is False or augment is None:
            augment_fn = None
        else:
            augment_fn = augment

        self.sharding = sharding
        if sharding is not None:
            if not isinstance(sharding, jax.sharding.NamedSharding):
                raise TypeError("sharding must be a jax.sharding.NamedSharding (or None)")
            P = jax.sharding.PartitionSpec
            data_sharding = jax.sharding.NamedSharding(sharding.mesh, P())
            batch_axis = sharding.spec[0] if len(sharding.spec) else None
            label_sharding = jax.sharding.NamedSharding(sharding.mesh, P(batch_axis))
            shards = _num_shards(sharding.mesh, batch_axis)
            for size in {self.batch_size, self._tail} - {0}:
                if size % shards:
                    raise ValueError(
                        f"batch of {size} examples does not split over {shards} shards; choose "
                        "a divisible batch_size or drop_last=True"
                    )
            out_shardings: Any = (sharding, label_sharding)
        else:
            data_sharding = jax.devices()[0]
            out_shardings = None

        self._images = jax.device_put(dataset.images, data_sharding)
        self._labels = jax.device_put(dataset.labels.astype(np.int32), data_sharding)
        root = jax.random.key(self.seed)
        self._shuffle_key = jax.random.fold_in(root, 0)
        self._aug_key = jax.random.fold_in(root, 1)

        self._perm_fn = functools.partial(
            _perm_jit(None if sharding is None else data_sharding), n=n
        )
        self._arange = jax.device_put(np.arange(n, dtype=np.int32), data_sharding)
        self._perm_cache: tuple[int, jax.Array] | None = None
        self._batch_fns = {
            size: functools.partial(
                _batch_jit(out_shardings), size=size, augment_fn=augment_fn,
                do_normalize=bool(normalize), mean=self.mean, std=self.std,
            )  # fmt: skip
            for size in {self.batch_size, self._tail} - {0}
        }
        self._epoch = 0
        self._step = 0

    # ----------------------------------------------------------------------------- position
    def state_dict(self) -> dict[str, int]:
        """``{"epoch", "step"}`` of the next batch plus ``seed`` (for a checkpoint)."""
        return {"epoch": self._epoch, "step": self._step, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore a :meth:`state_dict`; the seed must match the loader's."""
        if "seed" in state and int(state["seed"]) != self.seed:
            raise ValueError(f"checkpoint seed {state['seed']} != loader seed {self.seed}")
        self.set_position(int(state["epoch"]), int(state["step"]))

    # ------------------------------------------------------------------------------ batches
    def permutation(self, epoch: int) -> jax.Array:
        """int32 (N,) on-device order of the examples in ``epoch`` (``arange`` if not shuffling)."""
        if not self.shuffle:
            return self._arange
        if self._perm_cache is None or self._perm_cache[0] != epoch:
            self._perm_cache = (epoch, self._perm_fn(self._shuffle_key, epoch))
        return self._perm_cache[1]

    def _size(self, step: int) -> int:
        if not 0 <= step < self.steps_per_epoch:
            raise IndexError(f"step {step} outside [0, {self.steps_per_epoch})")
        return self._tail if (self._tail and step == self.steps_per_epoch - 1) else self.batch_size

    def indices(self, epoch: int, step: int) -> jax.Array:
        """int32 (B,) dataset indices of batch ``step`` of ``epoch``."""
        return _slice_jit(self.permutation(epoch), step * self.batch_size, size=self._size(step))

    def batch(self, epoch: int, step: int) -> tuple[jax.Array, jax.Array]:
        """Dispatch and return batch ``step`` of ``epoch``: float32 (B, H, W, C), int32 (B,)."""
        fn = self._batch_fns[self._size(step)]
        return fn(
            self._images, self._labels, self.permutation(epoch), step * self.batch_size,
            self._aug_key, epoch, step,
        )  # fmt: skip

    def warmup(self) -> None:
        """Compile the permutation and every batch shape (full and, if kept, the last partial
        one) now, so the first epoch's timing is not dominated by compilation."""
        out = [self.batch(0, 0), self.batch(0, self.steps_per_epoch - 1)]
        jax.block_until_ready(out)

    def iter_epoch(self, epoch: int, start_step: int = 0) -> Iterator[tuple[jax.Array, jax.Array]]:
        """Yield batches ``start_step, ..., len(self) - 1`` of ``epoch`` (does not move the
        loader's position), keeping up to ``prefetch`` further batches dispatched ahead."""
        queue: collections.deque[tuple[jax.Array, jax.Array]] = collections.deque()
        nxt = start_step
        while nxt < self.steps_per_epoch and len(queue) <= self.prefetch:
            queue.append(self.batch(epoch, nxt))
            nxt += 1
        while queue:
            current = queue.popleft()
            if nxt < self.steps_per_epoch:
                queue.append(self.batch(epoch, nxt))
                nxt += 1
            yield current

    def __iter__(self) -> Iterator[tuple[jax.Array, jax.Array]]:
        epoch = self._epoch
        for x, y in self.iter_epoch(epoch, self._step):
            self._step += 1
            if self._step == self.steps_per_epoch:
                self._epoch, self._step = epoch + 1, 0
            yield x, y


def _num_shards(mesh: jax.sharding.Mesh, axis: Any) -> int:
    if axis is None:
        return 1
    names = axis if isinstance(axis, tuple) else (axis,)
    return int(np.prod([mesh.shape[a] for a in names]))


def measure_throughput(loader: DeviceLoader, steps: int, *, warmup: int = 2) -> float:
    """Images per second the loader delivers on its own (no training step).

    Compiles every batch shape (:meth:`DeviceLoader.warmup`) and runs ``warmup`` untimed
    batches, then times ``steps`` batches, walking
    through epochs ``1_000_000, 1_000_001, ...`` with :meth:`DeviceLoader.iter_epoch` so the
    loader's own position is left untouched, and waits for the last batch to be computed.

    Returns:
      ``examples / seconds`` as a float.
    """
    if steps < 1:
        raise ValueError("steps must be >= 1")

    def stream() -> Iterator[tuple[jax.Array, jax.Array]]:
        epoch = 1_000_000
        while True:
            yield from loader.iter_epoch(epoch)
            epoch += 1

    loader.warmup()
    it = stream()
    last = None
    for _ in range(warmup):
        last = next(it)
    if last is not None:
        jax.block_until_ready(last)
    count = 0
    t0 = time.perf_counter()
    for _ in range(steps):
        last = next(it)
        count += int(last[1].shape[0])
    jax.block_until_ready(last)
    return count / (time.perf_counter() - t0)
