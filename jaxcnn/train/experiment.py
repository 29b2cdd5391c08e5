"""The trainer: ``experiment(config) -> (config, result)`` as in the course, plus checkpoints,
resumption, divergence detection, TensorBoard logs, plots and ``results.json``.

Per step the host dispatches one batch gather (:class:`jaxcnn.data.DeviceLoader`, dataset
resident on the device) and one compiled train step; the step metrics stay on the device and are
fetched together every ``config.log_every`` steps (and at checkpoints and epoch ends). That
fetch is where a non-finite loss is noticed: the run then stops with
:class:`TrainingDivergedError` naming the first bad step and its loss. Checkpoints are only
written after the pending losses were checked and the state itself was verified finite on
device, so the last good checkpoint survives a divergence.

Reproducibility: every random choice derives from ``config.seed`` (model init, the train/val
split, per-epoch shuffles, augmentation, Dropout streams), and the batch of step ``s`` of epoch
``e`` is a pure function of ``(seed, e, s)``. A resumed run restores parameters, BatchNorm
statistics, RNG streams, optimizer state, the data position and the partial sums of the
current epoch, so it finishes bitwise identical to an uninterrupted run on the same machine.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import jaxcnn.models
import jaxcnn.optim
from jaxcnn.data import ArrayDataset, DeviceLoader, load_dataset
from jaxcnn.data.streaming import StreamingLoader, StreamSplit, make_loader
from jaxcnn.errors import UserError
from jaxcnn.optim import schedules
from jaxcnn.train.checkpoint import CheckpointDamagedError, NonFiniteStateError, RunCheckpointer
from jaxcnn.train.config import TrainConfig
from jaxcnn.train.logging import TensorBoardLogger, epoch_line, progress_bar, write_json_atomic, write_results
from jaxcnn.train.state import TrainState, create_train_state, state_to_model
from jaxcnn.train.distributed import batch_sharding, data_parallel, make_mesh, replicate, replicated_sharding
from jaxcnn.train.step import make_steps

__all__ = ["RunExistsError", "Trainer", "TrainingDivergedError", "TrainingInterrupted", "evaluate_checkpoint", "experiment", "load_splits"]

_HISTORY_KEYS = ("train_losses", "val_losses", "train_accs", "val_accs")
#: Config fields that may differ between an interrupted run and its resumption.
_RESUMABLE_CHANGES = frozenset(
    {"out", "data_dir", "epochs", "max_steps", "checkpoint_every", "keep_checkpoints", "async_checkpointing",
     "log_every", "progress", "tensorboard", "plots", "eval_batch_size", "workers"}
)  # fmt: skip


class TrainingDivergedError(RuntimeError):
    """The training loss (or state) became NaN/inf. ``step`` is the 1-based global step whose
    loss was first non-finite, ``loss`` that value; the last good checkpoint is left intact."""

    def __init__(self, step: int, loss: float, message: str | None = None):
        self.step = int(step)
        self.loss = float(loss)
        super().__init__(
            message
            or f"training diverged: loss is {loss} at step {step}; stopped (the last good checkpoint, if any, is kept). "
            "Lower the learning rate or add warm-up/clipping."
        )


class RunExistsError(UserError, FileExistsError):
    """The output folder already holds checkpoints of a run and ``resume`` was not requested."""


class ConfigMismatchError(UserError, ValueError):
    """``resume`` with a config that differs from the checkpoint's in a field that must not change."""


class TrainingInterrupted(Exception):
    """SIGTERM or SIGINT arrived during :meth:`Trainer.fit`; a checkpoint of global step ``step``
    was saved (and committed) at the next step boundary. ``signum`` is the signal's number;
    ``fit(resume=True)`` continues bit-exactly."""

    def __init__(self, signum: int, step: int, out: Path | None):
        self.signum, self.step, self.out = int(signum), int(step), out
        name = signal.Signals(self.signum).name
        where = f"; checkpoint saved in {out}" if out is not None else ""
        super().__init__(f"stopped by {name} at step {self.step}{where}")


