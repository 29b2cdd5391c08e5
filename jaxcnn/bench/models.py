"""The benchmark's model table: which models, at which input size and batch, on which platform.

Inputs are NHWC on the JAX side (``input_size`` is (H, W, C)); the torch side gets the same
array transposed to NCHW.
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["GPU_MODEL_CONFIGS", "LR", "MODEL_CONFIGS", "MOMENTUM", "NUM_CLASSES", "ModelConfig", "default_models", "inputs", "model_configs"]

NUM_CLASSES = 10
LR, MOMENTUM = 0.01, 0.9


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """One benchmarked model: the registry name on both sides, input (H, W, C), default batch.

    ``pairs`` restricts the precision pairs timed on an accelerator (``None``: all of them; see
    :func:`jaxcnn.bench.modes.plan_modes`).
    """

    name: str
    input_size: tuple[int, int, int]
    batch_size: int
    torch_compile: bool = True  # torch.compile by default (where it finishes in reasonable time)
    max_seconds: float = 8.0  # time budget per measured mode (steps are cut short beyond it)
    pairs: tuple[str, ...] | None = None


#: CPU defaults: small inputs and batches a 2-core machine times in seconds.
MODEL_CONFIGS: dict[str, ModelConfig] = {
    "mlp": ModelConfig("mlp", (28, 28, 1), 64),
    "mnist_cnn": ModelConfig("mnist_cnn", (28, 28, 1), 64),
    "cifar_cnn": ModelConfig("cifar_cnn", (32, 32, 3), 128),
    "cifar_resnet18": ModelConfig("cifar_resnet18", (32, 32, 3), 32, torch_compile=False, max_seconds=20.0),
    "gap_vgg": ModelConfig("gap_vgg", (32, 32, 3), 32, max_seconds=15.0),
    "resnet50": ModelConfig("resnet50", (64, 64, 3), 8, torch_compile=False, max_seconds=20.0),
}

#: Accelerator defaults: ImageNet-size inputs at the batch sizes a GPU user picks. densenet121
#: times the bf16 pair only by default (each XLA compile of its step takes ~50 s on an H200).
GPU_MODEL_CONFIGS: dict[str, ModelConfig] = {
    "mnist_cnn": ModelConfig("mnist_cnn", (28, 28, 1), 256, max_seconds=3.0),
    "cifar_resnet18": ModelConfig("cifar_resnet18", (32, 32, 3), 256, max_seconds=4.0),
    "resnet50": ModelConfig("resnet50", (224, 224, 3), 128, max_seconds=6.0),
    "densenet121": ModelConfig("densenet121", (224, 224, 3), 64, max_seconds=6.0, pairs=("bf16",)),
}


def model_configs(accelerator: bool) -> dict[str, ModelConfig]:
    """Every benchmarkable model: the platform's defaults first, then the other table's entries."""
    first, second = (GPU_MODEL_CONFIGS, MODEL_CONFIGS) if accelerator else (MODEL_CONFIGS, GPU_MODEL_CONFIGS)
    return {**second, **first}


def default_models(accelerator: bool) -> tuple[str, ...]:
    """The models ``jaxcnn bench`` times when none are named."""
    return tuple(GPU_MODEL_CONFIGS if accelerator else MODEL_CONFIGS)


def inputs(cfg: ModelConfig, batch: int) -> tuple[Any, Any]:
    """The benchmark batch: NHWC float32 images (B, H, W, C) and int32 labels (B,), the same for every mode."""
    import numpy as np

    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((batch, *cfg.input_size), dtype=np.float32)
    return x_np, rng.integers(0, NUM_CLASSES, size=(batch,)).astype(np.int32)
