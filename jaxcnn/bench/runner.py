"""One benchmark run: every mode of every model timed side by side, and the machine it ran on.

:func:`run_benchmark` returns the JSON-ready record (``machine``, ``config``, ``models``); per
model :func:`bench_model` records the modes' settings (``modes``, from
:func:`jaxcnn.bench.modes.plan_modes`), train and eval img/s, compile times of both
frameworks, and the JAX/torch ratios within each precision pair.
"""

from __future__ import annotations

import gc
import os
import platform
import subprocess
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any

import numpy as np

from jaxcnn.bench.jax_side import jax_setup, summary_flops
from jaxcnn.bench.models import LR, MOMENTUM, NUM_CLASSES, ModelConfig, default_models, inputs, model_configs
from jaxcnn.bench.modes import PRECISION, Mode, plan_modes
from jaxcnn.bench.timing import load_average, matmul_peak, time_modes
from jaxcnn.bench.torch_side import torch_setup

__all__ = ["bench_model", "machine_info", "pair_ratios", "run_benchmark"]

TIMING = (
    "per-step wall time, the median over windows of 4 steps (each window: the steps dispatched as the trainer "
    "does, then block_until_ready on the last outputs and state; torch.cuda.synchronize on a GPU, torch CPU "
    "steps are synchronous), at least `steps` steps and 1 s per mode, interleaved modes (turns of 2 untimed "
    "steps + one timed window)"
)
_PACKAGES = ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda12-plugin", "flax", "optax", "numpy", "torch", "torchvision")


def _versions() -> dict[str, str]:
    found = {}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def _nvidia_smi() -> dict[str, str]:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return {}
    name, driver, memory = ([*out.strip().splitlines()[0].split(", "), "", "", ""])[:3]
    return {"gpu_name": name, "driver": driver, "gpu_memory": memory}