#: Signals that make :meth:`Trainer.fit` checkpoint at the next step boundary and stop.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class _StopSignals:
    """Context manager: while active, SIGTERM/SIGINT only record their number (``.signum``; a
    second SIGINT raises ``KeyboardInterrupt``); the previous handlers are put back on exit.
    Inactive outside the main thread."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without waiting for the checkpoint
        self.signum = signum

    def __enter__(self) -> _StopSignals:
        if self.enabled:
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def load_splits(config: TrainConfig, datasets: dict[str, ArrayDataset] | None = None) -> dict[str, ArrayDataset]:
    """The run's ``{'train', 'val', 'test'}`` splits: ``datasets`` or ``load_dataset(config.dataset,
    data_dir=..., val_size=..., seed=config.seed)``, cut to ``config.train_limit`` /
    ``config.eval_limit`` examples (the first ones). Shared with ``torch_ref/train.py``."""
    if datasets is None:
        datasets = load_dataset(
            config.dataset, data_dir=config.data_dir, val_size=config.val_size, seed=config.seed,
            image_size=config.image_size,
        )  # fmt: skip
    splits = dict(datasets)
    for split, limit in (("train", config.train_limit), ("val", config.eval_limit), ("test", config.eval_limit)):
        if split in splits and limit is not None and len(splits[split]) > limit:
            splits[split] = splits[split].subset(np.arange(limit))
    return splits


def open_splits(config: TrainConfig, datasets: dict[str, ArrayDataset] | None = None) -> dict[str, Any]:
    """:func:`load_splits`, or, when ``config.loader`` streams (:func:`jaxcnn.data.streaming.choose_loader`),
    :class:`~jaxcnn.data.streaming.StreamSplit` s of the image folder (same files per split)."""
    if datasets is None and config.dataset == "image_folder":
        from jaxcnn.data import streaming

        num, size = streaming.image_folder_summary(config.data_dir, config.image_size, config.augment)
        kind = streaming.choose_loader(
            config.loader, num_images=num, image_size=size, memory_limit_bytes=int(config.loader_memory_mb * 2**20),
            augment=config.augment,
        )  # fmt: skip
        if kind == "streaming":
            datasets = streaming.open_image_folder_splits(
                config.data_dir, val_size=config.val_size, seed=config.seed, image_size=config.image_size,
                recipe="imagenet" if config.augment == "imagenet" else "resize", workers=config.workers,
            )  # fmt: skip
    elif datasets is None and (config.loader == "streaming" or config.augment == "imagenet"):
        raise _UserValueError(
            f"the streaming loader (loader='streaming', augment='imagenet') cannot read dataset {config.dataset!r}",
            "use --dataset image_folder --data-dir DIR, or drop --loader streaming / --augment imagenet",
        )
    return load_splits(config, datasets)


def _mean(total: float, count: int) -> float:
    return total / count if count else float("nan")


def _acc(correct: int, count: int) -> float:
    return 100.0 * correct / count if count else float("nan")


class Trainer:
    """One training run: data, model, optimizer, compiled steps, checkpoints and outputs.

    Args:
      config: a :class:`TrainConfig` (or a dict of its fields).
      datasets: optional ``{'train', 'val', 'test'}`` :class:`ArrayDataset` s to use instead of
        loading ``config.dataset`` (images uint8 (N, H, W, C) NHWC).

    Attributes after construction: ``splits``, ``tx`` (optax), ``graphdef``/``eval_graphdef``,
    ``state`` (:class:`TrainState`, replaced by every step; its buffers are donated),
    ``steps`` (:class:`~jaxcnn.train.step.StepFunctions`), ``train_loader``,
    ``steps_per_epoch``, ``num_classes``, ``num_params``. :meth:`trained_model` returns the
    model with the current weights.
    """

    def __init__(self, config: TrainConfig | dict[str, Any], *, datasets: dict[str, ArrayDataset] | None = None):
        if not isinstance(config, TrainConfig):
            config = TrainConfig.from_dict(config)
        if config.compute_dtype == "float64":
            _check_x64()
        self.splits = open_splits(config, datasets)
        train = self.splits["train"]
        num_classes = config.num_classes or train.num_classes
        self.config = config = config.replace(num_classes=int(num_classes))
        self.num_classes = int(num_classes)

        self.mesh = make_mesh() if config.data_parallel else None
        self.train_loader = make_loader(
            train, config.batch_size, shuffle=True, seed=config.seed, drop_last=config.drop_last,
            augment=config.augment, crop_padding=config.crop_padding, flip=config.flip,
            sharding=None if self.mesh is None else batch_sharding(self.mesh),
        )  # fmt: skip
        self.steps_per_epoch = len(self.train_loader)
        self._eval_loaders: dict[str, DeviceLoader | StreamingLoader | None] = {}

        model = jaxcnn.models.create(
            config.model, num_classes=self.num_classes, rngs=nnx.Rngs(config.seed), **config.model_options
        )
        compute_dtype = None if config.compute_dtype == "float32" else jnp.dtype(config.compute_dtype)
        if config.compute_dtype == "float64":
            model = _to_float64(model)
        self.tx = self._make_optimizer(config, self.steps_per_epoch)
        self.graphdef, self.eval_graphdef, self.state = create_train_state(model, self.tx)
        self.steps = make_steps(
            self.graphdef, self.eval_graphdef, self.tx, label_smoothing=config.label_smoothing,
            aux_loss_weight=config.resolved_aux_loss_weight, compute_dtype=compute_dtype,
            matmul_precision=config.matmul_precision,
        )  # fmt: skip
        if self.mesh is not None:
            self.state = replicate(self.state, self.mesh)
            replicated = replicated_sharding(self.mesh)
            self.steps = self.steps._replace(
                train_step=data_parallel(self.steps.train_step, self.mesh),
                # evaluation batches may not divide by the device count: every device scores
                # the whole (replicated) batch
                eval_step=jax.jit(self.steps.eval_step, in_shardings=replicated, out_shardings=replicated),
            )
        self.num_params = int(sum(x.size for x in jax.tree.leaves(self.state.params)))
        self._check_input_size()

    def _check_input_size(self) -> None:
        """Trace the eval step on one abstract batch of the training images (no compile, no
        FLOPs); :class:`~jaxcnn.models.registry.InputSizeError` when the model cannot take them."""
        train = self.splits["train"]
        shape = tuple(int(d) for d in (train.image_shape if isinstance(train, StreamSplit) else train.images.shape[1:]))
        if shape == jaxcnn.models.registry.input_size_or_none(self.config.model):
            return  # the model's usual input: nothing a user could have got wrong
        x = jax.ShapeDtypeStruct((1, *shape), jnp.float32)  # the loaders' normalised batches
        y = jax.ShapeDtypeStruct((1,), jnp.int32)
        trace = lambda: jax.eval_shape(self.steps.eval_step, self.state, x, y)  # noqa: E731
        jaxcnn.models.registry.check_input_size(self.config.model, shape, trace)

    # ------------------------------------------------------------------------------ set-up
    @staticmethod
    def _make_optimizer(config: TrainConfig, steps_per_epoch: int):
        schedule = None
        if config.schedule != "constant" or config.warmup_epochs:
            schedule = schedules.from_epochs(
                config.schedule, config.lr, steps_per_epoch=steps_per_epoch, epochs=config.epochs,
                step_size=config.step_size, milestones=config.milestones, gamma=config.gamma,
                eta_min=config.eta_min, warmup_epochs=config.warmup_epochs,
            )  # fmt: skip
        return jaxcnn.optim.create(
            config.optimizer, lr=config.lr, schedule=schedule, momentum=config.momentum, nesterov=config.nesterov,
            weight_decay=config.weight_decay, betas=config.betas, eps=config.eps,
        )  # fmt: skip

    def eval_loader(self, split: str) -> DeviceLoader | StreamingLoader | None:
        """The (cached) in-order loader of ``split``; ``None`` when the split is empty or missing."""
        if split not in self._eval_loaders:
            data = self.splits.get(split)
            self._eval_loaders[split] = (
                None if data is None or len(data) == 0
                else make_loader(data, self.config.eval_batch_size, shuffle=False, drop_last=False, seed=self.config.seed)
            )  # fmt: skip
        return self._eval_loaders[split]

    # -------------------------------------------------------------------------- evaluation
    def evaluate(self, split: str = "test", state: TrainState | None = None) -> tuple[float, float]:
        """``(mean loss, accuracy in percent)`` of ``state`` (default: the current one) on ``split``
        in evaluation mode; ``(nan, nan)`` for an empty split."""
        loader = self.eval_loader(split)
        if loader is None:
            return float("nan"), float("nan")
        state = self.state if state is None else state
        metrics = [self.steps.eval_step(state, x, y) for x, y in loader.iter_epoch(0)]
        if isinstance(loader, StreamingLoader):
            loader.close()  # its worker processes are not needed until the next evaluation
        loss_sum = correct = count = 0
        for m in jax.device_get(metrics):
            n = int(m["count"])
            loss_sum += float(m["loss"]) * n
            correct += int(m["correct"])
            count += n
        return _mean(loss_sum, count), _acc(correct, count)

    def trained_model(self, *, eval_mode: bool = True) -> nnx.Module:
        """The model with the current parameters and statistics (a fresh object sharing no
        buffers with the training state), in evaluation mode unless ``eval_mode=False``."""
        state = jax.tree.map(jnp.copy, self.state)
        return state_to_model(self.eval_graphdef if eval_mode else self.graphdef, state)

    # ------------------------------------------------------------------------------ paths
    @property
    def out_dir(self) -> Path | None:
        """The run folder, or ``None`` when nothing is written."""
        return None if self.config.out is None else Path(self.config.out).expanduser()

    @property
    def checkpoint_dir(self) -> Path | None:
        return None if self.out_dir is None else self.out_dir / "checkpoints"

    # ------------------------------------------------------------------------------- train
    def fit(self, *, resume: bool = False, handle_signals: bool = True) -> dict[str, Any]:
        """Train for ``config.epochs`` epochs (or until ``config.max_steps``) and return the result
        dict (see :func:`experiment`). With an output folder, writes checkpoints, TensorBoard
        events, ``results.json`` and plots.

        Args:
          resume: continue from the newest checkpoint in ``<out>/checkpoints`` that restores (if
            any). A damaged step is reported on stderr (one line naming the step and the
            cause), left on disk, and the next newest is tried; when none restores,
            :class:`~jaxcnn.train.checkpoint.CheckpointDamagedError`. Without ``resume`` an
            output folder that already holds checkpoints raises :class:`RunExistsError`.
          handle_signals: with an output folder, in the main thread: SIGTERM and SIGINT (Ctrl-C)
            only set a flag while training; at the next step boundary the state is
            checkpointed, the write committed, and :class:`TrainingInterrupted` raised. The
            previous handlers are restored when ``fit`` returns.
        """
        cfg = self.config
        spe = self.steps_per_epoch
        history: dict[str, list[float]] = {k: [] for k in _HISTORY_KEYS}
        epoch_seconds: list[float] = []
        epoch, start_step = 0, 0
        partial = {"loss_sum": 0.0, "correct": 0, "count": 0, "seconds": 0.0}

        ckpt = None
        resumed_from = None
        if self.checkpoint_dir is not None:
            ckpt = RunCheckpointer(self.checkpoint_dir, keep=cfg.keep_checkpoints, async_save=cfg.async_checkpointing)
            latest = ckpt.latest_step()
            if latest is not None and not resume:
                ckpt.close()
                raise RunExistsError(
                    f"{self.out_dir} already holds checkpoints (latest step {latest})",
                    "pass --resume (resume=True) to continue that run, --overwrite to start again, or another --out",
                )
            if latest is not None:
                def warn(error: CheckpointDamagedError) -> None:
                    print(f"warning: {error.what}; left on disk, trying the previous checkpoint", file=sys.stderr, flush=True)

                try:
                    latest, self.state, meta = ckpt.restore_newest(
                        self.state, on_damaged=warn, check_meta=lambda m: self._check_resumable(m["config"])
                    )
                except BaseException:
                    ckpt.close()
                    raise
                if self.mesh is not None:
                    self.state = replicate(self.state, self.mesh)
                epoch, start_step = int(meta["epoch"]), int(meta["step_in_epoch"])
                if isinstance(self.train_loader, StreamingLoader) and meta.get("loader"):
                    self.train_loader.load_state_dict(meta["loader"])  # grain's iterator state
                history = {k: list(meta["history"][k]) for k in _HISTORY_KEYS}
                epoch_seconds = list(meta.get("epoch_seconds", []))
                partial = dict(meta["partial"])
                resumed_from = latest
                if cfg.progress:
                    print(f"resuming from checkpoint step {latest} (epoch {epoch}, step {start_step})", flush=True)
            write_json_atomic(self.out_dir / "config.json", cfg.to_dict())

        global_step = int(jax.device_get(self.state.step))
        if global_step != epoch * spe + start_step:
            raise RuntimeError(f"checkpoint step {global_step} does not match its data position ({epoch}, {start_step})")
        tb = TensorBoardLogger(
            None if self.out_dir is None else self.out_dir / "tensorboard",
            enabled=cfg.tensorboard, purge_step=global_step or None,
        )  # fmt: skip
        pending: list[tuple[int, dict[str, jax.Array]]] = []
        stopped = False
        train_start = time.perf_counter()

        def meta(epoch_: int, step_in_epoch: int) -> dict[str, Any]:
            return {
                "config": cfg.to_dict(), "epoch": epoch_, "step_in_epoch": step_in_epoch,
                "global_step": global_step, "steps_per_epoch": spe, "history": history,
                "epoch_seconds": epoch_seconds, "partial": partial, "framework": "jax",
                **({"loader": self.train_loader.state_dict()} if isinstance(self.train_loader, StreamingLoader) else {}),
            }  # fmt: skip

        def flush(bar) -> None:
            if not pending:
                return
            fetched = jax.device_get([m for _, m in pending])
            losses = []
            for (step, _), m in zip(pending, fetched):
                loss = float(m["loss"])
                if not math.isfinite(loss):
                    pending.clear()
                    raise TrainingDivergedError(step, loss)
                n = int(m["count"])
                partial["loss_sum"] += loss * n
                partial["correct"] += int(m["correct"])
                partial["count"] += n
                losses.append(loss)
            bar.update(len(fetched))
            bar.set_postfix(loss=f"{losses[-1]:.4f}", acc=f"{_acc(partial['correct'], partial['count']):.2f}")
            tb.scalar("train/batch_loss", float(np.mean(losses)), pending[-1][0])
            pending.clear()

        def save(epoch_: int, step_in_epoch: int) -> None:
            if ckpt is None:
                return
            try:
                ckpt.save(global_step, self.state, meta(epoch_, step_in_epoch))
            except NonFiniteStateError as error:
                ckpt.wait()
                raise TrainingDivergedError(global_step, float("nan"), f"training diverged: {error}") from error

        def interrupt(epoch_: int, step_in_epoch: int, bar=None) -> None:
            """Checkpoint at this step boundary, wait for the commit, raise TrainingInterrupted."""
            if bar is not None:
                flush(bar)
                bar.close()
            save(epoch_, step_in_epoch)
            if ckpt is not None:
                ckpt.wait()
            raise TrainingInterrupted(signals.signum, global_step, self.out_dir)

        if cfg.max_steps is not None and global_step >= cfg.max_steps and epoch < cfg.epochs:
            stopped = True
        signals = _StopSignals(handle_signals and ckpt is not None)
        try:
            signals.__enter__()
            while epoch < cfg.epochs and not stopped:
                if signals.signum is not None:
                    interrupt(epoch, start_step)
                bar = progress_bar(spe, initial=start_step, desc=f"epoch {epoch + 1}/{cfg.epochs}", enabled=cfg.progress)
                t0 = time.perf_counter()
                step_in_epoch = start_step
                for x, y in self.train_loader.iter_epoch(epoch, start_step):
                    self.state, metrics = self.steps.train_step(self.state, x, y)
                    global_step += 1
                    step_in_epoch += 1
                    pending.append((global_step, metrics))
                    last_of_epoch = step_in_epoch == spe
                    if len(pending) >= cfg.log_every:
                        flush(bar)
                    if cfg.max_steps is not None and global_step >= cfg.max_steps and not last_of_epoch:
                        flush(bar)
                        partial["seconds"] += time.perf_counter() - t0
                        save(epoch, step_in_epoch)
                        stopped = True
                        break
                    if cfg.checkpoint_every and global_step % cfg.checkpoint_every == 0 and not last_of_epoch:
                        flush(bar)
                        seconds = partial["seconds"]
                        partial["seconds"] = seconds + time.perf_counter() - t0
                        save(epoch, step_in_epoch)
                        partial["seconds"] = seconds
                    if signals.signum is not None and not last_of_epoch:
                        partial["seconds"] += time.perf_counter() - t0
                        interrupt(epoch, step_in_epoch, bar)
                flush(bar)
                bar.close()
                if stopped:
                    break
                # ---- epoch end: train metrics, validation, checkpoint
                seconds = partial["seconds"] + time.perf_counter() - t0
                train_loss = _mean(partial["loss_sum"], partial["count"])
                train_acc = _acc(partial["correct"], partial["count"])
                val_loss, val_acc = self.evaluate("val")
                for key, value in zip(_HISTORY_KEYS, (train_loss, val_loss, train_acc, val_acc)):
                    history[key].append(value)
                epoch_seconds.append(seconds)
                if cfg.progress:
                    print(epoch_line(epoch, train_acc, val_acc, train_loss, val_loss, seconds), flush=True)
                tb.scalars(
                    {"loss/train": train_loss, "loss/val": val_loss, "accuracy/train": train_acc,
                     "accuracy/val": val_acc, "lr": float(jaxcnn.optim.get_lr(self.state.opt_state))},
                    epoch + 1,
                )  # fmt: skip
                tb.flush()
                epoch, start_step = epoch + 1, 0
                partial = {"loss_sum": 0.0, "correct": 0, "count": 0, "seconds": 0.0}
                save(epoch, 0)
                if cfg.max_steps is not None and global_step >= cfg.max_steps and epoch < cfg.epochs:
                    stopped = True
        finally:
            signals.__exit__()
            pending.clear()
            if isinstance(self.train_loader, StreamingLoader):
                self.train_loader.close()
            tb.close()
            if ckpt is not None:
                ckpt.close()

        complete = epoch >= cfg.epochs and not stopped
        result: dict[str, Any] = {k: list(v) for k, v in history.items()}
        result["train_acc"] = history["train_accs"][-1] if history["train_accs"] else float("nan")
        result["val_acc"] = history["val_accs"][-1] if history["val_accs"] else float("nan")
        result["train_loss"] = history["train_losses"][-1] if history["train_losses"] else float("nan")
        result["val_loss"] = history["val_losses"][-1] if history["val_losses"] else float("nan")
        test_loss, test_acc = self.evaluate("test") if complete else (float("nan"), float("nan"))
        result.update(
            test_acc=test_acc, test_loss=test_loss, epochs=len(history["train_losses"]), steps=global_step,
            steps_per_epoch=spe, complete=complete, num_params=self.num_params, epoch_seconds=epoch_seconds,
            run_seconds=time.perf_counter() - train_start, resumed_from=resumed_from, framework="jax",
            devices=1 if self.mesh is None else int(self.mesh.size),
        )  # fmt: skip
        if self.out_dir is not None:
            write_results(self.out_dir / "results.json", cfg.to_dict(), result, framework="jax")
            if cfg.plots and result["epochs"]:
                from jaxcnn.plots import save_plots

                save_plots(result, self.out_dir)
        return result

    def _check_resumable(self, saved: dict[str, Any]) -> None:
        check_resumable(saved, self.config.to_dict())


def check_resumable(saved: dict[str, Any], current: dict[str, Any]) -> None:
    """:class:`ConfigMismatchError` when the config ``current`` (a ``TrainConfig.to_dict()``)
    differs from the checkpoint's ``saved`` in a field other than the resumable ones (output,
    epochs, max_steps, checkpointing and logging). Shared with ``torch_ref/train.py``."""
    diffs = sorted(
        k for k in current
        if k not in _RESUMABLE_CHANGES and k in saved and _norm(saved[k]) != _norm(current[k])
    )  # fmt: skip
    if diffs:
        details = ", ".join(f"{k}: checkpoint {saved[k]!r} vs now {current[k]!r}" for k in diffs)
        raise ConfigMismatchError(
            f"cannot resume: the config differs from the checkpoint's ({details})",
            "resume with the run's own settings (its config.json), or start a new run in another --out",
        )


def _check_x64() -> None:
    """float64 arrays need ``jax_enable_x64``; a library does not change that process-wide
    setting, so the caller does (``jaxcnn train`` does it for ``--compute-dtype float64``)."""
    if not jax.config.read("jax_enable_x64"):
        raise _UserValueError(
            "compute_dtype='float64' needs 64-bit JAX",
            "call jax.config.update('jax_enable_x64', True) before building the Trainer (or set JAX_ENABLE_X64=1); "
            "`jaxcnn train --compute-dtype float64` does it",
        )


def _to_float64(model: nnx.Module) -> nnx.Module:
    """``model`` with every floating variable in float64 (``compute_dtype="float64"``)."""
    state = nnx.state(model)
    nnx.update(model, jax.tree.map(lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x, state))
    return model


class _UserValueError(UserError, ValueError):
    """A config this trainer cannot run (also a ``ValueError``)."""


def _norm(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_norm(v) for v in value]
    return value


def experiment(
    config: TrainConfig | dict[str, Any], *, datasets: dict[str, ArrayDataset] | None = None, resume: bool = False
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train one model and report per-epoch curves and final accuracies, like the course's
    ``experiment(partition, args)``.

    Args:
      config: a :class:`TrainConfig` or a dict of its fields (e.g. ``{"model": "mnist_cnn",
        "epochs": 3}``).
      datasets: optional splits to use instead of ``config.dataset`` (see :class:`Trainer`).
      resume: continue from the checkpoints in ``config.out`` (see :meth:`Trainer.fit`).

    Returns:
      ``(config_dict, result)``: every config field (with ``num_classes`` resolved), and
      ``result`` with ``train_losses``, ``val_losses``, ``train_accs``, ``val_accs`` (one entry per
      epoch; losses are mean cross entropy, accuracies percent), ``train_acc``, ``val_acc``
      (last epoch), ``test_acc``/``test_loss`` (test split after training), plus ``epochs``,
      ``steps``, ``steps_per_epoch``, ``complete``, ``num_params``, ``devices`` (how many the
      batch was split over: 1 unless ``data_parallel``), ``resumed_from`` (the
      checkpoint step this call resumed from, or ``None``) and timings (``epoch_seconds``,
      ``run_seconds``; with ``resumed_from`` the only entries that differ between runs).

    Raises:
      TrainingDivergedError: the loss became NaN/inf.
      RunExistsError: ``config.out`` holds checkpoints and ``resume`` is False.
    """
    trainer = Trainer(config, datasets=datasets)
    result = trainer.fit(resume=resume)
    return trainer.config.to_dict(), result


