"""``jaxcnn bench``: jaxcnn against torch_ref, side by side in one run (see :mod:`jaxcnn.bench`)."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jaxcnn.bench.models import GPU_MODEL_CONFIGS, MODEL_CONFIGS, model_configs
from jaxcnn.bench.modes import GPU_PAIRS

__all__ = ["add_bench_parser", "main", "run"]

DESCRIPTION = (
    "Training/eval throughput of jaxcnn's jitted steps against the torch_ref twins, side by side in one run "
    "on one device (img/s, compile time, FLOP/s; on a GPU by precision pair); --startup: import/create/convert "
    "times; --pipeline DIR: the data pipeline."
)


def add_bench_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``bench`` subcommand on an ``argparse`` subparsers object."""
    parser = subparsers.add_parser("bench", help="jaxcnn vs torch_ref throughput, side by side", description=DESCRIPTION)
    every = list(model_configs(False))
    parser.add_argument("--models", nargs="+", default=None, choices=every, metavar="MODEL",
                        help=f"models to benchmark (default on a CPU: {' '.join(MODEL_CONFIGS)}; "
                        f"on a GPU: {' '.join(GPU_MODEL_CONFIGS)}; any of {', '.join(every)})")  # fmt: skip
    parser.add_argument("--steps", type=int, default=None, help="timed steps per mode (median reported; default 30)")
    parser.add_argument("--batch-size", type=int, help="override every model's default batch size")
    parser.add_argument("--max-seconds", type=float, help="time budget per mode and model (default: per model)")
    parser.add_argument("--out", default=None, help="write the JSON results here (after each model; default: print only)")
    parser.add_argument("--markdown", default=None, metavar="PATH", help="also write a Markdown table of the run here")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--compile", dest="force_compile", action="store_true",
                        help="run torch.compile for every model (default: only where it compiles quickly)")
    parser.add_argument("--pairs", nargs="+", choices=GPU_PAIRS, default=None,
                        help="on a GPU, the precision pairs to time (default: all; densenet121 bf16 only)")
    parser.add_argument("--compile-pairs", nargs="+", choices=GPU_PAIRS, default=None,
                        help="on a GPU, the pairs given a torch.compile mode (default: fp32_full bf16)")
    parser.add_argument("--time-budget", type=float, default=None, metavar="S",
                        help="start no further model after S seconds (those left are recorded as skipped)")
    parser.add_argument("--no-peak", action="store_true", help="skip the 2048^3 matmul peak measurement")
    parser.add_argument("--host-devices", type=int, default=None, metavar="N",
                        help="on a CPU-only machine, split the CPU into N JAX devices and also time a data-parallel "
                        "JAX step over them (default: one per core; 1: single device only)")  # fmt: skip
    parser.add_argument("--time-to-accuracy", action="store_true",
                        help="also train mnist_cnn on mnist_t10k with jaxcnn's and torch_ref's trainers, time to 97%% "
                        "validation accuracy")  # fmt: skip
    parser.add_argument("--tta-epochs", type=int, default=8, help="epochs each trainer runs for --time-to-accuracy")
    parser.add_argument("--data-dir", default=None,
                        help="MNIST folder for --time-to-accuracy (default: $JAXCNN_DATA_DIR/mnist or ~/jaxcnn_data/mnist; "
                        "skipped when the files are absent)")  # fmt: skip
    parser.add_argument("--isolated", action="store_true",
                        help="also time each framework in a process of its own (CPU: JAX; torch eager and "
                        "channels_last), alternating, and report those ratios")  # fmt: skip
    parser.add_argument("--isolated-rounds", type=int, default=2, metavar="R", help="alternating rounds for --isolated (default 2)")
    parser.add_argument("--startup", action="store_true",
                        help="only the start-up entry: import, create and convert times of jaxcnn and torch, "
                        "each in a fresh process")  # fmt: skip
    parser.add_argument("--startup-models", nargs="+", default=None, metavar="MODEL", help="default: resnet50 densenet121")
    parser.add_argument("--startup-rounds", type=int, default=1, metavar="R", help="rounds for --startup (best kept)")
    parser.add_argument("--pipeline", default=None, metavar="DIR",
                        help="only the data pipeline entry: jaxcnn.data.benchmark on the image folder DIR")
    parser.add_argument("--workers", type=int, default=None, metavar="N", help="loader workers for --pipeline")
    parser.set_defaults(func=run)
    return parser


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _writer(path: str | None):
    def write(results: dict[str, Any]) -> None:
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(json.dumps(results, indent=2, default=float) + "\n")
            _log(f"wrote {path}")

    return write


