"""Side-by-side training/eval benchmark: jaxcnn (jitted JAX) against torch_ref (PyTorch), same run.

``jaxcnn bench`` (or ``python scripts/benchmark.py``) measures, in one process on one machine,
for each seed model:

* training-step throughput (images/s after warm-up, the median over windows of 4 steps, each
  window's wall time divided by 4; see "Timing" below) of jaxcnn's
  real jitted step (:func:`jaxcnn.train.step.make_train_step`: the model split once, one
  ``jax.jit`` with the state donated, torch-equivalent SGD with momentum from
  :mod:`jaxcnn.optim`) and of the torch_ref twin in eager, ``channels_last`` and
  ``torch.compile`` modes (``torch.optim.SGD``, same hyper-parameters). The modes are measured
  *interleaved* (a few steps of each in turn, round after round, the first two of each turn
  untimed) so machine load affects them alike; the table reports JAX/torch ratios;
* on a machine with several local JAX devices, also jaxcnn's data-parallel step over all of them
  (``jax_dp``: :func:`jaxcnn.train.distributed.data_parallel`, the batch split, gradients and
  BatchNorm statistics all-reduced). On a CPU-only machine ``jaxcnn bench`` first splits the CPU
  into one JAX device per core (``--host-devices N``; :func:`jaxcnn._platform.use_host_devices`),
  because XLA's CPU convolutions keep only ~1.5 of 2 cores busy while per-core shards run side by
  side; the single-device ``jax`` step runs on the first of those devices. ``cores_used`` (process
  CPU seconds per wall second) is recorded for every mode;
* JAX compile time, split into trace+lower and XLA compile (``jit(...).lower(...).compile()``),
  and torch.compile's first-step time;
* eval-step throughput of both (jaxcnn's jitted eval step; torch ``eval()`` + ``no_grad``);
* the input pipeline's throughput (:class:`jaxcnn.data.DeviceLoader` +
  :func:`jaxcnn.data.measure_throughput`, synthetic uint8 data of the model's input shape);
* achieved FLOP/s of the JAX train step: XLA's ``cost_analysis()`` flops of the compiled step
  divided by the step time, against the machine's float32 matmul peak measured in the same run
  (a jitted 2048^3 matmul). The course formula (``summarize(...).total_mult_adds * 2 * 3`` per
  image, forward + backward) is reported beside it.

With ``--time-to-accuracy`` it also trains mnist_cnn on the real MNIST t10k split
(``load_dataset('mnist_t10k')``: 7,000 train / 1,000 val / 2,000 test) until the *test* accuracy
reaches the target (97%), with the same SGD hyper-parameters, the same batches (from one
:class:`~jaxcnn.data.DeviceLoader`, converted to NCHW for torch) and the same initial weights,
evaluating after each epoch; wall time excludes the data loading but includes JAX's compile
and every evaluation. The loops call the step functions directly (jaxcnn's jitted steps; a
plain torch loop) so both sides do exactly the same work per epoch.

Timing: each framework's steps are run as its training loop runs them. jaxcnn's trainer
dispatches steps asynchronously (``jax.jit`` returns before the step has run) and fetches the
metrics every ``log_every`` steps, so the next step is dispatched while the last one computes;
the benchmark dispatches a window's 4 steps, then waits for the last one's outputs and state
(``jax.block_until_ready``). Torch eager, ``channels_last`` and ``torch.compile`` on the CPU
return from each step when it is done, so for them a window is 4 synchronous steps. The first
steps of every window start from an idle queue and the last waits for the end, so a window
overlaps less than the trainer's loop does. Before 2026-11-30 every step was timed on its own,
synchronously, which charged jaxcnn's dispatch (0.1-0.2 ms of mnist_cnn's 3 ms step) as if a
step could not be dispatched during the previous one.

Speed is never asserted anywhere: the JSON records what was measured and under which load
(``os.getloadavg()`` before and after).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_MODELS",
    "MODEL_CONFIGS",
    "ModelConfig",
    "add_bench_parser",
    "format_table",
    "main",
    "matmul_peak",
    "run",
    "run_benchmark",
    "time_to_accuracy",
]

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """One benchmarked model: the registry name on both sides, input (H, W, C), default batch."""

    name: str
    input_size: tuple[int, int, int]
    batch_size: int
    torch_compile: bool = True  # torch.compile on by default (it finishes in reasonable time)
    max_seconds: float = 8.0  # time budget per measured mode (steps are cut short beyond it)


MODEL_CONFIGS: dict[str, ModelConfig] = {
    "mlp": ModelConfig("mlp", (28, 28, 1), 64),
    "mnist_cnn": ModelConfig("mnist_cnn", (28, 28, 1), 64),
    "cifar_cnn": ModelConfig("cifar_cnn", (32, 32, 3), 128),
    "cifar_resnet18": ModelConfig("cifar_resnet18", (32, 32, 3), 32, torch_compile=False, max_seconds=20.0),
    "gap_vgg": ModelConfig("gap_vgg", (32, 32, 3), 32, max_seconds=15.0),
    "resnet50": ModelConfig("resnet50", (64, 64, 3), 8, torch_compile=False, max_seconds=20.0),
}
DEFAULT_MODELS = tuple(MODEL_CONFIGS)
NUM_CLASSES = 10
LR, MOMENTUM = 0.01, 0.9


# --------------------------------------------------------------------------------- helpers
def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def _load() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on every platform
        return []


def matmul_peak(size: int = 2048, repeats: int = 5) -> dict[str, float]:
    """Best-of-``repeats`` float32 ``size^3`` matmul GFLOP/s, JAX (jitted) and torch, interleaved."""
    import jax
    import jax.numpy as jnp
    import torch

    a = jnp.asarray(np.random.default_rng(0).standard_normal((size, size), np.float32))
    f = jax.jit(lambda x, y: x @ y)
    f(a, a).block_until_ready()
    ta = torch.from_numpy(np.asarray(a).copy())
    torch.mm(ta, ta)
    flops = 2.0 * size**3
    jt, tt = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(a, a).block_until_ready()
        jt.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        torch.mm(ta, ta)
        tt.append(time.perf_counter() - t0)
    return {"size": size, "jax_gflops": flops / min(jt) / 1e9, "torch_gflops": flops / min(tt) / 1e9}


class _Timer:
    """Step times of one mode, timed in windows: ``run(k)`` starts ``k`` steps, then waits for them.

    ``step()`` starts one step (jaxcnn: dispatches it and returns; torch: runs it) and
    ``sync()`` waits until every started step is done. Each window appends its wall time
    divided by ``k`` to ``times``, so the median of ``times`` is a per-step time. The process's
    CPU time is summed over the windows, so ``cores_used`` (CPU seconds per wall second) tells
    how many cores the mode kept busy.
    """

    def __init__(self, name: str, step: Callable[[], None], sync: Callable[[], None]):
        self.name = name
        self.step = step
        self.sync = sync
        self.times: list[float] = []
        self.steps_timed = 0
        self.seconds_timed = 0.0
        self.cpu_seconds = 0.0

    def run(self, k: int, settle: int = 0) -> None:
        """Run ``settle`` untimed steps, then time a window of ``k`` steps."""
        for _ in range(settle):
            self.step()
        self.sync()
        cpu_start = time.process_time()
        t0 = time.perf_counter()
        for _ in range(k):
            self.step()
        self.sync()
        elapsed = time.perf_counter() - t0
        self.cpu_seconds += time.process_time() - cpu_start
        self.times.append(elapsed / k)
        self.steps_timed += k
        self.seconds_timed += elapsed

    @property
    def cores_used(self) -> float:
        return self.cpu_seconds / self.seconds_timed if self.seconds_timed > 0 else float("nan")


def _interleave(
    timers: Sequence[_Timer], steps: int, max_seconds: float, chunk: int = 4, settle: int = 2, min_seconds: float = 1.0
) -> None:
    """Round-robin turns of each timer until each has ``steps`` timed steps and ``min_seconds``
    of timed steps, or the time budget (``max_seconds`` per timer) runs out.

    A turn runs ``settle`` untimed steps, then times a window of ``chunk`` steps. The first
    steps after a switch of framework are slower: the other framework's OpenMP and XLA worker
    threads are still spinning down, and both frameworks' OpenMP pools compete for the cores
    (measured: a torch mnist_cnn step right after jaxcnn steps took 8-15 ms against 6.3 ms from
    the third on, and the reverse 5-10 ms against 3.3 ms). Timing them would charge each
    framework for the other's threads. ``min_seconds`` keeps millisecond steps from being timed
    over a few milliseconds only: jaxcnn's mlp step ran at 66k img/s over its first 30 steps and
    81k over 300 (torch 62k and 66k).
    """
    start = time.perf_counter()
    budget = max_seconds * max(1, len(timers))

    def needs_more(timer: _Timer) -> bool:
        return timer.steps_timed < steps or timer.seconds_timed < min_seconds

    while any(needs_more(t) for t in timers):
        for timer in timers:
            if needs_more(timer):
                timer.run(chunk, settle=settle)
        if time.perf_counter() - start > budget and all(len(t.times) >= 3 for t in timers):
            break


def _sync_torch() -> None:
    pass  # torch on the CPU returns from a step when it is done


def _on_all_devices(train_step: Callable, eval_step: Callable, state: Any) -> tuple[Callable, Callable, Any, Any]:
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


# ------------------------------------------------------------------------------- JAX side
def _jax_setup(
    cfg: ModelConfig, batch: int, x_np: np.ndarray, y_np: np.ndarray, compute_dtype=None, data_parallel: bool = False
) -> dict[str, Any]:
    """The jitted train/eval steps of ``cfg``'s model; ``data_parallel`` splits the batch over all local devices."""
    import jax
    import jax.numpy as jnp

    from jaxcnn import models, optim
    from jaxcnn.train.state import create_train_state
    from jaxcnn.train.step import make_steps

    model = models.create(cfg.name, num_classes=NUM_CLASSES)
    tx = optim.sgd(LR, momentum=MOMENTUM)
    graphdef, eval_graphdef, state = create_train_state(model, tx)
    steps = make_steps(graphdef, eval_graphdef, tx, compute_dtype=compute_dtype)
    jit_train, jit_eval, batch_sharding = steps.train_step, steps.eval_step, None
    if data_parallel:
        jit_train, jit_eval, state, batch_sharding = _on_all_devices(jit_train, jit_eval, state)
    shards = 1 if batch_sharding is None else batch_sharding.mesh.size
    x = jax.device_put(jnp.asarray(x_np), batch_sharding)
    y = jax.device_put(jnp.asarray(y_np), batch_sharding)

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
        "model": model,
    }


