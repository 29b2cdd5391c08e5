"""The torch side of a benchmark mode: the torch_ref twin, its batch and its optimizer on one device.

Everything a mode touches is created on ``mode.device`` (``cpu`` or ``cuda``): the model is
moved there before its ``torch.optim.SGD`` (same hyper-parameters as jaxcnn's) is built, and
the batch (the JAX side's NHWC array, transposed to NCHW) is put there with ``device=``. On
CUDA ``sync`` is ``torch.cuda.synchronize``; the TF32 flags are process-wide in torch, so each
mode sets its own (``enter``) before each of its turns.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import numpy as np

from jaxcnn.bench.models import LR, MOMENTUM, NUM_CLASSES, ModelConfig
from jaxcnn.bench.modes import Mode

__all__ = ["set_precision_flags", "torch_setup"]


def _logits(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def set_precision_flags(mode: Mode) -> None:
    """Set torch's process-wide TF32 and cuDNN autotuning flags to ``mode``'s (``None``: leave as is)."""
    import torch

    if mode.tf32_conv is not None:
        torch.backends.cudnn.allow_tf32 = mode.tf32_conv
    if mode.tf32_matmul is not None:
        torch.backends.cuda.matmul.allow_tf32 = mode.tf32_matmul
    if mode.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True


def torch_setup(cfg: ModelConfig, x_np: np.ndarray, y_np: np.ndarray, mode: Mode) -> dict[str, Any]:
    """``mode``'s train/eval steps of ``cfg``'s torch_ref twin on the batch ``x_np`` (B, H, W, C), ``y_np`` (B,).

    Returns ``{"train", "eval", "sync", "enter", "device", "model", "optimizer"}`` and the first
    train and eval steps' times (``first_step_s``, ``first_eval_s``; for ``torch.compile`` also
    ``compile_s``, ``eval_compile_s``: its compilation).
    """
    import torch

    import torch_ref.models

    device = torch.device(mode.device)
    set_precision_flags(mode)
    torch.manual_seed(0)
    model = torch_ref.models.create(cfg.name, num_classes=NUM_CLASSES).to(device)
    x = torch.as_tensor(np.ascontiguousarray(x_np.transpose(0, 3, 1, 2)), device=device)
    y = torch.as_tensor(y_np.astype(np.int64), device=device)
    if mode.memory_format == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    criterion = torch.nn.CrossEntropyLoss()
    fwd = torch.compile(model) if mode.compile else model

    def autocast():
        return torch.autocast(device.type, dtype=getattr(torch, mode.autocast)) if mode.autocast else contextlib.nullcontext()

    def forward_loss():
        with autocast():
            return criterion(_logits(fwd(x)).float(), y)

    def train_step() -> None:
        model.train()
        opt.zero_grad(set_to_none=True)
        forward_loss().backward()
        opt.step()

    def eval_step() -> None:
        model.eval()
        with torch.no_grad():
            forward_loss()

    if device.type == "cuda":

        def sync() -> None:
            torch.cuda.synchronize(device)

    else:

        def sync() -> None:
            pass  # torch on the CPU returns from a step when it is done

    result: dict[str, Any] = {
        "train": train_step, "eval": eval_step, "sync": sync, "enter": lambda: set_precision_flags(mode),
        "device": str(device), "model": model, "optimizer": opt,
    }  # fmt: skip
    # The first steps: torch.compile's compilation, cuDNN's autotuning (cudnn.benchmark).
    t0 = time.perf_counter()
    train_step()
    sync()
    result["first_step_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    eval_step()
    sync()
    result["first_eval_s"] = time.perf_counter() - t0
    if mode.compile:
        result["compile_s"], result["eval_compile_s"] = result["first_step_s"], result["first_eval_s"]
    return result
