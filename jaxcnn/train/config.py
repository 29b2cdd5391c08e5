"""The training configuration: one dataclass, loadable from JSON, YAML or TOML files.

Precedence, lowest first: the dataclass defaults, a config file (``--config FILE``), explicit
command-line flags. Unknown keys are an error (a typo never passes silently).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jaxcnn.errors import UserError, did_you_mean

__all__ = ["ConfigError", "ConfigKeyError", "TrainConfig", "load_config_file"]

_COMPUTE_DTYPES = ("float32", "bfloat16", "float16", "float64")
_MATMUL_PRECISIONS = ("default", "high", "highest")
_SCHEDULES = ("constant", "step", "multistep", "cosine")


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run (all fields JSON-serialisable).

    Model and data:
      model: a :func:`jaxcnn.models.names` entry (default ``mnist_cnn``).
      model_options: extra keyword options for the model constructor (e.g. ``{"dropout": 0.2}``).
      dataset: a :func:`jaxcnn.data.dataset_names` entry (default ``digits``: bundled, no files).
      data_dir: folder of the dataset's files (default: ``$JAXCNN_DATA_DIR/<name>``).
      val_size: validation examples (int) or fraction; ``None``: the dataset's default.
      num_classes: ``None``: taken from the dataset.
      train_limit, eval_limit: use only the first N examples of the training split / of each of
        the validation and test splits (quick experiments and tests); ``None``: all.

    Optimisation (torch semantics, :func:`jaxcnn.optim.create`):
      optimizer: ``sgd``, ``adam``, ``adamw`` or ``rmsprop``.
      lr, momentum, nesterov, weight_decay (``None``: torch's default for the optimizer),
      betas, eps (``None``: torch's default).
      schedule: ``constant``, ``step`` (``step_size`` epochs), ``multistep`` (``milestones``
        epochs), ``cosine`` (over ``epochs``); ``gamma``, ``eta_min``; ``warmup_epochs`` adds a
        linear warm-up (:func:`jaxcnn.optim.schedules.from_epochs`). Updated every step.
      epochs, batch_size (training), eval_batch_size, drop_last (drop the last partial
        training batch; ``False`` like torch's DataLoader).
      label_smoothing: torch's ``CrossEntropyLoss(label_smoothing=...)``.
      aux_loss_weight: weight of auxiliary classifier losses; ``None``: 0.3 for ``googlenet*``
        (the GoogLeNet paper / torchvision recipe), else 0.
      augment: ``True``: random crop (``crop_padding``) + horizontal flip (``flip``) of training
        images; ``"imagenet"``: torchvision's RandomResizedCrop + flip for training and Resize +
        CenterCrop for evaluation, at ``image_size`` (needs the streaming loader).
      image_size: image side the images are resized/cropped to (image_folder; ``None``: the
        first image's size, 224 with ``augment="imagenet"``).
      loader: ``auto`` (stream when the decoded dataset would exceed ``loader_memory_mb``, or
        with ``augment="imagenet"``), ``memory`` (:class:`jaxcnn.data.DeviceLoader`, the whole
        dataset on the device) or ``streaming`` (:mod:`jaxcnn.data.streaming`, image_folder).
      workers: worker processes of the streaming loader (``None``: one per CPU core).
      compute_dtype: ``float32``; ``bfloat16``/``float16`` mixed precision with torch autocast's
        rules (float32 master weights, BatchNorm and the loss in float32); or ``float64``
        (weights, statistics and optimizer state in float64, for verifying a port against
        torch in float64; needs ``jax_enable_x64``, which ``jaxcnn train`` turns on, see
        ``docs/precision.md``).
      matmul_precision: ``default`` (the backend's; TF32-class products on GPUs), ``high`` or
        ``highest`` (full float32 convolutions and matmuls), applied inside the jitted steps.
      data_parallel: split each training batch over all local devices (a ``jax.sharding`` mesh
        over the batch axis, state replicated; see :mod:`jaxcnn.train.distributed`). The batch
        size must divide by the device count (use ``drop_last`` for a ragged last batch).
      loader_memory_mb: the decoded size above which ``loader="auto"`` streams.
      seed: seeds the model initialisation, the train/val split, the shuffling, augmentation and
        Dropout. Same seed, same machine: same numbers.

    Output:
      out: run folder (checkpoints, ``results.json``, plots, TensorBoard events); ``None``:
        write nothing (pure in-memory :func:`jaxcnn.train.experiment`).
      checkpoint_every: also checkpoint every N optimizer steps (0: only at epoch ends).
      keep_checkpoints: how many recent checkpoints to keep.
      async_checkpointing: write checkpoints in the background (orbax async).
      log_every: optimizer steps between host fetches of the step metrics (progress bar,
        TensorBoard, divergence check); a non-finite loss is detected at this granularity.
      progress, tensorboard, plots: toggle the tqdm bar, event logs and PNG plots.
      max_steps: stop after this global step (the run is then incomplete and resumable); used to
        simulate interruptions. ``None``: train all epochs.
    """

    model: str = "mnist_cnn"
    model_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    dataset: str = "digits"
    data_dir: str | None = None
    val_size: int | float | None = None
    num_classes: int | None = None
    train_limit: int | None = None
    eval_limit: int | None = None

    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float | None = None
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float | None = None
    schedule: str = "cosine"
    step_size: int | None = None
    milestones: list[int] | None = None
    gamma: float = 0.1
    eta_min: float = 0.0
    warmup_epochs: int = 0
    epochs: int = 10
    batch_size: int = 64
    eval_batch_size: int = 500
    drop_last: bool = False
    label_smoothing: float = 0.0
    aux_loss_weight: float | None = None
    augment: bool | str = False
    crop_padding: int = 4
    flip: bool = True
    compute_dtype: str = "float32"
    matmul_precision: str = "default"
    data_parallel: bool = False
    seed: int = 0
    image_size: int | None = None
    loader: str = "auto"
    loader_memory_mb: float = 2048.0
    workers: int | None = None

    out: str | None = None
    checkpoint_every: int = 0
    keep_checkpoints: int = 3
    async_checkpointing: bool = True
    log_every: int = 20
    progress: bool = True
    tensorboard: bool = True
    plots: bool = True
    max_steps: int | None = None

    def __post_init__(self) -> None:
        self.validate()

    # ---------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Check value ranges; raises ``ValueError`` naming the field."""
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        if self.milestones is not None:
            self.milestones = [int(m) for m in self.milestones]
        if self.model_options is None:
            self.model_options = {}
        checks = [
            (self.epochs >= 0, "epochs must be >= 0"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.eval_batch_size >= 1, "eval_batch_size must be >= 1"),
            (self.lr >= 0, "lr must be >= 0"),
            (0.0 <= self.label_smoothing < 1.0, "label_smoothing must be in [0, 1)"),
            (self.compute_dtype in _COMPUTE_DTYPES, f"compute_dtype must be one of {_COMPUTE_DTYPES}"),
            (self.matmul_precision in _MATMUL_PRECISIONS, f"matmul_precision must be one of {_MATMUL_PRECISIONS}"),
            (self.schedule in _SCHEDULES, f"schedule must be one of {_SCHEDULES}"),
            (self.checkpoint_every >= 0, "checkpoint_every must be >= 0"),
            (self.keep_checkpoints >= 1, "keep_checkpoints must be >= 1"),
            (self.log_every >= 1, "log_every must be >= 1"),
            (self.max_steps is None or self.max_steps >= 0, "max_steps must be >= 0"),
            (self.train_limit is None or self.train_limit >= 1, "train_limit must be >= 1"),
            (self.eval_limit is None or self.eval_limit >= 1, "eval_limit must be >= 1"),
            (self.augment in (True, False, "imagenet"), "augment must be true, false or 'imagenet'"),
            (self.loader in ("auto", "memory", "streaming"), "loader must be 'auto', 'memory' or 'streaming'"),
            (self.image_size is None or self.image_size >= 1, "image_size must be >= 1"),
            (self.workers is None or self.workers >= 0, "workers must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"invalid config: {message}", "change that value")

    @property
    def resolved_aux_loss_weight(self) -> float:
        """``aux_loss_weight``, with ``None`` resolved (0.3 for GoogLeNet, else 0)."""
        if self.aux_loss_weight is not None:
            return float(self.aux_loss_weight)
        return 0.3 if self.model.lower().startswith("googlenet") else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of every field."""
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def field_names(cls) -> list[str]:
        """Names of all fields, in declaration order."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, base: TrainConfig | None = None) -> TrainConfig:
        """Build a config from ``values`` (unknown keys raise ``ValueError``), on top of ``base``
        (default: the defaults). Dashes in keys are accepted for underscores (``batch-size``)."""
        known = set(cls.field_names())
        fields = dict(base.to_dict()) if base is not None else {}
        unknown = []
        for key, value in values.items():
            name = str(key).replace("-", "_")
            if name not in known:
                unknown.append(str(key))
            fields[name] = value
        if unknown:
            raise ConfigKeyError(unknown, sorted(known))
        return cls(**fields)

    @classmethod
    def from_file(cls, path: str | os.PathLike, *, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
        """Load a ``.json``, ``.yaml``/``.yml`` or ``.toml`` file, then apply ``overrides``."""
        config = cls.from_dict(load_config_file(path))
        return cls.from_dict(overrides, base=config) if overrides else config

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated)."""
        return self.from_dict(changes, base=self)


class ConfigError(UserError, ValueError):
    """A config value, key or file the user must fix (a ``ValueError``)."""


class ConfigKeyError(ConfigError):
    """Unknown config keys (a ``ValueError``); the message suggests the closest valid keys."""

    def __init__(self, unknown: list[str], known: list[str]):
        hints = [did_you_mean(key, known).split(" (choose from")[0] for key in unknown]
        hints = [f"{key!r}: {hint}" for key, hint in zip(unknown, hints) if hint.startswith("did you")]
        super().__init__(
            f"unknown config keys: {', '.join(repr(k) for k in sorted(unknown))}",
            "; ".join(hints + [f"valid keys: {', '.join(known)}"]),
        )


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a JSON, YAML or TOML config file into a dict (by extension).

    A ``train`` table/section, if present, is used (so one file can hold other sections);
    YAML needs PyYAML installed.
    """
    path = Path(path).expanduser()
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror or error}", "check the path") from error
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path} is not valid JSON ({error})", "fix the file's syntax") from error
    elif suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as error:  # pragma: no cover - PyYAML is usually present
            raise ImportError("YAML config files need PyYAML: pip install pyyaml") from error
        data = yaml.safe_load(text) or {}
    elif suffix == ".toml":
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path} is not valid TOML ({error})", "fix the file's syntax") from error
    else:
        raise ConfigError(f"{path}: unknown config format {suffix!r}", "use a .json, .yaml/.yml or .toml file")
    if not isinstance(data, dict):
        raise ConfigError(f"{path} does not hold a mapping", "write option names and values, e.g. lr = 0.01")
    if isinstance(data.get("train"), dict):
        data = data["train"]
    return data