def _summary_flops(cfg: ModelConfig, batch: int) -> float:
    """The course formula: multiply-adds per image * 2 (FLOPs) * 3 (forward + backward) * batch."""
    from jaxcnn import models
    from jaxcnn.summary import summarize

    model = models.create(cfg.name, num_classes=NUM_CLASSES)
    return float(summarize(model, (1, *cfg.input_size)).total_mult_adds) * 2 * 3 * batch


# ----------------------------------------------------------------------------- torch side
def _torch_logits(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def _torch_setup(cfg: ModelConfig, x_np: np.ndarray, y_np: np.ndarray, mode: str) -> dict[str, Any]:
    import torch

    import torch_ref.models

    torch.manual_seed(0)
    model = torch_ref.models.create(cfg.name, num_classes=NUM_CLASSES)
    x = torch.from_numpy(np.ascontiguousarray(x_np.transpose(0, 3, 1, 2)))
    y = torch.from_numpy(y_np.astype(np.int64))
    if mode == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    criterion = torch.nn.CrossEntropyLoss()
    fwd = torch.compile(model) if mode == "compile" else model

    def train_step() -> None:
        model.train()
        opt.zero_grad(set_to_none=True)
        loss = criterion(_torch_logits(fwd(x)), y)
        loss.backward()
        opt.step()

    def eval_step() -> None:
        model.eval()
        with torch.no_grad():
            criterion(_torch_logits(fwd(x)), y)

    result: dict[str, Any] = {"train": train_step, "eval": eval_step, "sync": _sync_torch}
    if mode == "compile":
        t0 = time.perf_counter()
        train_step()
        result["compile_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        eval_step()
        result["eval_compile_s"] = time.perf_counter() - t0
    return result


# --------------------------------------------------------------------------- data pipeline
def _pipeline_throughput(cfg: ModelConfig, batch: int, steps: int) -> float:
    from jaxcnn.data import ArrayDataset, DeviceLoader, measure_throughput

    h, w, c = cfg.input_size
    n = max(4 * batch, 512)
    rng = np.random.default_rng(0)
    dataset = ArrayDataset(
        images=rng.integers(0, 256, size=(n, h, w, c), dtype=np.uint8),
        labels=rng.integers(0, NUM_CLASSES, size=(n,)).astype(np.int32),
        num_classes=NUM_CLASSES,
        name=f"synthetic/{cfg.name}",
    )
    loader = DeviceLoader(dataset, batch, shuffle=True, drop_last=True, augment=c == 3)
    return float(measure_throughput(loader, steps))


def _inputs(cfg: ModelConfig, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """The benchmark batch: NHWC float32 images and int32 labels, the same for every mode."""
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((batch, *cfg.input_size), dtype=np.float32)
    return x_np, rng.integers(0, NUM_CLASSES, size=(batch,)).astype(np.int32)


def _time_modes(
    modes: dict[str, dict[str, Any]], batch: int, steps: int, budget: float, name: str, log: Callable[[str], None]
) -> dict[str, Any]:
    """Warm up, then time the train and eval steps of ``modes`` interleaved; img/s and cores per mode."""
    for m in modes.values():  # warm-up: 3 steps and a quarter of a second each
        warm_until = time.perf_counter() + 0.25
        for _ in range(3):
            m["train"]()
            m["sync"]()
        while time.perf_counter() < warm_until:
            m["train"]()
            m["sync"]()
    log(f"[{name}] timing train steps (interleaved) ...")
    timers = [_Timer(k, m["train"], m["sync"]) for k, m in modes.items()]
    _interleave(timers, steps, budget)
    log(f"[{name}] timing eval steps (interleaved) ...")
    for m in modes.values():
        m["eval"]()
        m["sync"]()
    etimers = [_Timer(k, m["eval"], m["sync"]) for k, m in modes.items()]
    _interleave(etimers, steps, budget / 2)
    return {
        "train_img_s": {t.name: batch / _median(t.times) for t in timers},
        "train_steps_timed": {t.name: t.steps_timed for t in timers},
        "train_cores_used": {t.name: round(t.cores_used, 2) for t in timers},
        "eval_img_s": {t.name: batch / _median(t.times) for t in etimers},
    }


# ----------------------------------------------------------------------------- benchmark
def bench_model(
    cfg: ModelConfig,
    *,
    batch: int,
    steps: int,
    torch_compile: bool,
    max_seconds: float | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Benchmark one model; returns the JSON record (see the module docstring)."""
    import torch

    x_np, y_np = _inputs(cfg, batch)
    budget = cfg.max_seconds if max_seconds is None else max_seconds
    record: dict[str, Any] = {"model": cfg.name, "batch_size": batch, "input_size": list(cfg.input_size)}

    log(f"[{cfg.name}] JAX trace + compile ...")
    jx = _jax_setup(cfg, batch, x_np, y_np)
    record["jax_trace_s"] = jx["trace_s"]
    record["jax_compile_s"] = jx["compile_s"]
    record["jax_flops_per_step_xla"] = jx["flops_per_step"]
    try:
        record["flops_per_step_formula"] = _summary_flops(cfg, batch)
    except Exception as exc:  # summary may not support every model
        record["flops_per_step_formula"] = None
        log(f"[{cfg.name}] summary flops unavailable: {exc}")

    import jax

    jax_modes = {"jax": jx}
    devices = jax.local_device_count()
    if devices > 1 and batch % devices == 0:
        log(f"[{cfg.name}] JAX data-parallel over {devices} {jax.default_backend()} devices: trace + compile ...")
        jax_modes["jax_dp"] = jx_dp = _jax_setup(cfg, batch, x_np, y_np, data_parallel=True)
        record["jax_dp_devices"] = devices
        record["jax_dp_trace_s"] = jx_dp["trace_s"]
        record["jax_dp_compile_s"] = jx_dp["compile_s"]

    modes = {"eager": _torch_setup(cfg, x_np, y_np, "eager"), "channels_last": _torch_setup(cfg, x_np, y_np, "channels_last")}
    if torch_compile:
        log(f"[{cfg.name}] torch.compile ...")
        try:
            modes["compile"] = _torch_setup(cfg, x_np, y_np, "compile")
            record["torch_compile_s"] = modes["compile"]["compile_s"]
        except Exception as exc:  # torch.compile can fail on a CPU without a compiler
            log(f"[{cfg.name}] torch.compile failed: {type(exc).__name__}: {exc}")
            record["torch_compile_error"] = f"{type(exc).__name__}: {exc}"

    record.update(_time_modes({**jax_modes, **{f"torch_{k}": m for k, m in modes.items()}}, batch, steps, budget, cfg.name, log))
    train_ips = record["train_img_s"]

    torch_modes = [k for k in train_ips if k.startswith("torch_")]
    record["train_ratio_jax_over"] = {k[len("torch_"):]: train_ips["jax"] / train_ips[k] for k in torch_modes}
    record["eval_ratio_jax_over"] = {
        k[len("torch_"):]: record["eval_img_s"]["jax"] / record["eval_img_s"][k] for k in torch_modes
    }
    best = max(train_ips[k] for k in torch_modes)
    record["train_ratio_jax_over_best_torch"] = train_ips["jax"] / best
    if "jax_dp" in train_ips:
        record["train_ratio_jax_dp_over"] = {k[len("torch_"):]: train_ips["jax_dp"] / train_ips[k] for k in torch_modes}
        record["train_ratio_jax_dp_over_best_torch"] = train_ips["jax_dp"] / best
        record["eval_ratio_jax_dp_over"] = {
            k[len("torch_"):]: record["eval_img_s"]["jax_dp"] / record["eval_img_s"][k] for k in torch_modes
        }

    step_s = batch / train_ips["jax"]
    record["jax_gflops_xla"] = record["jax_flops_per_step_xla"] / step_s / 1e9
    if record["flops_per_step_formula"]:
        record["jax_gflops_formula"] = record["flops_per_step_formula"] / step_s / 1e9

    try:
        record["pipeline_img_s"] = _pipeline_throughput(cfg, batch, max(5, min(steps, 50)))
    except Exception as exc:
        record["pipeline_img_s"] = None
        log(f"[{cfg.name}] pipeline measurement failed: {exc}")
    record["torch_threads"] = torch.get_num_threads()
    return record


def _cell(value: float | None, width: int, digits: int = 1) -> str:
    return f"{value:{width}.{digits}f}" if value else f"{'-':>{width}}"


def _ratio(value: float | None, width: int) -> str:
    return f"{value:{width - 1}.2f}x" if value else f"{'-':>{width}}"


def _cores(record: dict[str, Any], mode: str) -> str:
    value = record.get("train_cores_used", {}).get(mode)
    return f"{value:.1f}" if value is not None else "-"


def format_table(results: dict[str, Any]) -> str:
    """A plain-text table of a :func:`run_benchmark` result."""
    peak = results.get("matmul_peak", {})
    rows = [
        f"load average (1/5/15 min) before {results.get('load_before')} after {results.get('load_after')}; "
        f"matmul peak float32 2048^3: JAX {peak.get('jax_gflops', float('nan')):.0f} GFLOP/s, "
        f"torch {peak.get('torch_gflops', float('nan')):.0f} GFLOP/s",
        "",
        "train img/s (4-step windows)    JAX   JAX dp    eager  ch_last  compile | JAX/eager dp/eager best/best | "
        "JAX trace+XLA s torch.compile s | cores JAX/dp/eager",
    ]
    for r in results["models"]:
        if "error" in r:
            rows.append(f"{r['model']:<16} ERROR {r['error']}")
            continue
        t = r["train_img_s"]
        best_jax = max(t["jax"], t.get("jax_dp", 0.0))
        best_torch = max(v for k, v in t.items() if k.startswith("torch_"))
        rows.append(
            f"{r['model']:<16} b={r['batch_size']:<4}"
            + "".join(_cell(t.get(k), 9) for k in ("jax", "jax_dp", "torch_eager", "torch_channels_last", "torch_compile"))
            + f" | {_ratio(r['train_ratio_jax_over']['eager'], 9)}{_ratio(r.get('train_ratio_jax_dp_over', {}).get('eager'), 9)}"
            f"{_ratio(best_jax / best_torch, 10)} | {r['jax_trace_s']:>6.2f}+{r['jax_compile_s']:<6.2f}{_cell(r.get('torch_compile_s'), 10)}"
            f"      | {_cores(r, 'jax')}/{_cores(r, 'jax_dp')}/{_cores(r, 'torch_eager')}"
        )
    rows += [
        "",
        "eval img/s                      JAX   JAX dp    eager  ch_last  compile | JAX/eager dp/eager | pipeline img/s | "
        "JAX GFLOP/s (XLA, formula) % of peak",
    ]
    for r in results["models"]:
        if "error" in r:
            continue
        e = r["eval_img_s"]
        gf = r["jax_gflops_xla"]
        gff = r.get("jax_gflops_formula")
        pk = peak.get("jax_gflops") or float("nan")
        rows.append(
            f"{r['model']:<16} b={r['batch_size']:<4}"
            + "".join(_cell(e.get(k), 9) for k in ("jax", "jax_dp", "torch_eager", "torch_channels_last", "torch_compile"))
            + f" | {_ratio(r['eval_ratio_jax_over']['eager'], 9)}{_ratio(r.get('eval_ratio_jax_dp_over', {}).get('eager'), 9)} | "
            f"{_cell(r.get('pipeline_img_s'), 14, 0)} | {_cell(gf, 7)}, {_cell(gff, 7)}  {100 * gf / pk:5.1f}%"
        )
    if results.get("isolated"):
        rows += ["", format_isolated_table(results["isolated"])]
    tta = results.get("time_to_accuracy")
    if tta:
        rows += ["", f"time to {100 * tta['target']:.0f}% test accuracy, mnist_cnn on mnist_t10k: " + ", ".join(
            f"{k}: {v['seconds']:.1f} s ({v['epochs']} epochs, {100 * v['accuracy']:.2f}%; {v['seconds_per_epoch']:.2f} s/epoch)"
            if v.get("reached") else f"{k}: not reached in {v['epochs']} epochs ({v['seconds']:.1f} s, {v['seconds_per_epoch']:.2f} s/epoch)"
            for k, v in tta["runs"].items()
        )]
    return "\n".join(rows)


def run_benchmark(
    models: Sequence[str] = DEFAULT_MODELS,
    *,
    steps: int = 30,
    batch_size: int | None = None,
    torch_compile: bool | None = None,
    max_seconds: float | None = None,
    peak: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Benchmark ``models``; returns the JSON-ready result dict."""
    import jax
    import torch

    results: dict[str, Any] = {
        "load_before": _load(),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "jax": jax.__version__,
            "jax_backend": jax.default_backend(),
            "jax_devices": len(jax.devices()),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
        },
        "config": {"steps": steps, "batch_size": batch_size, "lr": LR, "momentum": MOMENTUM, "timing": "per-step wall time, the median over windows of 4 steps (each window: the steps dispatched as the trainer does, then block_until_ready on the last outputs and state; torch steps are synchronous), at least `steps` steps and 1 s per mode, interleaved modes (turns of 2 untimed steps + one timed window)"},
        "models": [],
    }
    if peak:
        results["matmul_peak"] = matmul_peak()
    for name in models:
        if name not in MODEL_CONFIGS:
            raise ValueError(f"unknown benchmark model {name!r}; choose from {', '.join(MODEL_CONFIGS)}")
        cfg = MODEL_CONFIGS[name]
        batch = batch_size or cfg.batch_size
        use_compile = cfg.torch_compile if torch_compile is None else torch_compile
        try:
            results["models"].append(
                bench_model(cfg, batch=batch, steps=steps, torch_compile=use_compile, max_seconds=max_seconds, log=log)
            )
        except Exception as exc:
            log(f"[{name}] FAILED: {type(exc).__name__}: {exc}")
            results["models"].append({"model": name, "batch_size": batch, "error": f"{type(exc).__name__}: {exc}"})
    results["load_after"] = _load()
    return results


# ---------------------------------------------------------------- one framework per process
ISOLATED_MODES = {"jax": ("jax",), "torch": ("torch_eager", "torch_channels_last")}


def isolated_throughput(name: str, framework: str, *, steps: int = 30, max_seconds: float | None = None) -> dict[str, Any]:
    """Train/eval img/s of one framework's modes for model ``name``, timed in this process alone.

    ``framework`` is ``'jax'`` (jaxcnn's single-device jitted steps) or ``'torch'`` (eager and
    channels_last). :func:`isolated_benchmark` calls it in a fresh process per framework.
    ``keeps_host_memory`` records per mode whether this process ran with jaxcnn's allocator
    setting (:mod:`jaxcnn._host_memory`).
    """
    from jaxcnn import _host_memory

    if framework not in ISOLATED_MODES:
        raise ValueError(f"framework must be one of {sorted(ISOLATED_MODES)}, got {framework!r}")
    cfg = MODEL_CONFIGS[name]
    x_np, y_np = _inputs(cfg, cfg.batch_size)
    if framework == "jax":
        modes = {"jax": _jax_setup(cfg, cfg.batch_size, x_np, y_np)}
    else:
        modes = {f"torch_{mode}": _torch_setup(cfg, x_np, y_np, mode) for mode in ("eager", "channels_last")}
    budget = cfg.max_seconds if max_seconds is None else max_seconds
    result = _time_modes(modes, cfg.batch_size, steps, budget, name, log=lambda _: None)
    return {**result, "keeps_host_memory": dict.fromkeys(modes, _host_memory.applied)}


def isolated_benchmark(
    models: Sequence[str] = DEFAULT_MODELS,
    *,
    rounds: int = 2,
    steps: int = 30,
    max_seconds: float | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Each framework timed in a process of its own, alternating, ``rounds`` times per model.

    In one process the two frameworks' thread pools (XLA's, and the OpenMP teams of torch and
    of jaxcnn's oneDNN convolutions) slow each other down even with untimed steps at every
    switch, so the interleaved figures understate both sides by different amounts; here
    neither side shares its process. The torch process runs with glibc's default allocator
    settings, as a plain torch script does (``import jaxcnn`` would change them:
    :mod:`jaxcnn._host_memory`; the interleaved figures have both sides under jaxcnn's). Per
    mode the best of the rounds is kept (machine noise only ever slows a run down). Returns
    ``{"rounds", "steps", "torch_env", "models": {name: {"train_img_s", "eval_img_s",
    "train_ratio_jax_over", "eval_ratio_jax_over", "per_round"}}}``.
    """
    from jaxcnn._host_memory import OPT_OUT_VARIABLE

    torch_env = {OPT_OUT_VARIABLE: "0"}
    environments = {"jax": os.environ, "torch": {**os.environ, **torch_env}}
    result: dict[str, Any] = {"rounds": rounds, "steps": steps, "torch_env": torch_env, "models": {}}
    for name in models:
        per_round = []
        for round_index in range(rounds):
            measured: dict[str, Any] = {}
            for framework in ISOLATED_MODES:
                log(f"[{name}] isolated round {round_index + 1}/{rounds}: {framework} in a fresh process ...")
                code = (
                    "import json; from jaxcnn.bench import isolated_throughput; "
                    f"print(json.dumps(isolated_throughput({name!r}, {framework!r}, steps={steps}, max_seconds={max_seconds!r})))"
                )
                done = subprocess.run(
                    [sys.executable, "-c", code], capture_output=True, text=True, check=False, env=environments[framework]
                )
                if done.returncode != 0:
                    raise RuntimeError(f"isolated {framework} run of {name} failed:\n{done.stderr[-2000:]}")
                for key, values in json.loads(done.stdout.strip().splitlines()[-1]).items():
                    measured.setdefault(key, {}).update(values)
            per_round.append(measured)
        best = {
            kind: {mode: max(r[kind][mode] for r in per_round) for mode in per_round[0][kind]}
            for kind in ("train_img_s", "eval_img_s")
        }
        result["models"][name] = {
            **best,
            "train_ratio_jax_over": {m[len("torch_"):]: best["train_img_s"]["jax"] / v for m, v in best["train_img_s"].items() if m != "jax"},
            "eval_ratio_jax_over": {m[len("torch_"):]: best["eval_img_s"]["jax"] / v for m, v in best["eval_img_s"].items() if m != "jax"},
            "per_round": per_round,
        }
    return result


def format_isolated_table(isolated: dict[str, Any]) -> str:
    """A plain-text table of an :func:`isolated_benchmark` result."""
    rows = [
        f"one framework per process (best of {isolated['rounds']} alternating rounds), img/s",
        "                        train: JAX    eager  ch_last | JAX/eager JAX/best |  eval: JAX    eager  ch_last | JAX/eager",
    ]
    for name, r in isolated["models"].items():
        t, e = r["train_img_s"], r["eval_img_s"]
        modes = ("jax", "torch_eager", "torch_channels_last")
        rows.append(
            f"{name:<16}        "
            + "".join(_cell(t.get(k), 9) for k in modes)
            + f" | {_ratio(r['train_ratio_jax_over']['eager'], 9)}{_ratio(t['jax'] / max(t['torch_eager'], t['torch_channels_last']), 9)} |       "
            + "".join(_cell(e.get(k), 9) for k in modes)
            + f" | {_ratio(r['eval_ratio_jax_over']['eager'], 9)}"
        )
    return "\n".join(rows)


# ------------------------------------------------------------------------ time to accuracy
def _tta_run(history: list[tuple[float, float]], target: float) -> dict[str, Any]:
    """One side's record from its ``(test accuracy, seconds since start)`` after each epoch.

    ``seconds_per_epoch`` leaves out the first epoch, which holds JAX's compilation: the
    epoch count at which a run first reaches the target moves by several epochs with the
    float32 rounding of its steps (both sides hover around 97% for a while), so the time per
    epoch is the steadier speed figure.
    """
    acc, seconds = history[-1]
    later = [b - a for (_, a), (_, b) in itertools.pairwise(history)]
    return {
        "seconds": seconds,
        "epochs": len(history),
        "accuracy": acc,
        "reached": acc >= target,
        "seconds_per_epoch": sum(later) / len(later) if later else seconds,
        "history": [{"accuracy": a, "seconds": t} for a, t in history],
    }


def time_to_accuracy(
    *,
    target: float = 0.97,
    max_epochs: int = 30,
    batch_size: int = 64,
    lr: float = 0.05,
    data_dir: str | os.PathLike | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """mnist_cnn to ``target`` test accuracy on mnist_t10k: jaxcnn's jitted steps vs a torch loop.

    Both start from the same weights (the jaxcnn model's, copied into torch_ref's twin) and see
    the same batches. Returns ``{"target", "runs": {"jax": {...}, "torch": {...}}}``.
    """
    import jax
    import torch

    import torch_ref.models
    from jaxcnn import models, optim
    from jaxcnn.convert import to_torch_arrays
    from jaxcnn.data import DeviceLoader, load_dataset
    from jaxcnn.train.state import create_train_state
    from jaxcnn.train.step import make_steps

    data_dir = data_dir or REPO_ROOT.parent / "shared" / "data" / "mnist"
    splits = load_dataset("mnist_t10k", data_dir=data_dir)
    train, test = splits["train"], splits["test"]
    loader = DeviceLoader(train, batch_size, shuffle=True, seed=0, drop_last=False)
    test_loader = DeviceLoader(test, 500, shuffle=False)
    epochs_batches = []  # the same batches for both sides, materialised once (not timed)
    for epoch in range(max_epochs):
        epochs_batches.append([(np.asarray(x), np.asarray(y)) for x, y in loader.iter_epoch(epoch)])
    test_batches = [(np.asarray(x), np.asarray(y)) for x, y in test_loader.iter_epoch(0)]

    model = models.create("mnist_cnn", num_classes=10, rngs=None, seed=0)
    torch_model = torch_ref.models.create("mnist_cnn", num_classes=10)
    torch_model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in to_torch_arrays(model).items()})

    runs: dict[str, Any] = {}

    # --- jaxcnn: one device, and data-parallel over all local devices when there are several
    devices = jax.local_device_count()
    jax_modes = ["jax"]
    if devices > 1 and all(len(y) % devices == 0 for batches in (*epochs_batches, test_batches) for _, y in batches):
        jax_modes.append("jax_dp")
    for mode in jax_modes:
        model = models.create("mnist_cnn", num_classes=10, rngs=None, seed=0)  # afresh: the last run donated its arrays
        tx = optim.sgd(lr, momentum=MOMENTUM)
        graphdef, eval_graphdef, state = create_train_state(model, tx)
        steps = make_steps(graphdef, eval_graphdef, tx)
        train_step, eval_step, batch_sharding = steps.train_step, steps.eval_step, None
        if mode == "jax_dp":
            train_step, eval_step, state, batch_sharding = _on_all_devices(train_step, eval_step, state)
        jax_test = [jax.device_put((x, y), batch_sharding) for x, y in test_batches]
        jax_epochs = [[jax.device_put((x, y), batch_sharding) for x, y in b] for b in epochs_batches]
        jax.block_until_ready(jax_epochs)
        t0 = time.perf_counter()
        acc, epoch, history = 0.0, 0, []
        for epoch in range(1, max_epochs + 1):
            for x, y in jax_epochs[epoch - 1]:
                state, metrics = train_step(state, x, y)
                if mode == "jax_dp":
                    # One step in flight: with ~100 data-parallel steps queued on host CPU devices,
                    # XLA:CPU's all-reduce rendezvous deadlocked here (one device's thread never
                    # arrived); the bench's timed steps, which wait for each step, never did.
                    metrics["loss"].block_until_ready()
            correct = sum(int(eval_step(state, x, y)["correct"]) for x, y in jax_test)
            acc = correct / len(test)
            history.append((acc, time.perf_counter() - t0))
            log(f"[tta {mode}] epoch {epoch}: test accuracy {100 * acc:.2f}% at {history[-1][1]:.1f} s")
            if acc >= target:
                break
        runs[mode] = _tta_run(history, target)

    # --- torch
    opt = torch.optim.SGD(torch_model.parameters(), lr=lr, momentum=MOMENTUM)
    criterion = torch.nn.CrossEntropyLoss()
    nchw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))  # noqa: E731
    t_epochs = [[(nchw(x), torch.from_numpy(y.astype(np.int64))) for x, y in b] for b in epochs_batches]
    t_test = [(nchw(x), torch.from_numpy(y.astype(np.int64))) for x, y in test_batches]
    t0 = time.perf_counter()
    acc, epoch, history = 0.0, 0, []
    for epoch in range(1, max_epochs + 1):
        torch_model.train()
        for x, y in t_epochs[epoch - 1]:
            opt.zero_grad(set_to_none=True)
            criterion(torch_model(x), y).backward()
            opt.step()
        torch_model.eval()
        with torch.no_grad():
            correct = sum(int((torch_model(x).argmax(1) == y).sum()) for x, y in t_test)
        acc = correct / len(test)
        history.append((acc, time.perf_counter() - t0))
        log(f"[tta torch] epoch {epoch}: test accuracy {100 * acc:.2f}% at {history[-1][1]:.1f} s")
        if acc >= target:
            break
    runs["torch_eager"] = _tta_run(history, target)
    return {
        "target": target,
        "dataset": "mnist_t10k (7,000 train / 2,000 test)",
        "batch_size": batch_size,
        "lr": lr,
        "momentum": MOMENTUM,
        "loop": "step functions called directly (jaxcnn.train.step jitted steps; plain torch loop), same batches and initial weights",
        "runs": runs,
    }


# ----------------------------------------------------------------------------------- CLI
def add_bench_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``bench`` subcommand on an ``argparse`` subparsers object."""
    parser = subparsers.add_parser(
        "bench",
        help="training/eval throughput of jaxcnn vs torch_ref, side by side (img/s, compile time, FLOP/s)",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), choices=list(MODEL_CONFIGS), metavar="MODEL",
                        help=f"models to benchmark (default: all of {', '.join(DEFAULT_MODELS)})")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per mode (median reported; default 30)")
    parser.add_argument("--batch-size", type=int, help="override every model's default batch size")
    parser.add_argument("--max-seconds", type=float, help="time budget per mode and model (default: per model)")
    parser.add_argument("--out", default=None, help="write the JSON results here (default: print only)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--compile", dest="force_compile", action="store_true",
                        help="run torch.compile for every model (default: only where it compiles quickly)")
    parser.add_argument("--no-peak", action="store_true", help="skip the 2048^3 matmul peak measurement")
    parser.add_argument("--host-devices", type=int, default=None, metavar="N",
                        help="on a CPU-only machine, split the CPU into N JAX devices and also time a data-parallel "
                        "JAX step over them (default: one per core; 1: single device only)")  # fmt: skip
    parser.add_argument("--time-to-accuracy", action="store_true",
                        help="also train mnist_cnn to 97%% test accuracy on mnist_t10k, jaxcnn vs torch")
    parser.add_argument("--data-dir", default=None, help="MNIST folder for --time-to-accuracy (default <repo>/../shared/data/mnist)")
    parser.add_argument("--isolated", action="store_true",
                        help="also time each framework in a process of its own (JAX; torch eager and channels_last), "
                        "alternating, and report those ratios")  # fmt: skip
    parser.add_argument("--isolated-rounds", type=int, default=2, metavar="R", help="alternating rounds for --isolated (default 2)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the ``bench`` subcommand: print the table, write the JSON when ``--out`` is given."""
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    from jaxcnn._platform import use_host_devices

    try:
        use_host_devices(getattr(args, "host_devices", None))  # before JAX starts; no-op with an accelerator
    except RuntimeError:
        log("JAX has already started in this process: timing on its current devices")
    torch_compile = False if args.no_compile else (True if args.force_compile else None)
    results = run_benchmark(
        args.models, steps=args.steps, batch_size=args.batch_size, torch_compile=torch_compile,
        max_seconds=args.max_seconds, peak=not args.no_peak, log=log,
    )  # fmt: skip

    def write() -> None:
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(results, indent=2, default=float) + "\n")
            log(f"wrote {args.out}")

    write()  # the throughput figures are kept even if a later part fails
    if args.isolated:
        results["isolated"] = isolated_benchmark(
            args.models, rounds=args.isolated_rounds, steps=args.steps, max_seconds=args.max_seconds, log=log
        )
        results["load_after"] = _load()
        write()
    if args.time_to_accuracy:
        results["time_to_accuracy"] = time_to_accuracy(data_dir=args.data_dir, log=log)
        results["load_after"] = _load()
        write()
    print(format_table(results))
    return 1 if any("error" in r for r in results["models"]) else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m jaxcnn.bench [options]``."""
    parser = argparse.ArgumentParser(prog="jaxcnn-bench")
    sub = parser.add_subparsers(dest="command", required=True)
    add_bench_parser(sub)
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
