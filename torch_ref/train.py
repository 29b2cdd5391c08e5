"""PyTorch reference trainer with ``jaxcnn train``'s options, for run-for-run comparisons.

Usage (same flags as ``jaxcnn train``; see ``--help``)::

    python -m torch_ref.train --model mnist_cnn --dataset digits --optimizer sgd --lr 0.05 --epochs 10 --out runs/torch-digits

It trains the ``torch_ref.models`` twin of the model on the *same* ``jaxcnn.data`` splits
(same seed, same train/val/test examples and normalisation statistics, NHWC uint8 converted to
NCHW float), with ``torch.optim`` (SGD/Adam/AdamW/RMSprop with the same hyper-parameters and
torch defaults), torch's ``CrossEntropyLoss(label_smoothing=...)`` and the same learning-rate
schedule stepped once per optimizer step (``StepLR``/``MultiStepLR``/``CosineAnnealingLR`` with
epoch quantities multiplied by the steps per epoch, ``LinearLR`` + ``SequentialLR`` for warm-up;
identical to :func:`jaxcnn.optim.schedules.from_epochs`). It writes the same ``results.json``
format (``framework: "torch"``), ``loss.png``/``accuracy.png``, TensorBoard events and the final
``model.pt`` (``state_dict``).

Extra options (torch side only):

* ``--init jax`` (default) copies the initial weights of the jaxcnn model built with the same
  seed (``jaxcnn.convert``), ``--init torch`` uses torch's own initialisation
  (``torch.manual_seed(seed)``).
* ``--batch-order jax`` (default) draws each batch (shuffle and augmentation) from
  ``jaxcnn.data.DeviceLoader`` exactly as ``jaxcnn train`` does; ``--batch-order torch`` uses a
  seeded ``torch.utils.data.DataLoader`` with per-image random crop + flip in torch.
* ``--device`` (``cpu``/``cuda``; default cuda when available).

With ``--init jax --batch-order jax`` the two frameworks start from identical weights and see
identical batches, so (without Dropout, whose masks cannot match) their curves differ only by
floating-point rounding.

Checkpoints: with ``--out`` the run writes ``<out>/checkpoints/torch_last.pt`` (atomically: a
temporary file renamed) at every epoch end, every ``--checkpoint-every`` steps and when
``--max-steps`` stops it: model, optimizer and scheduler state dicts, torch's RNG state (Dropout),
the ``--batch-order torch`` sampler's generator state and current permutation, the data position
(epoch, step in epoch, global step), the history and the current epoch's partial sums.
``--resume`` continues from it to the same final weights as an uninterrupted run (on the CPU:
bitwise).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import torch_ref.models
from jaxcnn.train.commands import add_train_parser, config_from_args
from jaxcnn.train.config import TrainConfig
from jaxcnn.train.logging import TensorBoardLogger, epoch_line, progress_bar, write_results

__all__ = ["build_optimizer", "build_scheduler", "main", "train"]

_HISTORY_KEYS = ("train_losses", "val_losses", "train_accs", "val_accs")


def build_parser() -> argparse.ArgumentParser:
    """The ``jaxcnn train`` parser plus the torch-only options."""
    from jaxcnn.cli import Parser  # one-line usage errors with close-match suggestions

    parser = Parser(prog="python -m torch_ref.train", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    train_parser = add_train_parser(sub)
    train_parser.prog = "python -m torch_ref.train"
    g = train_parser.add_argument_group("torch reference")
    g.add_argument("--init", choices=["jax", "torch"], default="jax", help="initial weights [jax]")
    g.add_argument("--batch-order", choices=["jax", "torch"], default="jax", help="batch sampler [jax]")
    g.add_argument("--device", default=None, help="torch device [cuda if available, else cpu]")
    return train_parser


def build_optimizer(config: TrainConfig, params) -> torch.optim.Optimizer:
    """``torch.optim`` equivalent of :func:`jaxcnn.optim.create` for ``config``."""
    name = config.optimizer.lower()
    kwargs: dict[str, Any] = {"lr": config.lr}
    if config.weight_decay is not None:
        kwargs["weight_decay"] = config.weight_decay
    if name == "sgd":
        return torch.optim.SGD(params, momentum=config.momentum, nesterov=config.nesterov, **kwargs)
    if config.eps is not None:
        kwargs["eps"] = config.eps
    if name == "adam":
        return torch.optim.Adam(params, betas=tuple(config.betas), **kwargs)
    if name == "adamw":
        return torch.optim.AdamW(params, betas=tuple(config.betas), **kwargs)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, momentum=config.momentum, **kwargs)
    raise ValueError(f"unknown optimizer {config.optimizer!r}")


def build_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    """Per-step torch scheduler matching :func:`jaxcnn.optim.schedules.from_epochs`; ``None`` for
    a constant learning rate."""
    sched = torch.optim.lr_scheduler
    spe = steps_per_epoch
    warm = config.warmup_epochs * spe
    if config.schedule == "constant" and not warm:
        return None
    if config.schedule == "constant":
        main = sched.LambdaLR(optimizer, lambda _: 1.0)
    elif config.schedule == "step":
        if config.step_size is None:
            raise ValueError("schedule 'step' needs --step-size")
        main = sched.StepLR(optimizer, step_size=config.step_size * spe, gamma=config.gamma)
    elif config.schedule == "multistep":
        if config.milestones is None:
            raise ValueError("schedule 'multistep' needs --milestones")
        main = sched.MultiStepLR(optimizer, milestones=[m * spe for m in config.milestones], gamma=config.gamma)
    else:
        main = sched.CosineAnnealingLR(optimizer, T_max=config.epochs * spe - warm, eta_min=config.eta_min)
    if not warm:
        return main
    warmup = sched.LinearLR(optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=warm)
    return sched.SequentialLR(optimizer, [warmup, main], milestones=[warm])


def _nchw(images_u8: np.ndarray, mean, std, device) -> torch.Tensor:
    """uint8 (B, H, W, C) -> normalised float32 (B, C, H, W), the formula of jaxcnn's normalize."""
    x = torch.from_numpy(np.ascontiguousarray(images_u8)).to(device).float() / 255.0
    x = (x - torch.tensor(mean, dtype=torch.float32, device=device)) / torch.tensor(std, dtype=torch.float32, device=device)
    return x.permute(0, 3, 1, 2).contiguous()