def _pipeline(args: argparse.Namespace) -> dict[str, Any] | None:
    import importlib

    try:
        data_benchmark = importlib.import_module("jaxcnn.data.benchmark")
    except ModuleNotFoundError as exc:
        if exc.name != "jaxcnn.data.benchmark":
            raise
        print("jaxcnn bench --pipeline: this jaxcnn has no data pipeline benchmark (jaxcnn.data.benchmark)", file=sys.stderr)
        return None
    options: dict[str, Any] = {"workers": args.workers}
    if args.batch_size:
        options["batch_size"] = args.batch_size
    if args.steps:
        options["steps"] = args.steps
    if args.models and len(args.models) == 1:
        options["model"] = args.models[0]
    result = data_benchmark.pipeline_benchmark(args.pipeline, **options)
    print(data_benchmark.format_pipeline_table(result))
    return result


def run(args: argparse.Namespace) -> int:
    """Run the ``bench`` subcommand: print the tables, write the JSON when ``--out`` is given."""
    from jaxcnn._host_memory import keep_freed_host_memory
    from jaxcnn._platform import configure_platform, use_host_devices

    configure_platform()  # quiet CPU-only start, as `import jaxcnn` did
    keep_freed_host_memory()  # this program owns its process; a no-op off the CPU or where already set
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # leave the GPU's memory to torch too
    write = _writer(args.out)
    if args.startup or args.pipeline:
        results: dict[str, Any] = {}
        if args.startup:
            from jaxcnn.bench.startup import STARTUP_MODELS, format_startup_table, startup_benchmark

            results["startup"] = startup_benchmark(args.startup_models or STARTUP_MODELS, rounds=args.startup_rounds, log=_log)
            print(format_startup_table(results["startup"]))
        if args.pipeline:
            results["pipeline"] = _pipeline(args)
            if results["pipeline"] is None:
                return 2
        write(results)
        return 0

    try:
        use_host_devices(args.host_devices)  # before JAX starts; no-op with an accelerator
    except RuntimeError:
        _log("JAX has already started in this process: timing on its current devices")
    from jaxcnn.bench.report import format_markdown, format_table
    from jaxcnn.bench.runner import run_benchmark

    torch_compile = False if args.no_compile else (True if args.force_compile else None)
    results = run_benchmark(
        args.models, steps=args.steps or 30, batch_size=args.batch_size, torch_compile=torch_compile,
        max_seconds=args.max_seconds, pairs=args.pairs,
        compile_pairs=args.compile_pairs, time_budget=args.time_budget, peak=not args.no_peak, log=_log, on_model=write,
    )  # fmt: skip
    if args.isolated:
        from jaxcnn.bench.isolated import isolated_benchmark

        if results["machine"]["jax_backend"] == "cpu":
            cpu_models = [r["model"] for r in results["models"] if r["model"] in MODEL_CONFIGS]
            results["isolated"] = isolated_benchmark(
                cpu_models, rounds=args.isolated_rounds, steps=args.steps or 30, max_seconds=args.max_seconds, log=_log
            )
            write(results)
        else:
            _log("--isolated times the CPU modes only (where the frameworks' thread pools compete); skipped")
    if args.time_to_accuracy:
        from jaxcnn.bench.tta import time_to_accuracy

        results["time_to_accuracy"] = time_to_accuracy(
            epochs=args.tta_epochs, data_dir=args.data_dir, torch_device=results["machine"]["torch_device"], log=_log
        )
        write(results)
    print(format_table(results))
    if args.markdown:
        date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        text = format_markdown(results, title="jaxcnn against torch on one device: train-step throughput", date=date)
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(text)
        _log(f"wrote {args.markdown}")
    return 1 if any("error" in r for r in results["models"]) else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m jaxcnn.bench [options]`` (the options of ``jaxcnn bench``)."""
    parser = argparse.ArgumentParser(prog="jaxcnn")
    sub = parser.add_subparsers(dest="command", required=True)
    add_bench_parser(sub)
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    return run(args)
