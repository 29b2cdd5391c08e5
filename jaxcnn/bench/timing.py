"""Timers: steps timed in windows, modes interleaved, the float32 matmul peak.

Each framework's steps run as its training loop runs them. jaxcnn's trainer dispatches steps
asynchronously (``jax.jit`` returns before the step has run) and fetches the metrics every
``log_every`` steps; a window dispatches 4 steps, then waits for the last one's outputs and
state (``jax.block_until_ready``). Torch on the CPU returns from a step when it is done; on a
GPU its kernels run asynchronously too, and a window ends with ``torch.cuda.synchronize()``.
Each mode's ``sync`` (from :mod:`jaxcnn.bench.jax_side` / :mod:`jaxcnn.bench.torch_side`)
is that wait, so a window's time is the time its work took on the device.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["Timer", "interleave", "load_average", "matmul_peak", "median", "time_modes"]


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on every platform
        return []


class Timer:
    """Step times of one mode, timed in windows: ``run(k)`` starts ``k`` steps, then waits for them.

    ``step()`` starts one step and ``sync()`` waits until every started step is done. Each
    window appends its wall time divided by ``k`` to ``times``, so the median of ``times`` is a
    per-step time. The process's CPU time is summed over the windows, so ``cores_used`` (CPU
    seconds per wall second) tells how many cores the mode kept busy.
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


def interleave(
    timers: Sequence[Timer], steps: int, max_seconds: float, chunk: int = 4, settle: int = 2, min_seconds: float = 1.0
) -> None:
    """Round-robin turns of each timer until each has ``steps`` timed steps and ``min_seconds``
    of timed steps, or the time budget (``max_seconds`` per timer) runs out.

    A turn runs ``settle`` untimed steps, then times a window of ``chunk`` steps. On a CPU the
    first steps after a switch of framework are slower (the other framework's worker threads
    are still spinning down; measured: a torch mnist_cnn step right after jaxcnn steps took
    8-15 ms against 6.3 ms from the third on); timing them would charge each framework for the
    other's threads. ``min_seconds`` keeps millisecond steps from being timed over a few
    milliseconds only.
    """
    start = time.perf_counter()
    budget = max_seconds * max(1, len(timers))

    def needs_more(timer: Timer) -> bool:
        return timer.steps_timed < steps or timer.seconds_timed < min_seconds

    while any(needs_more(t) for t in timers):
        for timer in timers:
            if needs_more(timer):
                timer.run(chunk, settle=settle)
        if time.perf_counter() - start > budget and all(len(t.times) >= 3 for t in timers):
            break


def time_modes(
    modes: dict[str, dict[str, Any]], batch: int, steps: int, budget: float, name: str, log: Callable[[str], None]
) -> dict[str, Any]:
    """Warm up, then time the train and eval steps of ``modes`` interleaved; img/s and cores per mode.

    Each mode is ``{"train", "eval", "sync"}`` callables (and optional ``"enter"``, called
    before each of its turns, e.g. to set torch's process-wide TF32 flags).
    """

    def entered(m: dict[str, Any], fn: Callable[[], None]) -> Callable[[], None]:
        enter = m.get("enter")
        if enter is None:
            return fn

        def step() -> None:
            enter()
            fn()

        return step

    for m in modes.values():  # warm-up: 3 steps and a quarter of a second each
        step = entered(m, m["train"])
        warm_until = time.perf_counter() + 0.25
        for _ in range(3):
            step()
            m["sync"]()
        while time.perf_counter() < warm_until:
            step()
            m["sync"]()
    log(f"[{name}] timing train steps (interleaved) ...")
    timers = [Timer(k, entered(m, m["train"]), m["sync"]) for k, m in modes.items()]
    interleave(timers, steps, budget)
    log(f"[{name}] timing eval steps (interleaved) ...")
    for m in modes.values():
        entered(m, m["eval"])()
        m["sync"]()
    etimers = [Timer(k, entered(m, m["eval"]), m["sync"]) for k, m in modes.items()]
    interleave(etimers, steps, budget / 2)
    return {
        "train_img_s": {t.name: batch / median(t.times) for t in timers},
        "train_steps_timed": {t.name: t.steps_timed for t in timers},
        "train_cores_used": {t.name: round(t.cores_used, 2) for t in timers},
        "eval_img_s": {t.name: batch / median(t.times) for t in etimers},
    }


def matmul_peak(size: int = 2048, repeats: int = 5, torch_device: str = "cpu") -> dict[str, Any]:
    """Best-of-``repeats`` float32 ``size^3`` matmul GFLOP/s, JAX (jitted) and torch, interleaved.

    Full float32 precision on both sides (JAX ``highest``; torch TF32 off), each timed to the
    end of its work (``block_until_ready``; ``torch.cuda.synchronize`` on a GPU).
    """
    import jax
    import jax.numpy as jnp
    import torch

    a_np = np.random.default_rng(0).standard_normal((size, size), np.float32)
    a = jnp.asarray(a_np)
    with jax.default_matmul_precision("highest"):
        f = jax.jit(lambda x, y: x @ y).lower(a, a).compile()
    f(a, a).block_until_ready()
    device = torch.device(torch_device)
    ta = torch.as_tensor(a_np, device=device)
    on_cuda = device.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(device)) if on_cuda else (lambda: None)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        torch.mm(ta, ta)
        sync()
        flops = 2.0 * size**3
        jt, tt = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            f(a, a).block_until_ready()
            jt.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            torch.mm(ta, ta)
            sync()
            tt.append(time.perf_counter() - t0)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return {"size": size, "precision": "float32, full", "jax_gflops": flops / min(jt) / 1e9, "torch_gflops": flops / min(tt) / 1e9}