def _for_loss(logits: torch.Tensor) -> torch.Tensor:
    """Logits in the loss's precision: float32, or float64 for a float64 model (jaxcnn's ``model_loss`` rule)."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def _logits(outputs):
    if isinstance(outputs, (tuple, list)):
        return outputs[0], tuple(outputs[1:])
    return outputs, ()


def _init_from_jax(model: nn.Module, config: TrainConfig, num_classes: int) -> bool:
    try:
        import jaxcnn.models
        from flax import nnx

        from jaxcnn.convert import to_torch_state_dict
    except ImportError:  # pragma: no cover
        return False
    if config.model not in jaxcnn.models.names():
        return False
    jax_model = jaxcnn.models.create(config.model, num_classes=num_classes, rngs=nnx.Rngs(config.seed), **config.model_options)
    model.load_state_dict(to_torch_state_dict(jax_model))
    return True


class _TorchBatches:
    """Seeded torch DataLoader over uint8 NHWC arrays with optional per-image crop + flip."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, config: TrainConfig):
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.labels = torch.from_numpy(labels.astype(np.int64))
        self.config = config
        self.generator = torch.Generator().manual_seed(config.seed)
        n, bs = len(labels), config.batch_size
        self.steps = n // bs if config.drop_last else math.ceil(n / bs)

    def __len__(self) -> int:
        return self.steps

    def epoch(self, start_step: int = 0):
        """Batches ``start_step...`` of a new epoch; with ``start_step > 0`` (a resumed run) the
        permutation ``self.perm`` and the generator state restored from the checkpoint are used."""
        n, bs, cfg = len(self.labels), self.config.batch_size, self.config
        if start_step == 0:
            self.perm = torch.randperm(n, generator=self.generator)
        perm = self.perm
        for s in range(start_step, self.steps):
            idx = perm[s * bs : (s + 1) * bs]
            x = self.images[idx]
            if cfg.augment:
                x = self._augment(x)
            yield x.numpy(), self.labels[idx]

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        p = self.config.crop_padding
        if p:
            padded = F.pad(x.permute(0, 3, 1, 2), (p, p, p, p)).permute(0, 2, 3, 1)
            offs = torch.randint(0, 2 * p + 1, (b, 2), generator=self.generator)
            x = torch.stack([padded[i, oy : oy + h, ox : ox + w] for i, (oy, ox) in enumerate(offs.tolist())])
        if self.config.flip:
            mirror = torch.rand(b, generator=self.generator) < 0.5
            x = torch.where(mirror[:, None, None, None], x.flip(2), x)
        return x