def evaluate_checkpoint(
    path: str | Path,
    *,
    split: str = "test",
    step: int | None = None,
    data_dir: str | None = None,
    batch_size: int | None = None,
    matmul_precision: str | None = None,
) -> dict[str, Any]:
    """Score a saved checkpoint on one split of the dataset it was trained on.

    Args:
      path: a run folder (``--out`` of ``jaxcnn train``), its ``checkpoints/`` folder or one
        step folder inside it.
      split: ``train``, ``val`` or ``test``.
      step: the global step to load (default: the newest checkpoint).
      data_dir: override the dataset folder recorded in the checkpoint's config.
      batch_size: evaluation batch size (default: the run's ``eval_batch_size``).
      matmul_precision: ``default``, ``high`` or ``highest`` (default: the run's setting).

    Returns:
      ``{"split", "loss", "accuracy" (percent), "examples", "step", "epoch", "checkpoint"}``.
    """
    from jaxcnn.train.checkpoint import find_checkpoint_dir

    directory = find_checkpoint_dir(path)
    if Path(path).name.isdigit() and step is None:
        step = int(Path(path).name)
    ckpt = RunCheckpointer(directory, read_only=True)
    try:
        meta = ckpt.read_meta(step)
        overrides: dict[str, Any] = {"out": None, "progress": False, "tensorboard": False, "plots": False}
        if data_dir is not None:
            overrides["data_dir"] = data_dir
        if batch_size is not None:
            overrides["eval_batch_size"] = batch_size
        if matmul_precision is not None:
            overrides["matmul_precision"] = matmul_precision
        config = TrainConfig.from_dict(meta["config"]).replace(**overrides)
        trainer = Trainer(config)
        if split not in trainer.splits:
            raise ValueError(f"unknown split {split!r}; expected one of {sorted(trainer.splits)}")
        try:
            trainer.state, meta = ckpt.restore(trainer.state, step)
        except CheckpointDamagedError as error:
            others = [str(s) for s in ckpt.all_steps() if s != error.step]
            raise CheckpointDamagedError(
                error.step, error.cause,
                f"evaluate another step with --step N (this run also has {', '.join(others)})" if others
                else "no other step of this run is left; train again",
            ) from error
    finally:
        ckpt.close()
    loss, accuracy = trainer.evaluate(split)
    return {
        "split": split, "loss": loss, "accuracy": accuracy, "examples": len(trainer.splits[split]),
        "step": int(meta["global_step"]), "epoch": int(meta["epoch"]), "checkpoint": str(directory),
        "model": config.model, "dataset": config.dataset,
    }  # fmt: skip
