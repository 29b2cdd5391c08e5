"""Run outputs: ``results.json`` (atomic), TensorBoard event logs and tqdm progress bars.

``results.json`` format (shared with ``torch_ref/train.py``)::

    {
      "framework": "jax" | "torch",
      "config": {...every TrainConfig field...},
      "result": {
        "train_losses": [...], "val_losses": [...],   # per epoch, mean cross entropy
        "train_accs": [...], "val_accs": [...],       # per epoch, percent
        "train_acc": float, "val_acc": float,         # last epoch, percent
        "test_acc": float, "test_loss": float,        # after the last epoch, percent / mean CE
        "epochs": int, "steps": int, "complete": bool, ...
      },
      "versions": {...}
    }

Losses are exact per-example means over the split (``sum of per-example losses / N``) and
accuracies ``100 * correct / N``, so the two frameworks agree on the definition even when the
last batch is smaller.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = [
    "TensorBoardLogger",
    "epoch_line",
    "progress_bar",
    "read_results",
    "versions",
    "write_json_atomic",
    "write_results",
]


def _jsonable(value: Any) -> Any:
    """NaN/inf become None so files stay strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy/JAX scalar
        return _jsonable(value.item())
    return value


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically (temp file + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_jsonable(data), f, indent=2, allow_nan=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def versions(framework: str) -> dict[str, str]:
    """Library versions recorded in results files."""
    out = {"python": sys.version.split()[0]}
    names = ("jax", "jaxlib", "flax", "optax", "orbax.checkpoint") if framework == "jax" else ("torch",)
    for name in (*names, "numpy"):
        try:
            module = __import__(name, fromlist=["__version__"])
            out[name] = str(getattr(module, "__version__", "?"))
        except ImportError:  # pragma: no cover
            pass
    return out


def write_results(path: str | os.PathLike, config: dict[str, Any], result: dict[str, Any], *, framework: str = "jax") -> Path:
    """Write the shared ``results.json`` format (module docstring) atomically."""
    return write_json_atomic(
        path, {"framework": framework, "config": config, "result": result, "versions": versions(framework)}
    )


def read_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read a ``results.json`` (a run folder or the file itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    return json.loads(path.read_text())


def epoch_line(epoch: int, train_acc: float, val_acc: float, train_loss: float, val_loss: float, seconds: float) -> str:
    """The course's per-epoch summary line."""
    return (
        f"Epoch {epoch}, Acc(train/val): {train_acc:2.2f}/{val_acc:2.2f}, "
        f"Loss(train/val) {train_loss:2.4f}/{val_loss:2.4f}. Took {seconds:2.2f} sec"
    )


def progress_bar(total: int, *, initial: int = 0, desc: str = "", enabled: bool = True):
    """A tqdm bar over one epoch's steps (stderr); a no-op object when disabled."""
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step", leave=False, dynamic_ncols=True)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardLogger:
    """Scalars to TensorBoard event files via ``tensorboardX.SummaryWriter``; no-op when disabled.

    Args:
      logdir: folder of the event files (``<out>/tensorboard``).
      enabled: ``False`` (or tensorboardX missing): every call does nothing.
      purge_step: when resuming from global step ``s``, pass ``s`` so that events written after
        the checkpoint by the interrupted run are hidden by TensorBoard (``purge_step``).
    """

    def __init__(self, logdir: str | os.PathLike | None, *, enabled: bool = True, purge_step: int | None = None):
        self._writer = None
        if enabled and logdir is not None:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:  # pragma: no cover
                return
            self._writer = SummaryWriter(logdir=str(logdir), purge_step=purge_step)

    def scalar(self, tag: str, value: float, step: int) -> None:
        """Log one scalar (skipped when not finite or disabled)."""
        if self._writer is not None and value is not None and math.isfinite(float(value)):
            self._writer.add_scalar(tag, float(value), int(step))

    def scalars(self, values: dict[str, float], step: int) -> None:
        """Log several scalars at one step."""
        for tag, value in values.items():
            self.scalar(tag, value, step)

    def flush(self) -> None:
        """Write buffered events to disk."""
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file (later calls are no-ops)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
