"""Input-pipeline benchmark: jaxcnn's streaming loader vs torch's ``DataLoader`` on one folder.

Both decode the same image folder with the same training transforms (torchvision's
``RandomResizedCrop(image_size)`` + ``RandomHorizontalFlip()`` + normalisation; jaxcnn's
:mod:`jaxcnn.data.transforms` twins), the same batch size and the same number of worker
processes, in one run, one after the other: jaxcnn's :class:`~jaxcnn.data.streaming.StreamingLoader`
(grain workers, batches put on the JAX device) and ``DataLoader(ImageFolder(...),
num_workers=workers, persistent_workers=True)``. The first ``warmup`` batches of each
(worker start-up) are not timed. Optionally the streaming loader then feeds a real train step
(``model``), synchronously, and the time the step waits in ``next(loader)`` is reported as a
fraction of the total. torch is imported inside the functions only.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["format_pipeline_table", "pipeline_benchmark"]


def _folder_split(data_dir: str | os.PathLike, image_size: int, workers: int):
    from jaxcnn.data.image_folder import list_image_folder
    from jaxcnn.data.streaming import ImageFolderRecords, StreamSplit

    paths, labels, classes = list_image_folder(data_dir)
    records = ImageFolderRecords(data_dir, [str(p) for p in paths], labels)
    return StreamSplit(
        records=records, num_classes=len(classes), name="bench", image_size=(image_size, image_size),
        recipe="imagenet", train=True, workers=workers, class_names=tuple(classes),
    )  # fmt: skip


def _endless(loader):
    epoch = 0
    while True:
        yield from loader.iter_epoch(epoch)
        epoch += 1


def _time_jaxcnn(split, batch_size: int, workers: int, steps: int, warmup: int) -> float:
    import jax

    from jaxcnn.data.streaming import StreamingLoader

    loader = StreamingLoader(split, batch_size, shuffle=True, seed=0, drop_last=True, augment="imagenet", workers=workers)
    try:
        it = _endless(loader)
        for _ in range(warmup):
            jax.block_until_ready(next(it))
        t0 = time.perf_counter()
        last = None
        for _ in range(steps):
            last = next(it)
        jax.block_until_ready(last)
        return steps * batch_size / (time.perf_counter() - t0)
    finally:
        loader.close()


def _time_torch(data_dir, image_size: int, batch_size: int, workers: int, steps: int, warmup: int) -> float:
    import torch
    from torchvision import datasets, transforms

    from jaxcnn.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    tf = transforms.Compose([
        transforms.RandomResizedCrop(image_size), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])  # fmt: skip
    ds = datasets.ImageFolder(str(data_dir), transform=tf)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True,
        persistent_workers=workers > 0, generator=torch.Generator().manual_seed(0),
    )  # fmt: skip

    def endless():
        while True:
            yield from loader

    it = endless()
    for _ in range(warmup):
        next(it)
    t0 = time.perf_counter()
    for _ in range(steps):
        next(it)
    rate = steps * batch_size / (time.perf_counter() - t0)
    del it, loader  # stops the persistent workers
    return rate


def _train_feed(split, model: str, batch_size: int, workers: int, steps: int, warmup: int) -> dict[str, Any]:
    import jax
    from flax import nnx

    import jaxcnn.models
    import jaxcnn.optim
    from jaxcnn.data.streaming import StreamingLoader
    from jaxcnn.train.state import create_train_state
    from jaxcnn.train.step import make_steps

    net = jaxcnn.models.create(model, num_classes=split.num_classes, rngs=nnx.Rngs(0))
    tx = jaxcnn.optim.create("sgd", lr=0.01, momentum=0.9)
    graphdef, eval_graphdef, state = create_train_state(net, tx)
    train_step = make_steps(graphdef, eval_graphdef, tx).train_step
    loader = StreamingLoader(split, batch_size, shuffle=True, seed=0, drop_last=True, augment="imagenet", workers=workers)
    try:
        it = _endless(loader)
        x0, y0 = next(it)
        for _ in range(warmup):  # compile, and time the step alone on a resident batch
            state, metrics = train_step(state, x0, y0)
        jax.block_until_ready(metrics)
        t0 = time.perf_counter()
        for _ in range(steps):
            state, metrics = train_step(state, x0, y0)
            jax.block_until_ready(metrics)
        step_only = steps * batch_size / (time.perf_counter() - t0)
        waited = 0.0
        t0 = time.perf_counter()
        for _ in range(steps):
            t = time.perf_counter()
            x, y = next(it)
            jax.block_until_ready(x)
            waited += time.perf_counter() - t
            state, metrics = train_step(state, x, y)
            jax.block_until_ready(metrics)
        total = time.perf_counter() - t0
    finally:
        loader.close()
    return {
        "model": model, "img_s": steps * batch_size / total, "step_only_img_s": step_only,
        "data_wait_fraction": waited / total,
    }  # fmt: skip


def pipeline_benchmark(
    data_dir: str | os.PathLike,
    *,
    image_size: int = 224,
    batch_size: int = 64,
    workers: int | None = None,
    steps: int = 50,
    model: str | None = None,
) -> dict:
    """Measure the streaming loader against torch's ``DataLoader`` on ``data_dir``, side by side.

    Args:
      data_dir: an image folder (one sub-folder per class), e.g. from
        ``scripts/make_image_folder.py``.
      image_size: output side of ``RandomResizedCrop``.
      batch_size: images per batch (both loaders drop the last partial batch).
      workers: worker processes of both loaders (``None``: ``os.cpu_count()``).
      steps: timed batches per loader (after 3 untimed ones).
      model: a :func:`jaxcnn.models.names` entry: also feed its train step (SGD) from the
        streaming loader and report the fraction of time spent waiting for data.

    Returns:
      ``{"data_dir", "images", "image_size", "batch_size", "workers", "steps", "cpus",
      "load_avg", "jaxcnn_img_s", "torch_img_s", "ratio" (jaxcnn / torch), "train"}``;
      ``train`` is ``None`` or ``{"model", "img_s", "step_only_img_s", "data_wait_fraction"}``.
    """
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    split = _folder_split(data_dir, image_size, workers)
    warmup = 3
    load_before = os.getloadavg()[0]
    jax_rate = _time_jaxcnn(split, batch_size, workers, steps, warmup)
    torch_rate = _time_torch(data_dir, image_size, batch_size, workers, steps, warmup)
    train = _train_feed(split, model, batch_size, workers, steps, warmup) if model else None
    return {
        "data_dir": str(Path(data_dir)), "images": len(split), "image_size": int(image_size),
        "batch_size": int(batch_size), "workers": workers, "steps": int(steps), "cpus": os.cpu_count(),
        "load_avg": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "jaxcnn_img_s": jax_rate, "torch_img_s": torch_rate, "ratio": jax_rate / torch_rate, "train": train,
    }  # fmt: skip


def format_pipeline_table(result: dict) -> str:
    """A plain-text table of :func:`pipeline_benchmark`'s result with the jaxcnn/torch ratio."""
    r = result
    lines = [
        f"input pipeline: {r['images']} images in {r['data_dir']}, RandomResizedCrop({r['image_size']}) + flip, "
        f"batch {r['batch_size']}, {r['workers']} workers, {r['steps']} batches ({r['cpus']} CPUs, "
        f"load average {r['load_avg'][0]} -> {r['load_avg'][1]})",
        f"{'loader':<40} {'img/s':>10}",
        f"{'jaxcnn StreamingLoader (grain)':<40} {r['jaxcnn_img_s']:>10.1f}",
        f"{'torch DataLoader(ImageFolder)':<40} {r['torch_img_s']:>10.1f}",
        f"{'ratio jaxcnn/torch':<40} {r['ratio']:>10.2f}",
    ]
    if r.get("train"):
        t = r["train"]
        lines += [
            f"train step of {t['model']} fed by the streaming loader: {t['img_s']:.1f} img/s "
            f"(step alone on a resident batch: {t['step_only_img_s']:.1f} img/s); "
            f"waiting for data: {100 * t['data_wait_fraction']:.1f}% of the time",
        ]
    return "\n".join(lines)
