"""The JAX side of a benchmark mode: jaxcnn's real jitted train and eval steps, compiled once.

The steps are :func:`jaxcnn.train.step.make_steps` (the model split once, one ``jax.jit`` with
the state donated, torch-equivalent SGD with momentum from :mod:`jaxcnn.optim`), fed NHWC
float32 images (B, H, W, C) and int32 labels (B,), on JAX's default device (or split over all
local devices for ``jax_dp``).

Precision: a mode's ``matmul_precision`` reaches the compiled step through
:func:`step_precision`: as ``make_steps(matmul_precision=...)`` where the train step takes that
option, else as a ``jax.default_matmul_precision`` context around the step's tracing and
compilation (JAX reads that setting at trace time, so the compiled step keeps it).
"""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from jaxcnn.bench.models import LR, MOMENTUM, NUM_CLASSES, ModelConfig
from jaxcnn.bench.modes import Mode

__all__ = ["jax_setup", "on_all_devices", "step_precision", "summary_flops"]


def step_precision(make_steps: Callable, matmul_precision: str | None) -> tuple[dict[str, Any], contextlib.AbstractContextManager]:
    """``(make_steps keyword options, context to trace and compile in)`` for ``matmul_precision``.

    ``None`` leaves JAX's default precision (no option, no context).
    """
    import jax

    if matmul_precision is None:
        return {}, contextlib.nullcontext()
    if "matmul_precision" in inspect.signature(make_steps).parameters:
        return {"matmul_precision": matmul_precision}, contextlib.nullcontext()
    return {}, jax.default_matmul_precision(matmul_precision)


def on_all_devices(train_step: Callable, eval_step: Callable, state: Any) -> tuple[Callable, Callable, Any, Any]:
    """The jitted steps data-parallel over every local device (the batch split, the state replicated).

    Returns ``(train_step, eval_step, state, batch_sharding)``; put each batch's images (B, H, W, C)
    and labels (B,) with ``batch_sharding``. Evaluation sums its metrics over the devices.
    """
    import jax

    from jaxcnn.train import distributed

    mesh = distributed.make_mesh(jax.local_devices())
    replicated, batch_sharded = distributed.replicated_sharding(mesh), distributed.batch_sharding(mesh)
    parallel_eval = jax.jit(eval_step, in_shardings=(replicated, batch_sharded, batch_sharded), out_shardings=replicated)
    return distributed.data_parallel(train_step, mesh), parallel_eval, distributed.replicate(state, mesh), batch_sharded


def jax_setup(cfg: ModelConfig, x_np: np.ndarray, y_np: np.ndarray, mode: Mode) -> dict[str, Any]:
    """Compile ``mode``'s train/eval steps for ``cfg``'s model on the batch ``(x_np, y_np)``.

    Returns ``{"train", "eval", "sync", "trace_s", "compile_s", "flops_per_step", "lowered_text", "model"}``:
    ``train``/``eval`` dispatch one step, ``sync`` waits for the state and metrics of every
    dispatched step; ``trace_s`` is trace + lower, ``compile_s`` XLA's compile of the train step.
    """
    import jax
    import jax.numpy as jnp

    from jaxcnn import models, optim
    from jaxcnn.train.state import create_train_state
    from jaxcnn.train.step import make_steps

    model = models.create(cfg.name, num_classes=NUM_CLASSES)
    tx = optim.sgd(LR, momentum=MOMENTUM)
    graphdef, eval_graphdef, state = create_train_state(model, tx)
    options, precision = step_precision(make_steps, mode.matmul_precision)
    compute_dtype = None if mode.compute_dtype is None else jnp.dtype(mode.compute_dtype)
    steps = make_steps(graphdef, eval_graphdef, tx, compute_dtype=compute_dtype, **options)
    jit_train, jit_eval, batch_sharding = steps.train_step, steps.eval_step, None
    if mode.data_parallel:
        jit_train, jit_eval, state, batch_sharding = on_all_devices(jit_train, jit_eval, state)
    shards = 1 if batch_sharding is None else batch_sharding.mesh.size
    x = jax.device_put(jnp.asarray(x_np), batch_sharding)
    y = jax.device_put(jnp.asarray(y_np), batch_sharding)

    with precision:
        t0 = time.perf_counter()
        lowered = jit_train.lower(state, x, y)
        t1 = time.perf_counter()
        train = lowered.compile()
        t2 = time.perf_counter()
        eval_fn = jit_eval.lower(state, x, y).compile()
    cost = train.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    flops = float((cost or {}).get("flops", float("nan"))) * shards  # a partitioned program reports one shard's

    holder: dict[str, Any] = {"state": state, "metrics": None}

    def train_step() -> None:
        holder["state"], holder["metrics"] = train(holder["state"], x, y)

    def eval_step() -> None:
        holder["metrics"] = eval_fn(holder["state"], x, y)

    def sync() -> None:
        jax.block_until_ready((holder["state"], holder["metrics"]))

    return {
        "train": train_step,
        "eval": eval_step,
        "sync": sync,
        "trace_s": t1 - t0,
        "compile_s": t2 - t1,
        "flops_per_step": flops,
        "lowered_text": lowered.as_text,
        "model": model,  # its arrays are the state's: usable until the first train step donates them
    }


def summary_flops(cfg: ModelConfig, batch: int, model: Any) -> float:
    """The course formula: multiply-adds per image * 2 (FLOPs) * 3 (forward + backward) * batch.

    ``model``: ``cfg``'s model (shapes only are used)."""
    from jaxcnn.summary import summarize

    return float(summarize(model, (1, *cfg.input_size)).total_mult_adds) * 2 * 3 * batch
