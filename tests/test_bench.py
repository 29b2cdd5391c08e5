"""The benchmark package: runs end to end on tiny configs, plans each device's modes, no timing asserts."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jaxcnn._host_memory import glibc_on_linux

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]


def test_bench_runs_and_writes_json(tmp_path):
    from jaxcnn.cli import build_parser

    out = tmp_path / "bench.json"
    args = build_parser().parse_args(
        ["bench", "--models", "mlp", "--steps", "3", "--batch-size", "8", "--max-seconds", "0.5",
         "--no-compile", "--no-peak", "--host-devices", "1", "--out", str(out)]
    )  # fmt: skip
    assert args.func(args) == 0
    data = json.loads(out.read_text())
    assert {"load_before", "load_after", "machine", "config", "models"} <= set(data)
    assert data["machine"]["torch_device"] == "cpu" and "jax" in data["machine"]["versions"]
    (record,) = data["models"]
    assert record["model"] == "mlp" and record["batch_size"] == 8
    for key in ("train_img_s", "eval_img_s", "train_ratio_jax_over", "jax_trace_s", "jax_compile_s", "compile_s",
                "jax_flops_per_step_xla", "jax_gflops_xla", "pipeline_img_s", "modes", "pairs"):  # fmt: skip
        assert key in record, key
    assert set(record["train_img_s"]) == {"jax", "torch_eager", "torch_channels_last"}
    assert all(v > 0 for v in record["train_img_s"].values())
    assert {m["device"] for m in record["modes"].values()} == {"cpu"}
    pair = record["pairs"]["fp32"]
    assert pair["jax"] == "jax" and pair["train_ratio_jax_over_best_torch"] == pytest.approx(
        record["train_img_s"]["jax"] / max(record["train_img_s"]["torch_eager"], record["train_img_s"]["torch_channels_last"])
    )


def test_timer_times_a_window_from_its_first_step_until_its_work_is_done(monkeypatch):
    """A window's time includes the queued work its ``sync`` waits for, not the settle steps' work."""
    from jaxcnn.bench import timing

    clock = {"now": 0.0}
    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock["now"])
    queued = []

    def step():  # dispatch: 1 ms of host time, 10 ms of work queued
        queued.append(0.010)
        clock["now"] += 0.001

    def sync():  # the queued work runs
        clock["now"] += sum(queued)
        queued.clear()

    timer = timing.Timer("fake", step, sync)
    timer.run(4, settle=2)
    timer.run(4, settle=2)
    assert timer.steps_timed == 8 and len(timer.times) == 2
    assert timer.times == pytest.approx([0.011, 0.011])
    assert timer.seconds_timed == pytest.approx(0.088)


def test_cpu_plan_times_float32_against_every_torch_mode_on_the_cpu():
    from jaxcnn.bench.modes import plan_modes

    plan = plan_modes("cpu", torch_cuda=True, jax_devices=2)  # a CUDA torch still pairs with JAX's CPU on the CPU
    assert list(plan) == ["jax", "jax_dp", "torch_eager", "torch_channels_last", "torch_compile"]
    assert {m.device for m in plan.values()} == {"cpu"} and {m.pair for m in plan.values()} == {"fp32"}
    assert plan["jax_dp"].data_parallel and not plan["jax"].data_parallel
    assert all(m.matmul_precision is None and m.compute_dtype is None and m.autocast is None for m in plan.values())
    assert all(m.tf32_conv is None and m.tf32_matmul is None and not m.cudnn_benchmark for m in plan.values())
    assert plan["torch_channels_last"].memory_format == "channels_last" and plan["torch_compile"].compile
    assert "torch_compile" not in plan_modes("cpu", torch_compile=False)
    assert "jax_dp" not in plan_modes("cpu", jax_devices=1)


def test_gpu_plan_pairs_each_precision_on_the_gpu():
    from jaxcnn.bench.modes import GPU_PAIRS, plan_modes

    plan = plan_modes("gpu", torch_cuda=True, jax_devices=8)
    assert {m.pair for m in plan.values()} == set(GPU_PAIRS)
    assert not any(m.data_parallel for m in plan.values())
    for name, m in plan.items():
        assert m.device == ("gpu" if m.framework == "jax" else "cuda"), name
        if m.framework == "torch":
            assert m.cudnn_benchmark, name
    jax_modes = {m.pair: m for m in plan.values() if m.framework == "jax"}
    assert jax_modes["fp32_full"].matmul_precision == "highest" and jax_modes["fp32_full"].compute_dtype is None
    assert jax_modes["fp32_default"].matmul_precision is None and jax_modes["fp32_default"].compute_dtype is None
    assert jax_modes["bf16"].compute_dtype == "bfloat16"
    full = [m for m in plan.values() if m.framework == "torch" and m.pair == "fp32_full"]
    assert {m.name for m in full} == {"torch_fp32_full", "torch_compile_fp32_full"}
    assert all(m.tf32_conv is False and m.tf32_matmul is False and m.autocast is None for m in full)
    default = plan["torch_fp32_default"]  # torch's own defaults, stated: TF32 convolutions, full float32 matmuls
    assert default.tf32_conv is True and default.tf32_matmul is False and default.autocast is None and not default.compile
    bf16 = [m for m in plan.values() if m.framework == "torch" and m.pair == "bf16"]
    assert {m.name for m in bf16} == {"torch_bf16", "torch_compile_bf16"}
    assert all(m.autocast == "bfloat16" and m.memory_format == "channels_last" for m in bf16)
    assert all("TF32" in m.precision or "bfloat16" in m.precision for m in plan.values())
    # choices: pairs, torch.compile's pairs, and no torch mode where torch has no CUDA
    assert set(plan_modes("gpu", torch_cuda=True, pairs=["bf16"])) == {"jax_bf16", "torch_bf16", "torch_compile_bf16"}
    assert "torch_compile_fp32_full" not in plan_modes("gpu", torch_cuda=True, compile_pairs=["bf16"])
    assert {m.framework for m in plan_modes("gpu", torch_cuda=False).values()} == {"jax"}
    with pytest.raises(ValueError, match="unknown precision pairs"):
        plan_modes("gpu", torch_cuda=True, pairs=["fp16"])


def test_torch_modes_keep_model_batch_and_optimizer_on_the_modes_device():
    """On the meta device, any tensor the torch path made on the CPU would fail the step."""
    import torch

    from jaxcnn.bench.models import MODEL_CONFIGS, inputs
    from jaxcnn.bench.modes import Mode
    from jaxcnn.bench.torch_side import torch_setup

    cfg = MODEL_CONFIGS["mnist_cnn"]
    x, y = inputs(cfg, 4)
    for memory_format in ("contiguous", "channels_last"):
        mode = torch_setup(cfg, x, y, Mode("t", "torch", "meta", "fp32", memory_format=memory_format))
        mode["train"](), mode["eval"](), mode["sync"]()
        assert mode["device"] == "meta"
        assert {p.device.type for p in mode["model"].parameters()} == {"meta"}
        assert {t.device.type for s in mode["optimizer"].state.values() for t in s.values() if torch.is_tensor(t)} == {"meta"}
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.benchmark
    try:  # autocast bf16 on the CPU; the process-wide flags are the mode's
        mode = torch_setup(cfg, x, y, Mode("t", "torch", "cpu", "bf16", memory_format="channels_last", autocast="bfloat16",
                                           tf32_conv=False, tf32_matmul=True, cudnn_benchmark=True))  # fmt: skip
        torch.backends.cudnn.allow_tf32 = True
        mode["enter"]()
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.benchmark) == (False, True, True)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.benchmark = saved


def test_jax_mode_precision_reaches_the_compiled_step():
    from jaxcnn.bench.jax_side import jax_setup
    from jaxcnn.bench.models import MODEL_CONFIGS, inputs
    from jaxcnn.bench.modes import Mode

    cfg = MODEL_CONFIGS["mlp"]
    x, y = inputs(cfg, 2)
    texts = {
        p: jax_setup(cfg, x, y, Mode("j", "jax", "cpu", "fp32", matmul_precision=p))["lowered_text"]()
        for p in ("highest", None)
    }
    assert "HIGHEST" in texts["highest"]
    assert "HIGHEST" not in texts[None]


@pytest.mark.slow  # ~30 s: a benchmark run over two host devices
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


@pytest.mark.slow  # ~40 s: six fresh processes
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


@pytest.mark.slow  # ~25 s: eight fresh processes
def test_startup_entry_times_both_frameworks_in_fresh_processes():
    from jaxcnn.bench.startup import PROBES, format_startup_table, startup_benchmark

    result = startup_benchmark(["mlp"], rounds=1, log=lambda _: None)
    record = result["models"]["mlp"]
    assert set(record) == {*PROBES, "per_round"}
    assert record["torch-create"]["source"] == "torch_ref"  # torchvision has no mlp: the twin is built
    for probe, figures in (("torch-create", ("import_s", "create_s")), ("torch-load", ("import_s", "create_s", "load_s")),
                           ("jax-create", ("import_s", "create_s")), ("jax-convert", ("import_s", "convert_s"))):  # fmt: skip
        for figure in (*figures, "process_s"):
            assert record[probe][figure] > 0, (probe, figure)
        assert record[probe]["process_s"] > record[probe]["import_s"]
    table = format_startup_table(result)
    assert "create jaxcnn" in table and table.splitlines()[-1].startswith("mlp")


def test_time_to_accuracy_record_leaves_the_compiling_epoch_out_of_the_pace():
    from jaxcnn.bench.tta import tta_record

    run = tta_record([90.0, 95.0, 97.1, 97.5], [3.0, 0.5, 0.6, 0.7], target=0.97, test_acc=97.0)
    assert run["reached"] and run["epochs"] == 3 and run["seconds"] == pytest.approx(4.1) and run["accuracy"] == 97.1
    assert run["seconds_per_epoch"] == pytest.approx(0.6)  # (0.5 + 0.6 + 0.7) / 3: the compiling epoch left out
    assert [h["val_acc"] for h in run["history"]] == [90.0, 95.0, 97.1, 97.5]
    missed = tta_record([50.0, 60.0], [2.0, 1.0], target=0.97)
    assert not missed["reached"] and missed["epochs"] == 2 and missed["seconds"] == 3.0


def test_time_to_accuracy_skips_without_mnist_files(tmp_path, monkeypatch):
    from jaxcnn.bench.tta import time_to_accuracy

    monkeypatch.setenv("JAXCNN_DATA_DIR", str(tmp_path))
    messages = []
    assert "no MNIST t10k files in" in time_to_accuracy(log=messages.append)["skipped"]
    assert str(tmp_path / "mnist") in messages[0]


@pytest.mark.skipif(importlib.util.find_spec("jaxcnn.data.benchmark") is not None, reason="the pipeline benchmark exists")
def test_pipeline_entry_without_the_data_benchmark_fails_with_one_clear_line(tmp_path, capsys):
    from jaxcnn.bench import main

    assert main(["--pipeline", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == "jaxcnn bench --pipeline: this jaxcnn has no data pipeline benchmark (jaxcnn.data.benchmark)"


def test_bench_package_reaches_nothing_outside_itself():
    """No module over ~400 lines, no path outside the package, no `python -c` orchestration."""
    for path in (ROOT / "jaxcnn" / "bench").glob("*.py"):
        text = path.read_text()
        assert len(text.splitlines()) <= 400, path
        assert "parent.parent" not in text and "shared" not in text and '"-c"' not in text, path


def test_conv_layer_script_times_all_three_kernels():
    import jax

    if jax.default_backend() != "cpu":
        pytest.skip("the oneDNN kernels run on XLA:CPU only")
    path = ROOT / "scripts" / "benchmark_conv_layers.py"
    spec = importlib.util.spec_from_file_location("benchmark_conv_layers", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    ms = script.time_layer(batch=2, size=6, cin=3, cout=4, kernel=3, padding=1, repeats=2)
    assert set(ms) == {f"{b} {k}" for b in ("xla", "onednn", "torch") for k in ("fwd", "fwd+bwd")}
    assert all(value > 0 for value in ms.values())


def test_onednn_implementations_script_times_every_kind_in_both_layouts(tmp_path):
    from jaxcnn.nn import native

    if not native.onednn_available():
        pytest.skip(native.onednn_status())
    path = ROOT / "scripts" / "onednn_implementations.py"
    spec = importlib.util.spec_from_file_location("onednn_implementations", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    binary = script.build(tmp_path)
    for layout in ("nhwc", "blocked"):
        rows = script.time_shape(binary, (2, 16, 6, 16, 3, 1, 1), layout, threads=1, runs=2)
        assert {kind for kind, _, _ in rows} == {"forward", "input_grad", "weight_grad"}
        assert all(ms > 0 and not name.startswith("ref:") for _, name, ms in rows)
