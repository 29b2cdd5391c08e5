"""Per-layer convolution timing: XLA's convolution, jaxcnn's oneDNN kernels and torch, side by side.

For each layer shape of the seed models' CNNs, one jitted forward and one jitted
forward+backward (input and weight gradients) of ``jaxcnn.nn.functional.conv2d`` with each
convolution backend, against ``torch.nn.functional.conv2d`` (NCHW) in the same process; the
three are timed interleaved (a few calls each in turn, the first of each turn untimed) and
the median per call is printed in milliseconds. Speed is never asserted: this prints a table.

    python scripts/benchmark_conv_layers.py [--repeats 30]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

# (label, batch, map size, in channels, out channels, kernel, padding)
LAYERS = [
    ("mnist_cnn conv1", 64, 28, 1, 10, 5, 0),
    ("mnist_cnn conv2", 64, 12, 10, 20, 5, 0),
    ("cifar_cnn conv1_1", 128, 32, 3, 16, 3, 1),
    ("cifar_cnn conv1_2", 128, 32, 16, 16, 3, 1),
    ("cifar_cnn conv2_1", 128, 16, 16, 32, 3, 1),
    ("cifar_cnn conv2_2", 128, 16, 32, 32, 3, 1),
    ("cifar_cnn conv3_1", 128, 8, 32, 64, 3, 1),
    ("cifar_cnn conv3_2", 128, 8, 64, 64, 3, 1),
    ("cifar_resnet18 layer1", 32, 32, 64, 64, 3, 1),
    ("cifar_resnet18 layer4", 32, 4, 512, 512, 3, 1),
    ("resnet50 layer3 1x1", 8, 4, 1024, 256, 1, 0),
]


def _median_ms(times: list[float]) -> float:
    return float(np.median(times)) * 1e3


def time_layer(batch: int, size: int, cin: int, cout: int, kernel: int, padding: int, repeats: int) -> dict[str, float]:
    """Median ms of forward and forward+backward for ``xla``, ``onednn`` and ``torch``."""
    import jax
    import jax.numpy as jnp
    import torch

    from jaxcnn.nn import functional as F
    from jaxcnn.nn.native.onednn_conv import using_conv_backend

    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((batch, size, size, cin), dtype=np.float32)
    w_np = rng.standard_normal((kernel, kernel, cin, cout), dtype=np.float32)
    x, w = jnp.asarray(x_np), jnp.asarray(w_np)
    calls = {}
    for backend in ("xla", "onednn"):
        with using_conv_backend(backend):
            forward = jax.jit(lambda x, w: F.conv2d(x, w, padding=padding))
            both = jax.jit(jax.grad(lambda x, w: jnp.sum(F.conv2d(x, w, padding=padding) ** 2), argnums=(0, 1)))
            forward(x, w).block_until_ready()
            jax.block_until_ready(both(x, w))
        calls[f"{backend} fwd"] = lambda f=forward: f(x, w).block_until_ready()
        calls[f"{backend} fwd+bwd"] = lambda f=both: jax.block_until_ready(f(x, w))
    xt = torch.from_numpy(np.ascontiguousarray(x_np.transpose(0, 3, 1, 2))).requires_grad_()
    wt = torch.from_numpy(np.ascontiguousarray(w_np.transpose(3, 2, 0, 1))).requires_grad_()

    def torch_forward():
        with torch.no_grad():
            torch.nn.functional.conv2d(xt, wt, padding=padding)

    def torch_both():
        xt.grad = wt.grad = None
        (torch.nn.functional.conv2d(xt, wt, padding=padding) ** 2).sum().backward()

    calls["torch fwd"], calls["torch fwd+bwd"] = torch_forward, torch_both
    times: dict[str, list[float]] = {name: [] for name in calls}
    while min(len(t) for t in times.values()) < repeats:
        for name, call in calls.items():
            call()  # untimed: the other framework's threads settle
            for _ in range(3):
                t0 = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - t0)
    return {name: _median_ms(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per variant (median reported)")
    args = parser.parse_args()
    import jaxcnn

    jaxcnn.configure_platform()  # quiet CPU JAX where no accelerator exists
    jaxcnn.keep_freed_host_memory()  # as `jaxcnn bench` runs

    header = "layer (batch, map, channels, kernel)"
    print(f"| {header} | fwd XLA | fwd oneDNN | fwd torch | fwd+bwd XLA | fwd+bwd oneDNN | fwd+bwd torch |")
    print("|---|---|---|---|---|---|---|")
    for label, batch, size, cin, cout, kernel, padding in LAYERS:
        ms = time_layer(batch, size, cin, cout, kernel, padding, args.repeats)
        cells = " | ".join(f"{ms[f'{b} {k}']:.2f}" for k in ("fwd", "fwd+bwd") for b in ("xla", "onednn", "torch"))
        print(f"| {label} ({batch}, {size}x{size}, {cin}->{cout}, {kernel}x{kernel}) | {cells} |", flush=True)


if __name__ == "__main__":
    main()