def machine_info(torch_device: str | None) -> dict[str, Any]:
    """Platform, CPU, JAX backend and devices, library versions; on a GPU its name, driver, CUDA and cuDNN."""
    import jax
    import torch

    devices = jax.devices()
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "jax_backend": jax.default_backend(),
        "jax_devices": len(devices),
        "jax_device_kind": devices[0].device_kind,
        "torch": torch.__version__,
        "torch_device": torch_device,
        "torch_threads": torch.get_num_threads(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "versions": _versions(),
    }
    if torch_device == "cuda":
        info.update(_nvidia_smi())
        info["torch_gpu_name"] = torch.cuda.get_device_name()
        info["torch_cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
        try:
            from jax._src.lib import cuda_versions

            info["jax_cuda_runtime"] = cuda_versions.cuda_runtime_get_version()
            info["jax_cudnn"] = cuda_versions.cudnn_get_version()
        except Exception:  # noqa: BLE001 - private API, informative only
            pass
    return info


def _pipeline_throughput(cfg: ModelConfig, batch: int, steps: int) -> float:
    """Images/s of :class:`jaxcnn.data.DeviceLoader` on synthetic uint8 data of the model's input shape."""
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


def pair_ratios(record: dict[str, Any]) -> dict[str, Any]:
    """Per precision pair: its precision, the JAX mode's and each torch mode's img/s, JAX over torch's best."""
    pairs: dict[str, Any] = {}
    for name, mode in record["modes"].items():
        if mode["framework"] != "jax" or mode["data_parallel"] or name not in record["train_img_s"]:
            continue
        torch_modes = [
            m for m, spec in record["modes"].items()
            if spec["framework"] == "torch" and spec["pair"] == mode["pair"] and m in record["train_img_s"]
        ]  # fmt: skip
        entry: dict[str, Any] = {"precision": PRECISION[mode["pair"]], "jax": name}
        for kind in ("train", "eval"):
            img_s = record[f"{kind}_img_s"]
            entry[f"{kind}_img_s"] = {m: img_s[m] for m in (name, *torch_modes)}
            if torch_modes:
                best = max(torch_modes, key=img_s.get)
                entry[f"{kind}_best_torch"] = best
                entry[f"{kind}_ratio_jax_over_best_torch"] = img_s[name] / img_s[best]
        pairs[mode["pair"]] = entry
    return pairs


def bench_model(
    cfg: ModelConfig,
    plan: dict[str, Mode],
    *,
    batch: int,
    steps: int,
    max_seconds: float | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Time every mode of ``plan`` on model ``cfg``; returns the model's JSON record."""
    x_np, y_np = inputs(cfg, batch)
    budget = cfg.max_seconds if max_seconds is None else max_seconds
    record: dict[str, Any] = {
        "model": cfg.name, "batch_size": batch, "input_size": list(cfg.input_size),
        "modes": {name: {**vars(m), "precision": m.precision} for name, m in plan.items()},
        "compile_s": {}, "mode_errors": {},
    }  # fmt: skip
    ready: dict[str, dict[str, Any]] = {}
    for name, mode in plan.items():
        if mode.framework != "jax":
            continue
        log(f"[{cfg.name}] {name}: JAX trace + compile ...")
        jx = ready[name] = jax_setup(cfg, x_np, y_np, mode)
        record["compile_s"][name] = jx["trace_s"] + jx["compile_s"]
        prefix = "jax_dp" if mode.data_parallel else "jax"
        if f"{prefix}_trace_s" not in record:
            record[f"{prefix}_trace_s"], record[f"{prefix}_compile_s"] = jx["trace_s"], jx["compile_s"]
        if not mode.data_parallel and "jax_flops_per_step_xla" not in record:
            record["jax_flops_per_step_xla"] = jx["flops_per_step"]
            try:
                record["flops_per_step_formula"] = summary_flops(cfg, batch, jx.pop("model"))
            except Exception as exc:  # noqa: BLE001 - summary may not support every model
                record["flops_per_step_formula"] = None
                log(f"[{cfg.name}] summary flops unavailable: {exc}")
        jx.pop("model", None)
        if mode.data_parallel:
            import jax

            record["jax_dp_devices"] = jax.local_device_count()
    for name, mode in plan.items():
        if mode.framework != "torch":
            continue
        log(f"[{cfg.name}] {name}: torch setup on {mode.device}{' + torch.compile' if mode.compile else ''} ...")
        try:
            ready[name] = torch_setup(cfg, x_np, y_np, mode)
        except Exception as exc:  # noqa: BLE001 - torch.compile can fail on a CPU without a compiler
            log(f"[{cfg.name}] {name} failed: {type(exc).__name__}: {exc}")
            record["mode_errors"][name] = f"{type(exc).__name__}: {exc}"
            if name == "torch_compile":
                record["torch_compile_error"] = record["mode_errors"][name]
            continue
        record["compile_s"][name] = ready[name]["first_step_s"]
        if name == "torch_compile":
            record["torch_compile_s"] = ready[name]["compile_s"]

    record.update(time_modes(ready, batch, steps, budget, cfg.name, log))
    train_ips, eval_ips = record["train_img_s"], record["eval_img_s"]
    record["pairs"] = pair_ratios(record)

    if "jax" in train_ips:  # the CPU plan: JAX against each torch mode
        torch_modes = [k for k in train_ips if k.startswith("torch_")]
        record["train_ratio_jax_over"] = {k[len("torch_"):]: train_ips["jax"] / train_ips[k] for k in torch_modes}
        record["eval_ratio_jax_over"] = {k[len("torch_"):]: eval_ips["jax"] / eval_ips[k] for k in torch_modes}
        if torch_modes:
            best = max(train_ips[k] for k in torch_modes)
            record["train_ratio_jax_over_best_torch"] = train_ips["jax"] / best
            if "jax_dp" in train_ips:
                record["train_ratio_jax_dp_over"] = {k[len("torch_"):]: train_ips["jax_dp"] / train_ips[k] for k in torch_modes}
                record["train_ratio_jax_dp_over_best_torch"] = train_ips["jax_dp"] / best
                record["eval_ratio_jax_dp_over"] = {k[len("torch_"):]: eval_ips["jax_dp"] / eval_ips[k] for k in torch_modes}

    first_jax = next(n for n, m in plan.items() if m.framework == "jax" and not m.data_parallel)
    step_s = batch / train_ips[first_jax]
    record["jax_gflops_xla"] = record["jax_flops_per_step_xla"] / step_s / 1e9
    if record["flops_per_step_formula"]:
        record["jax_gflops_formula"] = record["flops_per_step_formula"] / step_s / 1e9
    try:
        record["pipeline_img_s"] = _pipeline_throughput(cfg, batch, max(5, min(steps, 50)))
    except Exception as exc:  # noqa: BLE001
        record["pipeline_img_s"] = None
        log(f"[{cfg.name}] pipeline measurement failed: {exc}")
    import torch

    record["torch_threads"] = torch.get_num_threads()
    return record


def run_benchmark(
    models: Sequence[str] | None = None,
    *,
    steps: int = 30,
    batch_size: int | None = None,
    torch_compile: bool | None = None,
    max_seconds: float | None = None,
    pairs: Sequence[str] | None = None,
    compile_pairs: Sequence[str] | None = None,
    time_budget: float | None = None,
    peak: bool = True,
    log: Callable[[str], None] = print,
    on_model: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Benchmark ``models`` (default: the platform's defaults); returns the JSON-ready result dict.

    ``on_model(results)`` is called after each model (e.g. to write the JSON so far). With
    ``time_budget`` (seconds), models not started within it are recorded as skipped.
    """
    import jax
    import torch

    backend = jax.default_backend()
    accelerator = backend != "cpu"
    configs = model_configs(accelerator)
    torch_cuda = torch.cuda.is_available()
    probe = plan_modes(backend, torch_cuda=torch_cuda)
    torch_device = next((m.device for m in probe.values() if m.framework == "torch"), None)
    if torch_device is None:
        log(f"torch has no device of JAX's platform ({backend}): timing JAX alone (no same-device pair)")
    results: dict[str, Any] = {
        "load_before": load_average(),
        "machine": machine_info(torch_device),
        "config": {"steps": steps, "batch_size": batch_size, "lr": LR, "momentum": MOMENTUM, "timing": TIMING},
        "models": [],
    }
    if peak:
        results["matmul_peak"] = matmul_peak(torch_device=torch_device or "cpu")
    started = time.perf_counter()
    for name in models or default_models(accelerator):
        if time_budget is not None and time.perf_counter() - started > time_budget:
            log(f"[{name}] skipped: the run's time budget ({time_budget:.0f} s) is spent")
            results["models"].append({"model": name, "skipped": f"time budget of {time_budget:.0f} s spent"})
            continue
        if name not in configs:
            raise ValueError(f"unknown benchmark model {name!r}; choose from {', '.join(configs)}")
        cfg = configs[name]
        batch = batch_size or cfg.batch_size
        use_compile = cfg.torch_compile if torch_compile is None else torch_compile
        devices = jax.local_device_count()
        plan = plan_modes(
            backend, torch_cuda=torch_cuda, torch_compile=use_compile,
            jax_devices=devices if batch % devices == 0 else 1, pairs=pairs or cfg.pairs,
            **({} if compile_pairs is None else {"compile_pairs": compile_pairs}),
        )  # fmt: skip
        try:
            results["models"].append(bench_model(cfg, plan, batch=batch, steps=steps, max_seconds=max_seconds, log=log))
        except Exception as exc:  # noqa: BLE001 - one model's failure does not lose the others
            log(f"[{name}] FAILED: {type(exc).__name__}: {exc}")
            results["models"].append({"model": name, "batch_size": batch, "error": f"{type(exc).__name__}: {exc}"})
        gc.collect()
        if torch_device == "cuda":
            torch.cuda.empty_cache()
        results["load_after"] = load_average()
        if on_model is not None:
            on_model(results)
    results["load_after"] = load_average()
    return results
