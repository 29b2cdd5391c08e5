"""Each framework timed in a process of its own (``jaxcnn bench --isolated``), on the CPU.

In one process the two frameworks' thread pools (XLA's, and the OpenMP teams of torch and of
jaxcnn's oneDNN convolutions) slow each other down even with untimed steps at every switch,
so the interleaved figures understate both sides by different amounts; here neither side
shares its process. Each run is ``python -m jaxcnn.bench.isolated MODEL FRAMEWORK``, which
prints one JSON line. The torch process runs with glibc's default allocator settings
(``JAXCNN_KEEP_HOST_MEMORY=0``), as a plain torch script does.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

from jaxcnn.bench.models import MODEL_CONFIGS, inputs
from jaxcnn.bench.modes import plan_modes
from jaxcnn.bench.timing import time_modes

__all__ = ["FRAMEWORKS", "isolated_benchmark", "isolated_throughput", "main"]

FRAMEWORKS = ("jax", "torch")
TORCH_ENV = {"JAXCNN_KEEP_HOST_MEMORY": "0"}


def _host_memory_applied() -> bool:
    from jaxcnn import _host_memory

    return bool(_host_memory.applied)


def isolated_throughput(name: str, framework: str, *, steps: int = 30, max_seconds: float | None = None) -> dict[str, Any]:
    """Train/eval img/s of one framework's CPU modes for model ``name``, timed in this process alone.

    ``framework``: ``'jax'`` (jaxcnn's jitted steps) or ``'torch'`` (eager and channels_last).
    ``keeps_host_memory`` records per mode whether this process ran with jaxcnn's allocator
    setting (:mod:`jaxcnn._host_memory`).
    """
    from jaxcnn.bench.jax_side import jax_setup
    from jaxcnn.bench.torch_side import torch_setup

    if framework not in FRAMEWORKS:
        raise ValueError(f"framework must be one of {FRAMEWORKS}, got {framework!r}")
    cfg = MODEL_CONFIGS[name]
    x_np, y_np = inputs(cfg, cfg.batch_size)
    plan = {k: m for k, m in plan_modes("cpu", torch_compile=False).items() if m.framework == framework}
    setup = jax_setup if framework == "jax" else torch_setup
    modes = {k: setup(cfg, x_np, y_np, m) for k, m in plan.items()}
    budget = cfg.max_seconds if max_seconds is None else max_seconds
    result = time_modes(modes, cfg.batch_size, steps, budget, name, log=lambda _: None)
    return {**result, "keeps_host_memory": dict.fromkeys(modes, _host_memory_applied())}


def isolated_benchmark(
    models: Sequence[str],
    *,
    rounds: int = 2,
    steps: int = 30,
    max_seconds: float | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Each framework in a fresh process, alternating, ``rounds`` times per model; the best round per mode.

    Machine noise only ever slows a run down, so the best of the rounds is kept. Returns
    ``{"rounds", "steps", "torch_env", "models": {name: {"train_img_s", "eval_img_s",
    "train_ratio_jax_over", "eval_ratio_jax_over", "per_round"}}}``.
    """
    environments = {"jax": dict(os.environ), "torch": {**os.environ, **TORCH_ENV}}
    result: dict[str, Any] = {"rounds": rounds, "steps": steps, "torch_env": TORCH_ENV, "models": {}}
    for name in models:
        per_round = []
        for round_index in range(rounds):
            measured: dict[str, Any] = {}
            for framework in FRAMEWORKS:
                log(f"[{name}] isolated round {round_index + 1}/{rounds}: {framework} in a fresh process ...")
                command = [sys.executable, "-m", "jaxcnn.bench.isolated", name, framework, "--steps", str(steps)]
                if max_seconds is not None:
                    command += ["--max-seconds", str(max_seconds)]
                done = subprocess.run(command, capture_output=True, text=True, check=False, env=environments[framework])
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


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m jaxcnn.bench.isolated MODEL FRAMEWORK [--steps N] [--max-seconds S]``: one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m jaxcnn.bench.isolated")
    parser.add_argument("model", choices=list(MODEL_CONFIGS))
    parser.add_argument("framework", choices=FRAMEWORKS)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--max-seconds", type=float)
    args = parser.parse_args(argv)
    if args.framework == "jax":
        from jaxcnn._host_memory import keep_freed_host_memory

        keep_freed_host_memory()  # this program owns its process, as `jaxcnn bench` does
    print(json.dumps(isolated_throughput(args.model, args.framework, steps=args.steps, max_seconds=args.max_seconds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
