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
from jaxcnn.optim import schedules
from jaxcnn.train.checkpoint import NonFiniteStateError, RunCheckpointer
from jaxcnn.train.config import TrainConfig
from jaxcnn.train.logging import TensorBoardLogger, epoch_line, progress_bar, write_json_atomic, write_results
from jaxcnn.train.state import TrainState, create_train_state, state_to_model
from jaxcnn.train.distributed import batch_sharding, data_parallel, make_mesh, replicate, replicated_sharding
from jaxcnn.train.step import make_steps

__all__ = ["RunExistsError", "Trainer", "TrainingDivergedError", "evaluate_checkpoint", "experiment", "load_splits"]

_HISTORY_KEYS = ("train_losses", "val_losses", "train_accs", "val_accs")
#: Config fields that may differ between an interrupted run and its resumption.
_RESUMABLE_CHANGES = frozenset(
    {"out", "data_dir", "epochs", "max_steps", "checkpoint_every", "keep_checkpoints", "async_checkpointing",
     "log_every", "progress", "tensorboard", "plots", "eval_batch_size"}
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


class RunExistsError(FileExistsError):
    """The output folder already holds checkpoints of a run and ``resume`` was not requested."""


def load_splits(config: TrainConfig, datasets: dict[str, ArrayDataset] | None = None) -> dict[str, ArrayDataset]:
    """The run's ``{'train', 'val', 'test'}`` splits: ``datasets`` or ``load_dataset(config.dataset,
    data_dir=..., val_size=..., seed=config.seed)``, cut to ``config.train_limit`` /
    ``config.eval_limit`` examples (the first ones). Shared with ``torch_ref/train.py``."""
    if datasets is None:
        datasets = load_dataset(config.dataset, data_dir=config.data_dir, val_size=config.val_size, seed=config.seed)
    splits = dict(datasets)
    for split, limit in (("train", config.train_limit), ("val", config.eval_limit), ("test", config.eval_limit)):
        if split in splits and limit is not None and len(splits[split]) > limit:
            splits[split] = splits[split].subset(np.arange(limit))
    return splits


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
        self.splits = load_splits(config, datasets)
        train = self.splits["train"]
        num_classes = config.num_classes or train.num_classes
        self.config = config = config.replace(num_classes=int(num_classes))
        self.num_classes = int(num_classes)

        self.mesh = make_mesh() if config.data_parallel else None
        self.train_loader = DeviceLoader(
            train, config.batch_size, shuffle=True, seed=config.seed, drop_last=config.drop_last,
            augment=config.augment, crop_padding=config.crop_padding, flip=config.flip,
            sharding=None if self.mesh is None else batch_sharding(self.mesh),
        )  # fmt: skip
        self.steps_per_epoch = len(self.train_loader)
        self._eval_loaders: dict[str, DeviceLoader | None] = {}

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

    def eval_loader(self, split: str) -> DeviceLoader | None:
        """The (cached) in-order loader of ``split``; ``None`` when the split is empty or missing."""
        if split not in self._eval_loaders:
            data = self.splits.get(split)
            self._eval_loaders[split] = (
                None if data is None or len(data) == 0
                else DeviceLoader(data, self.config.eval_batch_size, shuffle=False, drop_last=False, seed=self.config.seed)
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
    def fit(self, *, resume: bool = False) -> dict[str, Any]:
        """Train for ``config.epochs`` epochs (or until ``config.max_steps``) and return the result
        dict (see :func:`experiment`). With an output folder, writes checkpoints, TensorBoard
        events, ``results.json`` and plots.

        Args:
          resume: continue from the newest checkpoint in ``<out>/checkpoints`` (if any). Without
            it an output folder that already holds checkpoints raises :class:`RunExistsError`.
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
                    f"{self.out_dir} already holds checkpoints (latest step {latest}); pass resume=True "
                    "(--resume) to continue that run, or choose another output folder"
                )
            if latest is not None:
                self.state, meta = ckpt.restore(self.state)
                if self.mesh is not None:
                    self.state = replicate(self.state, self.mesh)
                self._check_resumable(meta["config"])
                epoch, start_step = int(meta["epoch"]), int(meta["step_in_epoch"])
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

        if cfg.max_steps is not None and global_step >= cfg.max_steps and epoch < cfg.epochs:
            stopped = True
        try:
            while epoch < cfg.epochs and not stopped:
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
            pending.clear()
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
        current = self.config.to_dict()
        diffs = sorted(
            k for k in current
            if k not in _RESUMABLE_CHANGES and k in saved and _norm(saved[k]) != _norm(current[k])
        )  # fmt: skip
        if diffs:
            details = ", ".join(f"{k}: checkpoint {saved[k]!r} vs now {current[k]!r}" for k in diffs)
            raise ValueError(f"cannot resume: the config differs from the checkpoint's ({details})")


def _check_x64() -> None:
    """float64 arrays need ``jax_enable_x64``; a library does not change that process-wide
    setting, so the caller does (``jaxcnn train`` does it for ``--compute-dtype float64``)."""
    if not jax.config.read("jax_enable_x64"):
        raise ValueError(
            "compute_dtype='float64' needs 64-bit JAX: call jax.config.update('jax_enable_x64', True) "
            "before building the Trainer (or set JAX_ENABLE_X64=1); `jaxcnn train --compute-dtype float64` does it"
        )


def _to_float64(model: nnx.Module) -> nnx.Module:
    """``model`` with every floating variable in float64 (``compute_dtype="float64"``)."""
    state = nnx.state(model)
    nnx.update(model, jax.tree.map(lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x, state))
    return model


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
        trainer.state, meta = ckpt.restore(trainer.state, step)
    finally:
        ckpt.close()
    loss, accuracy = trainer.evaluate(split)
    return {
        "split": split, "loss": loss, "accuracy": accuracy, "examples": len(trainer.splits[split]),
        "step": int(meta["global_step"]), "epoch": int(meta["epoch"]), "checkpoint": str(directory),
        "model": config.model, "dataset": config.dataset,
    }  # fmt: skip
