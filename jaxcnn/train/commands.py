"""The ``jaxcnn train`` and ``jaxcnn evaluate`` subcommands.

``jaxcnn.cli`` registers them with :func:`add_train_parser` and :func:`add_evaluate_parser`;
each sets ``func(args) -> int`` (the exit status) on its subparser.

Examples::

    jaxcnn train                                       # mnist_cnn on the bundled digits
    jaxcnn train --model mnist_cnn --dataset mnist --data-dir ~/data/mnist --epochs 5
    jaxcnn train --config run.toml --lr 0.01           # file values, then flag overrides
    jaxcnn train --out runs/a --resume                 # continue an interrupted run
    jaxcnn evaluate --checkpoint runs/a --split test
    jaxcnn train --model resnet50 --dataset image_folder --data-dir DIR --image-size 224 --augment imagenet

Config precedence: :class:`~jaxcnn.train.config.TrainConfig` defaults < ``--config FILE``
(JSON, YAML or TOML) < flags given on the command line. Without ``--out`` the run goes to
``runs/<model>-<dataset>`` (or ``-2``, ``-3``, ... when that folder already holds a run; with
``--resume`` the newest of them is continued).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path
from typing import Any

from jaxcnn.errors import LazyChoices, UnknownNameError
from jaxcnn.train.config import TrainConfig, load_config_file

__all__ = ["add_evaluate_parser", "add_train_parser", "check_names", "config_from_args", "evaluate_command", "train_command"]

_S = argparse.SUPPRESS
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
#: Exit status of ``jaxcnn train`` stopped by a signal after checkpointing: 128 + the signal's
#: number, as a shell reports a process the signal ended (130 SIGINT, 143 SIGTERM).
SIGNAL_EXIT_BASE = 128


def _model_names() -> list[str]:
    import jaxcnn.models

    return jaxcnn.models.names()


def _dataset_names() -> list[str]:
    from jaxcnn.data.registry import dataset_names

    return dataset_names()


def check_names(config: TrainConfig) -> None:
    """:class:`~jaxcnn.errors.UnknownNameError` (with close-match suggestions) for an unknown
    model, dataset or optimizer in ``config`` (e.g. from a config file), before any work."""
    for kind, name, choices in (
        ("model", config.model, _model_names()),
        ("dataset", config.dataset, _dataset_names()),
        ("optimizer", config.optimizer, OPTIMIZERS),
    ):
        if name not in choices:
            raise UnknownNameError(kind, name, choices)


def _int_list(text: str) -> list[int]:
    return [int(v) for v in text.replace(",", " ").split()]


def _key_value(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return key.strip(), parsed


def _augment(text: str) -> bool | str:
    if text in ("imagenet", "crop"):
        return "imagenet" if text == "imagenet" else True
    raise argparse.ArgumentTypeError(f"--augment takes no value, 'crop' or 'imagenet', got {text!r}")


def add_train_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``train``: trains a model, writes checkpoints, results.json, plots and TensorBoard
    events to ``--out``, and prints the final test accuracy."""
    d = TrainConfig()
    p = subparsers.add_parser(
        "train",
        help="train a model (default: mnist_cnn on the bundled digits)",
        description="Train a jaxcnn model with PyTorch-equivalent optimizers. Flags override --config "
        "values, which override the defaults shown in brackets.",
    )
    p.add_argument("--config", metavar="FILE", default=None, help="JSON/YAML/TOML file of TrainConfig fields")
    g = p.add_argument_group("model and data")
    g.add_argument("--model", default=_S, metavar="NAME", choices=LazyChoices(_model_names), help=f"model name (jaxcnn.models.names()) [{d.model}]")
    g.add_argument("--model-option", dest="model_options", action="append", type=_key_value, default=_S,
                   metavar="KEY=VALUE", help="extra model constructor option (JSON value), repeatable")  # fmt: skip
    g.add_argument("--dataset", default=_S, metavar="NAME", choices=LazyChoices(_dataset_names), help=f"dataset name (jaxcnn.data.dataset_names()) [{d.dataset}]")
    g.add_argument("--data-dir", default=_S, help="folder with the dataset's files")
    g.add_argument("--val-size", type=float, default=_S, help="validation examples (>=1) or fraction (<1)")
    g.add_argument("--train-limit", type=int, default=_S, help="use only the first N training examples")
    g.add_argument("--eval-limit", type=int, default=_S, help="use only the first N val/test examples")
    g = p.add_argument_group("optimisation")
    g.add_argument("--optimizer", default=_S, choices=OPTIMIZERS, help=f"[{d.optimizer}]")
    g.add_argument("--lr", type=float, default=_S, help=f"learning rate [{d.lr}]")
    g.add_argument("--momentum", type=float, default=_S, help=f"SGD/RMSprop momentum [{d.momentum}]")
    g.add_argument("--nesterov", action="store_true", default=_S, help="Nesterov momentum (SGD)")
    g.add_argument("--weight-decay", type=float, default=_S, help="weight decay [torch's default per optimizer]")
    g.add_argument("--schedule", default=_S, choices=["constant", "step", "multistep", "cosine"], help=f"lr schedule [{d.schedule}]")
    g.add_argument("--step-size", type=int, default=_S, help="StepLR period in epochs")
    g.add_argument("--milestones", type=_int_list, default=_S, help="MultiStepLR epochs, e.g. 30,60")
    g.add_argument("--gamma", type=float, default=_S, help=f"StepLR/MultiStepLR factor [{d.gamma}]")
    g.add_argument("--warmup-epochs", type=int, default=_S, help="linear warm-up epochs [0]")
    g.add_argument("--epochs", type=int, default=_S, help=f"[{d.epochs}]")
    g.add_argument("--batch-size", type=int, default=_S, help=f"[{d.batch_size}]")
    g.add_argument("--eval-batch-size", type=int, default=_S, help=f"[{d.eval_batch_size}]")
    g.add_argument("--drop-last", action="store_true", default=_S, help="drop the last partial training batch")
    g.add_argument("--label-smoothing", type=float, default=_S, help="[0]")
    g.add_argument("--aux-loss-weight", type=float, default=_S, help="auxiliary classifier loss weight [0.3 for GoogLeNet]")
    g.add_argument("--augment", nargs="?", const=True, type=_augment, default=_S, metavar="imagenet",
                   help="random crop + horizontal flip; --augment imagenet: torchvision's RandomResizedCrop + flip "
                   "(train), Resize + CenterCrop (eval), streaming loader")  # fmt: skip
    g.add_argument("--no-augment", dest="augment", action="store_false", default=_S, help="no augmentation")
    g.add_argument("--crop-padding", type=int, default=_S, help=f"random-crop padding [{d.crop_padding}]")
    g.add_argument("--no-flip", dest="flip", action="store_false", default=_S, help="no horizontal flips when augmenting")
    g.add_argument("--compute-dtype", default=_S, choices=["float32", "bfloat16", "float16", "float64"],
                   help="bfloat16/float16: mixed precision (autocast's rules); float64: verify a port "
                   "(turns on jax_enable_x64) [float32]")  # fmt: skip
    g.add_argument("--matmul-precision", default=_S, choices=["default", "high", "highest"],
                   help="conv/matmul precision inside the steps; highest: full float32 on GPUs [default]")
    g.add_argument("--data-parallel", action="store_const", const=True, default=_S,
                   help="split batches over all local devices: the GPUs, or on a CPU-only machine one CPU "
                   "device per core (XLA_FLAGS=--xla_force_host_platform_device_count=N chooses another count)")  # fmt: skip
    g.add_argument("--seed", type=int, default=_S, help=f"[{d.seed}]")
    g.add_argument("--image-size", type=int, default=_S, help="image side for image_folder [first image's; 224 with imagenet]")
    g.add_argument("--loader", default=_S, choices=["auto", "memory", "streaming"],
                   help=f"input pipeline: in memory, or streamed by grain workers [{d.loader}]")  # fmt: skip
    g.add_argument("--workers", type=int, default=_S, help="streaming loader worker processes [CPU cores]")
    g.add_argument("--loader-memory-mb", type=float, default=_S, help=f"auto streams above this decoded size [{d.loader_memory_mb}]")
    g = p.add_argument_group("output")
    g.add_argument("--out", default=_S, help="run folder [runs/<model>-<dataset>]")
    g.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    g.add_argument("--overwrite", action="store_true", help="delete an existing run in --out first")
    g.add_argument("--checkpoint-every", type=int, default=_S, help="also checkpoint every N steps [0: epoch ends]")
    g.add_argument("--keep-checkpoints", type=int, default=_S, help=f"[{d.keep_checkpoints}]")
    g.add_argument("--sync-checkpoints", dest="async_checkpointing", action="store_false", default=_S,
                   help="write checkpoints synchronously")  # fmt: skip
    g.add_argument("--log-every", type=int, default=_S, help=f"steps between metric fetches [{d.log_every}]")
    g.add_argument("--max-steps", type=int, default=_S, help="stop (resumably) after this global step")
    g.add_argument("--no-progress", dest="progress", action="store_false", default=_S, help="no progress bar / epoch lines")
    g.add_argument("--no-tensorboard", dest="tensorboard", action="store_false", default=_S, help="no event logs")
    g.add_argument("--no-plots", dest="plots", action="store_false", default=_S, help="no PNG plots")
    p.set_defaults(func=train_command)
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults < ``args.config`` file < the flags present in ``args``."""
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        values.update(load_config_file(args.config))
    fields = set(TrainConfig.field_names())
    for name, value in vars(args).items():
        if name in fields:
            if name == "model_options":
                value = {**values.get("model_options", {}), **dict(value)}
            elif name == "val_size" and value is not None and value >= 1:
                value = int(value)
            values[name] = value
    return TrainConfig.from_dict(values)


def _default_out(config: TrainConfig, resume: bool, overwrite: bool) -> str:
    base = Path("runs") / f"{config.model}-{config.dataset}"
    candidates = [base] + [base.with_name(f"{base.name}-{i}") for i in range(2, 1000)]
    used = [c for c in candidates if (c / "checkpoints").exists() or (c / "results.json").exists()]
    if resume or overwrite:
        return str(used[-1] if used else base)
    return str(next(c for c in candidates if c not in used))


def train_command(args: argparse.Namespace) -> int:
    """Run ``jaxcnn train``; returns 0 on success, 1 when training diverged, 128 + the signal's
    number when SIGINT/SIGTERM stopped it after checkpointing. User errors (unknown names, missing
    data, damaged checkpoints, ...) are raised as :class:`~jaxcnn.errors.UserError` before the
    run starts where they can be checked; ``jaxcnn.cli`` turns them into one line and status 2."""
    from jaxcnn.train.experiment import RunExistsError, Trainer, TrainingDivergedError, TrainingInterrupted

    config = config_from_args(args)
    check_names(config)
    if config.compute_dtype == "float64":
        import jax

        jax.config.update("jax_enable_x64", True)  # this program owns the process
    if config.data_parallel:
        from jaxcnn._platform import use_host_devices

        use_host_devices()  # CPU-only machine: one JAX device per core (an accelerator's devices otherwise)
    if config.out is None:
        config = config.replace(out=_default_out(config, args.resume, args.overwrite))
    out = Path(config.out)
    steps = sorted(int(p.name) for p in (out / "checkpoints").glob("*") if p.name.isdigit())
    if steps and not (args.resume or args.overwrite):
        raise RunExistsError(
            f"{out} already holds checkpoints (latest step {steps[-1]})",
            "pass --resume to continue that run, --overwrite to start again, or another --out",
        )
    trainer = Trainer(config)  # loads the data and builds the model: the remaining up-front checks
    if args.overwrite and not args.resume:
        for name in ("checkpoints", "tensorboard"):
            shutil.rmtree(out / name, ignore_errors=True)
        for name in ("results.json", "config.json", "loss.png", "accuracy.png"):
            (out / name).unlink(missing_ok=True)
    if config.progress:
        print(f"jaxcnn train: {config.model} on {config.dataset}, {config.optimizer} lr={config.lr}, "
              f"{config.epochs} epochs, batch {config.batch_size}, seed {config.seed} -> {out}", flush=True)  # fmt: skip
    try:
        result = trainer.fit(resume=args.resume)
    except TrainingDivergedError as error:
        print(f"jaxcnn train: {error}", file=sys.stderr)
        return 1
    except TrainingInterrupted as stop:
        print(f"jaxcnn train: {stop}; continue with: jaxcnn train --resume --out {out}", file=sys.stderr, flush=True)
        return SIGNAL_EXIT_BASE + stop.signum
    if result["complete"]:
        test = result["test_acc"]
        print(f"test accuracy: {test:.2f}% (loss {result['test_loss']:.4f})" if not math.isnan(test)
              else "test accuracy: n/a (empty test split)")  # fmt: skip
    else:
        print(f"stopped at step {result['steps']} (max_steps); continue with --resume --out {out}")
    print(f"results: {out / 'results.json'}")
    return 0


def add_evaluate_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``evaluate``: scores a checkpoint on a split and prints loss and accuracy."""
    p = subparsers.add_parser(
        "evaluate",
        help="score a training checkpoint on a dataset split",
        description="Load a checkpoint written by `jaxcnn train` and evaluate it (eval mode).",
    )
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="run folder, its checkpoints/ or a step folder")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="[test]")
    p.add_argument("--step", type=int, default=None, help="checkpoint step [newest]")
    p.add_argument("--data-dir", default=None, help="override the dataset folder recorded in the checkpoint")
    p.add_argument("--batch-size", type=int, default=None, help="evaluation batch size")
    p.add_argument("--matmul-precision", default=None, choices=["default", "high", "highest"],
                   help="conv/matmul precision [the run's]")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")
    p.set_defaults(func=evaluate_command)
    return p


def evaluate_command(args: argparse.Namespace) -> int:
    """Run ``jaxcnn evaluate``; returns 0. A missing or damaged checkpoint raises a
    :class:`~jaxcnn.errors.UserError` (``jaxcnn.cli``: one line, status 2)."""
    from jaxcnn.train.experiment import evaluate_checkpoint

    report = evaluate_checkpoint(
        args.checkpoint, split=args.split, step=args.step, data_dir=args.data_dir, batch_size=args.batch_size,
        matmul_precision=args.matmul_precision,
    )  # fmt: skip
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"{report['model']} on {report['dataset']}/{report['split']} ({report['examples']} examples), "
            f"checkpoint step {report['step']} (epoch {report['epoch']}): "
            f"accuracy {report['accuracy']:.2f}%, loss {report['loss']:.4f}"
        )
    return 0