def _evaluate(model, criterion, split, config: TrainConfig, mean, std, device) -> tuple[float, float]:
    if split is None or len(split) == 0:
        return float("nan"), float("nan")
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for start in range(0, len(split), config.eval_batch_size):
            stop = start + config.eval_batch_size
            x = _nchw(split.images[start:stop], mean, std, device).to(next(model.parameters()).dtype)
            y = torch.from_numpy(split.labels[start:stop].astype(np.int64)).to(device)
            logits, _ = _logits(model(x))
            logits = _for_loss(logits)
            n = int(y.shape[0])
            loss_sum += float(criterion(logits, y)) * n
            correct += int((logits.argmax(1) == y).sum())
            count += n
    return loss_sum / count, 100.0 * correct / count


CHECKPOINT_NAME = "torch_last.pt"


def _save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """``torch.save`` to a temporary file, then rename: a crash leaves the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path: Path) -> dict[str, Any]:
    from jaxcnn.errors import BadFileError, MissingFileError

    if not path.is_file():
        raise MissingFileError(f"no torch checkpoint at {path}", "train without --resume first, or check --out")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged file: torch's error types vary
        raise BadFileError(
            f"cannot read {path} ({type(error).__name__})", "start the run again with --overwrite"
        ) from error


def train(
    config: TrainConfig, *, init: str = "jax", batch_order: str = "jax", device: str | None = None, resume: bool = False
) -> dict[str, Any]:
    """Train ``config`` in PyTorch; returns the result dict of :func:`jaxcnn.train.experiment`'s
    format and writes outputs to ``config.out`` (if set). With ``resume`` it continues from
    ``<out>/checkpoints/torch_last.pt``; ``config.max_steps`` stops it resumably."""
    from jaxcnn.train.experiment import RunExistsError, check_resumable, load_splits

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    splits = load_splits(config)
    train_split = splits["train"]
    num_classes = config.num_classes or train_split.num_classes
    config = config.replace(num_classes=int(num_classes))
    mean, std = train_split.mean, train_split.std

    model = torch_ref.models.create(config.model, num_classes=num_classes, **config.model_options)
    if init == "jax" and not _init_from_jax(model, config, num_classes):
        print(f"torch_ref.train: no jaxcnn twin of {config.model!r}; using torch's initialisation", file=sys.stderr)
    model.to(device)
    if config.compute_dtype == "float64":  # verifying a port: everything in float64, as jaxcnn's Trainer does
        model.double()
    if batch_order == "jax":
        from jaxcnn.data import DeviceLoader

        loader = DeviceLoader(
            train_split, config.batch_size, shuffle=True, seed=config.seed, drop_last=config.drop_last,
            augment=config.augment, crop_padding=config.crop_padding, flip=config.flip, normalize=False,
        )  # fmt: skip
        spe = len(loader)

        def batches(epoch: int, start_step: int = 0):
            for x, y in loader.iter_epoch(epoch, start_step):
                yield np.array(x), torch.from_numpy(np.array(y, dtype=np.int64))
    else:
        torch_loader = _TorchBatches(train_split.images, train_split.labels, config)
        spe = len(torch_loader)

        def batches(epoch: int, start_step: int = 0):
            yield from torch_loader.epoch(start_step)

    optimizer = build_optimizer(config, model.parameters())
    scheduler = build_scheduler(config, optimizer, spe)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    aux_weight = config.resolved_aux_loss_weight
    autocast_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(config.compute_dtype)
    out = None if config.out is None else Path(config.out)
    tb = TensorBoardLogger(None if out is None else out / "tensorboard", enabled=config.tensorboard)

    history: dict[str, list[float]] = {k: [] for k in _HISTORY_KEYS}
    epoch_seconds: list[float] = []
    step, start_epoch, start_step = 0, 0, 0
    partial = {"loss_sum": 0.0, "correct": 0, "count": 0}
    ckpt_path = None if out is None else out / "checkpoints" / CHECKPOINT_NAME
    resumed_from = None
    if resume:
        if ckpt_path is None:
            raise ValueError("resume=True needs config.out (the run folder)")
        saved = _load_checkpoint(ckpt_path)
        check_resumable(saved["config"], config.to_dict())
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["torch_rng"])
        if batch_order == "torch":
            torch_loader.generator.set_state(saved["batch_rng"])
            torch_loader.perm = saved["perm"]
        step, start_epoch, start_step = int(saved["step"]), int(saved["epoch"]), int(saved["step_in_epoch"])
        history = {k: list(saved["history"][k]) for k in _HISTORY_KEYS}
        epoch_seconds, partial = list(saved["epoch_seconds"]), dict(saved["partial"])
        resumed_from = step
        if config.progress:
            print(f"resuming from step {step} (epoch {start_epoch}, step {start_step})", flush=True)
    elif ckpt_path is not None and ckpt_path.is_file():
        raise RunExistsError(f"{out} already holds a torch checkpoint", "pass --resume to continue that run, or another --out")

    def save(epoch_: int, step_in_epoch: int) -> None:
        if ckpt_path is None:
            return
        _save_checkpoint(ckpt_path, {
            "config": config.to_dict(), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": None if scheduler is None else scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
            "batch_rng": torch_loader.generator.get_state() if batch_order == "torch" else None,
            "perm": getattr(torch_loader, "perm", None) if batch_order == "torch" else None,
            "step": step, "epoch": epoch_, "step_in_epoch": step_in_epoch, "history": history,
            "epoch_seconds": epoch_seconds, "partial": dict(partial), "framework": "torch",
        })  # fmt: skip

    stopped = config.max_steps is not None and step >= config.max_steps and start_epoch < config.epochs
    run_start = time.perf_counter()
    for epoch in range(start_epoch, config.epochs):
        if stopped:
            break
        model.train()
        t0 = time.perf_counter()
        first = start_step if epoch == start_epoch else 0
        if first == 0:
            partial = {"loss_sum": 0.0, "correct": 0, "count": 0}
        step_in_epoch = first
        bar = progress_bar(spe, initial=first, desc=f"epoch {epoch + 1}/{config.epochs}", enabled=config.progress)
        for images, labels in batches(epoch, first):
            x = _nchw(images, mean, std, device).to(next(model.parameters()).dtype)
            y = labels.to(device)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                logits, extras = _logits(model(x))
                logits = _for_loss(logits)
                loss = criterion(logits, y)
                total = loss
                if aux_weight:
                    for extra in extras:
                        if isinstance(extra, torch.Tensor) and extra.shape == logits.shape:
                            total = total + aux_weight * criterion(_for_loss(extra), y)
            total.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            step += 1
            step_in_epoch += 1
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"training diverged: loss is {value} at step {step}")
            n = int(y.shape[0])
            partial["loss_sum"] += value * n
            partial["correct"] += int((logits.argmax(1) == y).sum())
            partial["count"] += n
            bar.update(1)
            if step % config.log_every == 0:
                bar.set_postfix(loss=f"{value:.4f}", acc=f"{100.0 * partial['correct'] / partial['count']:.2f}")
                tb.scalar("train/batch_loss", value, step)
            if step_in_epoch < spe:
                if config.max_steps is not None and step >= config.max_steps:
                    save(epoch, step_in_epoch)
                    stopped = True
                    break
                if config.checkpoint_every and step % config.checkpoint_every == 0:
                    save(epoch, step_in_epoch)
        bar.close()
        if stopped:
            break
        seconds = time.perf_counter() - t0
        loss_sum, correct, count = partial["loss_sum"], partial["correct"], partial["count"]
        train_loss, train_acc = loss_sum / count, 100.0 * correct / count
        val_loss, val_acc = _evaluate(model, criterion, splits.get("val"), config, mean, std, device)
        for key, value in zip(_HISTORY_KEYS, (train_loss, val_loss, train_acc, val_acc)):
            history[key].append(value)
        epoch_seconds.append(seconds)
        tb.scalars({"loss/train": train_loss, "loss/val": val_loss, "accuracy/train": train_acc, "accuracy/val": val_acc,
                    "lr": optimizer.param_groups[0]["lr"]}, epoch + 1)  # fmt: skip
        if config.progress:
            print(epoch_line(epoch, train_acc, val_acc, train_loss, val_loss, seconds), flush=True)
        save(epoch + 1, 0)
        if config.max_steps is not None and step >= config.max_steps and epoch + 1 < config.epochs:
            stopped = True
    tb.close()
    complete = not stopped
    test_loss, test_acc = (
        _evaluate(model, criterion, splits.get("test"), config, mean, std, device) if complete else (math.nan, math.nan)
    )
    result: dict[str, Any] = {k: list(v) for k, v in history.items()}
    last = {k: (v[-1] if v else float("nan")) for k, v in history.items()}
    result.update(
        train_acc=last["train_accs"], val_acc=last["val_accs"], train_loss=last["train_losses"],
        val_loss=last["val_losses"], test_acc=test_acc, test_loss=test_loss, epochs=len(history["train_losses"]),
        steps=step, steps_per_epoch=spe, complete=complete, num_params=sum(p.numel() for p in model.parameters()),
        epoch_seconds=epoch_seconds, run_seconds=time.perf_counter() - run_start, framework="torch",
        resumed_from=resumed_from, init=init, batch_order=batch_order, devices=1,
    )  # fmt: skip
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_results(out / "results.json", config.to_dict(), result, framework="torch")
        torch.save(model.state_dict(), out / "model.pt")
        if config.plots:
            from jaxcnn.plots import save_plots

            save_plots(result, out)
    if config.progress and complete:
        print(f"test accuracy: {test_acc:.2f}% (loss {test_loss:.4f})", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``python -m torch_ref.train``): 0 done, 1 stopped early
    (``--max-steps``; continue with ``--resume``), 2 a user error (one line on stderr)."""
    from jaxcnn import configure_platform
    from jaxcnn.cli import run_command

    configure_platform()  # quiet CPU JAX for --init jax; glibc's allocator stays at its defaults
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_command(_main, args, parser.prog)


def _main(args: argparse.Namespace) -> int:
    from jaxcnn.train.commands import check_names

    config = config_from_args(args)
    check_names(config)
    if config.out is None:
        config = config.replace(out=f"runs/torch-{config.model}-{config.dataset}")
    if args.overwrite and not args.resume:
        (Path(config.out) / "checkpoints" / CHECKPOINT_NAME).unlink(missing_ok=True)
    result = train(config, init=args.init, batch_order=args.batch_order, device=args.device, resume=args.resume)
    if not result["complete"]:
        print(f"stopped at step {result['steps']} (max_steps); continue with --resume --out {config.out}")
    print(f"results: {Path(config.out) / 'results.json'}")
    return 0 if result["complete"] else 1


if __name__ == "__main__":
    sys.exit(main())
