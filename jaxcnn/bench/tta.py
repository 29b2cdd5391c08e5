"""Time to accuracy (``jaxcnn bench --time-to-accuracy``): the product's trainers, run for run.

mnist_cnn on the real MNIST t10k split (``mnist_t10k``: 7,000 train / 1,000 val / 2,000 test)
trained by jaxcnn's trainer (:class:`jaxcnn.train.experiment.Trainer`) and by the torch
reference trainer (:func:`torch_ref.train.train` with ``init="jax"``, ``batch_order="jax"``):
the same :class:`~jaxcnn.train.config.TrainConfig`, the same initial weights, the same batches
(one :class:`~jaxcnn.data.DeviceLoader` seed), constant-rate SGD with momentum. Each runs
``epochs`` epochs; the time to accuracy is the training time (each trainer's
``epoch_seconds``, which leave out the per-epoch validation) up to the first epoch whose
validation accuracy reaches the target. jaxcnn's first epoch includes its compilation.

The data folder is ``--data-dir``, else the data registry's default
(``$JAXCNN_DATA_DIR/mnist`` or ``~/jaxcnn_data/mnist``); without MNIST's t10k files there the
measurement is skipped with the reason recorded.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["mnist_files_present", "time_to_accuracy", "tta_record"]

_FILES = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def mnist_files_present(data_dir: str | os.PathLike) -> bool:
    """Whether ``data_dir`` holds MNIST's t10k images and labels (``.gz`` or not)."""
    folder = Path(data_dir)
    return all((folder / f).exists() or (folder / f"{f}.gz").exists() for f in _FILES)


def tta_record(val_accs: list[float], epoch_seconds: list[float], target: float, test_acc: float | None = None) -> dict[str, Any]:
    """One trainer's record from its per-epoch validation accuracies (percent) and epoch times.

    ``seconds``: training time up to the first epoch at ``target`` (fraction), or all epochs
    when none reaches it. ``seconds_per_epoch`` leaves out the first epoch, which holds JAX's
    compilation: the epoch at which a run first reaches the target moves by several epochs
    with the float32 rounding of its steps, so the time per epoch is the steadier speed figure.
    """
    elapsed = list(itertools.accumulate(epoch_seconds))
    reached = next((i for i, acc in enumerate(val_accs) if acc >= 100 * target), None)
    last = len(val_accs) - 1 if reached is None else reached
    later = epoch_seconds[1:]
    return {
        "reached": reached is not None,
        "epochs": last + 1,
        "seconds": elapsed[last] if elapsed else 0.0,
        "accuracy": val_accs[last] if val_accs else float("nan"),
        "seconds_per_epoch": sum(later) / len(later) if later else (epoch_seconds[0] if epoch_seconds else float("nan")),
        "test_acc": test_acc,
        "history": [{"val_acc": a, "seconds": t} for a, t in zip(val_accs, elapsed)],
    }


def time_to_accuracy(
    *,
    target: float = 0.97,
    epochs: int = 8,
    batch_size: int = 64,
    lr: float = 0.05,
    data_dir: str | os.PathLike | None = None,
    torch_device: str | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """mnist_cnn to ``target`` validation accuracy on mnist_t10k, jaxcnn's trainer against torch_ref's.

    Returns ``{"target", "model", "dataset", "config", "runs": {"jax": {...}, "torch": {...}}}``
    (see :func:`tta_record`), or ``{"skipped": reason}`` when the data is absent.
    """
    from jaxcnn.data.registry import default_data_dir
    from jaxcnn.train.config import TrainConfig
    from jaxcnn.train.experiment import Trainer

    folder = Path(data_dir) if data_dir else default_data_dir("mnist_t10k")
    if not mnist_files_present(folder):
        reason = f"no MNIST t10k files in {folder}; pass --data-dir or set JAXCNN_DATA_DIR"
        log(f"time to accuracy skipped: {reason}")
        return {"skipped": reason}
    config = TrainConfig(
        model="mnist_cnn", dataset="mnist_t10k", data_dir=str(folder), optimizer="sgd", lr=lr, momentum=0.9,
        schedule="constant", epochs=epochs, batch_size=batch_size, seed=0, out=None, progress=False,
        tensorboard=False, plots=False,
    )  # fmt: skip
    runs: dict[str, Any] = {}
    log(f"[tta] jaxcnn trainer: {epochs} epochs ...")
    jax_result = Trainer(config).fit()
    runs["jax"] = tta_record(jax_result["val_accs"], jax_result["epoch_seconds"], target, jax_result["test_acc"])
    try:
        import torch_ref.train
    except ImportError as exc:
        log(f"[tta] torch reference trainer unavailable: {exc}")
    else:
        log(f"[tta] torch_ref trainer: {epochs} epochs ...")
        torch_result = torch_ref.train.train(config, init="jax", batch_order="jax", device=torch_device)
        runs["torch"] = tta_record(torch_result["val_accs"], torch_result["epoch_seconds"], target, torch_result["test_acc"])
    return {
        "target": target,
        "model": "mnist_cnn",
        "dataset": "mnist_t10k (7,000 train / 1,000 val / 2,000 test)",
        "config": config.to_dict(),
        "loop": "jaxcnn.train.experiment.Trainer and torch_ref.train.train (init=jax, batch_order=jax)",
        "runs": runs,
    }
