"""Every oneDNN implementation of a convolution, timed alone: NHWC activations against blocked.

jaxcnn hands oneDNN its activations NHWC; torch's NCHW tensors reach oneDNN's blocked
layout (``nChw16c`` on AVX-512). This builds ``onednn_implementations.cc`` against the
oneDNN that jaxcnn uses and, for each shape, times every implementation oneDNN offers for
the forward, input-gradient and weight-gradient primitives in both layouts (warm caches, best
of ``--runs`` calls, on the shape's number of OpenMP threads). It prints oneDNN's first choice, which
is what jaxcnn and torch get, and the fastest. Speed is never asserted: this prints a table.

    python scripts/onednn_implementations.py [--shape N,C,H,O,K,STRIDE,PAD[,THREADS]] [--runs 10]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
from pathlib import Path

from jaxcnn.nn import native

SOURCE = Path(__file__).with_name("onednn_implementations.cc")

# (label, batch, channels in, map size, channels out, kernel, stride, padding, threads)
SHAPES = [
    ("gap_vgg 64->64 3x3", 32, 64, 32, 64, 3, 1, 1, 2),
    ("resnet50 256->256 3x3, half batch", 4, 256, 4, 256, 3, 1, 1, 1),
    ("resnet50 256->256 3x3", 8, 256, 4, 256, 3, 1, 1, 2),
    ("resnet50 1x1 1024->256, half batch", 4, 1024, 4, 256, 1, 1, 0, 1),
]


def build(directory: Path) -> Path:
    """Compiles the timing program into ``directory``; returns its path."""
    include, library = native.onednn_paths()
    binary = directory / "onednn_implementations"
    command = [
        native.cxx(), "-O2", "-std=c++17", str(SOURCE), "-I", str(include), "-o", str(binary),
        str(library), f"-Wl,-rpath,{library.parent}",
    ]  # fmt: skip
    subprocess.run(command, check=True)
    return binary


def time_shape(binary: Path, shape: tuple[int, ...], layout: str, threads: int, runs: int) -> list[tuple[str, str, float]]:
    """``(kind, implementation, ms)`` for every implementation, in oneDNN's order of preference.

    ``shape`` is ``(batch, channels in, map size, channels out, kernel, stride, padding)``
    (square maps and kernels); ``layout`` is ``'nhwc'`` or ``'blocked'``.
    """
    arguments = [str(binary), *map(str, shape), layout, str(runs)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    output = subprocess.run(arguments, check=True, capture_output=True, text=True, env=env).stdout
    rows = []
    for line in output.splitlines():
        kind, implementation, ms = line.split()
        rows.append((kind, implementation, float(ms)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", action="append", help="N,C,H,O,K,STRIDE,PAD[,THREADS]; repeatable")
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    shapes = SHAPES
    if args.shape:
        shapes = []
        for text in args.shape:
            numbers = [int(x) for x in text.split(",")]
            threads = numbers[7] if len(numbers) > 7 else os.cpu_count() or 1
            shapes.append((text, *numbers[:7], threads))
    with tempfile.TemporaryDirectory() as directory:
        binary = build(Path(directory))
        print(f"{'shape':38s} {'layout':8s} {'kind':12s} {'first choice':44s} {'ms':>8s}   {'fastest':44s} {'ms':>8s}")
        for label, *shape, threads in shapes:
            for layout in ("nhwc", "blocked"):
                by_kind: dict[str, list[tuple[str, float]]] = {}
                for kind, implementation, ms in time_shape(binary, tuple(shape), layout, threads, args.runs):
                    by_kind.setdefault(kind, []).append((implementation, ms))
                for kind, options in by_kind.items():
                    first, fastest = options[0], min(options, key=lambda option: option[1])
                    print(
                        f"{label[:38]:38s} {layout:8s} {kind:12s} {first[0][:44]:44s} {first[1]:8.3f}   "
                        f"{fastest[0][:44]:44s} {fastest[1]:8.3f}"
                    )


if __name__ == "__main__":
    main()
