"""Smoke test of the benchmark: runs end to end on a tiny config and writes JSON (no timing asserts)."""

import json
import os
import subprocess
import sys

import pytest

from jaxcnn._host_memory import glibc_on_linux

pytest.importorskip("torch")


def test_bench_runs_and_writes_json(tmp_path):
    from jaxcnn.cli import build_parser

    out = tmp_path / "bench.json"
    args = build_parser().parse_args(
        ["bench", "--models", "mlp", "--steps", "3", "--batch-size", "8", "--max-seconds", "0.5",
         "--no-compile", "--no-peak", "--host-devices", "1", "--out", str(out)]
    )
    assert args.func(args) == 0
    data = json.loads(out.read_text())
    assert {"load_before", "load_after", "machine", "config", "models"} <= set(data)
    (record,) = data["models"]
    assert record["model"] == "mlp" and record["batch_size"] == 8
    for key in ("train_img_s", "eval_img_s", "train_ratio_jax_over", "jax_trace_s", "jax_compile_s",
                "jax_flops_per_step_xla", "jax_gflops_xla", "pipeline_img_s"):
        assert key in record, key
    assert {"jax", "torch_eager", "torch_channels_last"} <= set(record["train_img_s"])
    assert all(v > 0 for v in record["train_img_s"].values())


def test_timer_times_a_window_from_its_first_step_until_its_work_is_done(monkeypatch):
    """A window's time includes the queued work its ``sync`` waits for, not the settle steps' work."""
    from jaxcnn import bench

    clock = {"now": 0.0}
    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock["now"])
    queued = []

    def step():  # dispatch: 1 ms of host time, 10 ms of work queued
        queued.append(0.010)
        clock["now"] += 0.001

    def sync():  # the queued work runs
        clock["now"] += sum(queued)
        queued.clear()

    timer = bench._Timer("fake", step, sync)
    timer.run(4, settle=2)
    timer.run(4, settle=2)
    assert timer.steps_timed == 8 and len(timer.times) == 2
    assert timer.times == pytest.approx([0.011, 0.011])
    assert timer.seconds_timed == pytest.approx(0.088)


def test_bench_times_a_data_parallel_step_over_host_devices(tmp_path):
    out = tmp_path / "bench.json"
    command = [sys.executable, "-m", "jaxcnn.bench", "--models", "mnist_cnn", "--steps", "3", "--batch-size", "8",
               "--max-seconds", "0.5", "--no-compile", "--no-peak", "--host-devices", "2", "--out", str(out)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ, "XLA_FLAGS": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    (record,) = json.loads(out.read_text())["models"]
    assert record["jax_dp_devices"] == 2
    assert record["train_img_s"]["jax_dp"] > 0 and record["eval_img_s"]["jax_dp"] > 0
    assert record["train_ratio_jax_dp_over"]["eager"] > 0
    assert "JAX dp" in result.stdout


def test_isolated_runs_each_framework_in_its_own_process(tmp_path):
    out = tmp_path / "bench.json"
    command = [sys.executable, "-m", "jaxcnn.bench", "--models", "mlp", "--steps", "3", "--max-seconds", "0.3",
               "--no-compile", "--no-peak", "--host-devices", "1", "--isolated", "--isolated-rounds", "2",
               "--out", str(out)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    isolated = json.loads(out.read_text())["isolated"]
    assert isolated["rounds"] == 2
    record = isolated["models"]["mlp"]
    assert len(record["per_round"]) == 2
    for kind in ("train_img_s", "eval_img_s"):
        assert set(record[kind]) == {"jax", "torch_eager", "torch_channels_last"}
        for mode, best in record[kind].items():  # the best round is kept
            assert best == max(r[kind][mode] for r in record["per_round"]) > 0
    assert record["train_ratio_jax_over"]["eager"] == pytest.approx(
        record["train_img_s"]["jax"] / record["train_img_s"]["torch_eager"]
    )
    assert "one framework per process (best of 2 alternating rounds)" in result.stdout
    if glibc_on_linux():  # torch as a plain torch script runs
        assert record["per_round"][0]["keeps_host_memory"] == {"jax": True, "torch_eager": False, "torch_channels_last": False}


def test_time_to_accuracy_record_leaves_the_compiling_epoch_out_of_the_pace():
    from jaxcnn.bench import _tta_run

    run = _tta_run([(0.90, 3.0), (0.95, 3.5), (0.971, 4.1)], target=0.97)
    assert run["reached"] and run["epochs"] == 3 and run["seconds"] == 4.1 and run["accuracy"] == 0.971
    assert run["seconds_per_epoch"] == pytest.approx(0.55)  # (0.5 + 0.6) / 2, not 4.1 / 3
    assert [h["accuracy"] for h in run["history"]] == [0.90, 0.95, 0.971]
    assert not _tta_run([(0.5, 2.0)], target=0.97)["reached"]


def test_conv_layer_script_times_all_three_kernels():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "benchmark_conv_layers.py"
    spec = importlib.util.spec_from_file_location("benchmark_conv_layers", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    ms = script.time_layer(batch=2, size=6, cin=3, cout=4, kernel=3, padding=1, repeats=2)
    assert set(ms) == {f"{b} {k}" for b in ("xla", "onednn", "torch") for k in ("fwd", "fwd+bwd")}
    assert all(value > 0 for value in ms.values())


def test_onednn_implementations_script_times_every_kind_in_both_layouts(tmp_path):
    import importlib.util
    from pathlib import Path

    from jaxcnn.nn import native

    if not native.onednn_available():
        pytest.skip(native.onednn_status())
    path = Path(__file__).resolve().parents[1] / "scripts" / "onednn_implementations.py"
    spec = importlib.util.spec_from_file_location("onednn_implementations", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    binary = script.build(tmp_path)
    for layout in ("nhwc", "blocked"):
        rows = script.time_shape(binary, (2, 16, 6, 16, 3, 1, 1), layout, threads=1, runs=2)
        assert {kind for kind, _, _ in rows} == {"forward", "input_grad", "weight_grad"}
        assert all(ms > 0 and not name.startswith("ref:") for _, name, ms in rows)
