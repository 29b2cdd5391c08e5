"""``jaxcnn train --data-parallel`` over 2 CPU devices follows the single-device run."""

import json
import os
import subprocess
import sys

import pytest

ARGS = [
    "--model", "mnist_cnn", "--dataset", "digits", "--epochs", "2", "--batch-size", "32", "--drop-last",
    "--train-limit", "256", "--eval-limit", "64", "--no-progress", "--no-tensorboard", "--no-plots",
]  # fmt: skip


def _train(out, *extra, xla_flags="--xla_force_host_platform_device_count=2"):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags)
    command = [sys.executable, "-m", "jaxcnn.cli", "train", *ARGS, "--out", str(out), *extra]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return json.loads((out / "results.json").read_text())["result"]


def test_data_parallel_training_matches_single_device(tmp_path):
    single = _train(tmp_path / "single")
    parallel = _train(tmp_path / "parallel", "--data-parallel")
    # The same global batches; the all-reduce sums gradients in another order, so losses agree
    # to float32 rounding (measured ~1e-7 relative), not bit for bit.
    for key in ("train_losses", "val_losses"):
        assert parallel[key] == pytest.approx(single[key], rel=1e-4), key
    assert abs(parallel["test_acc"] - single["test_acc"]) <= 100 / 64 + 1e-9  # at most one test image flips
    assert parallel["devices"] == 2 and single["devices"] == 1


def test_data_parallel_on_a_cpu_only_machine_uses_one_device_per_core(tmp_path):
    from jaxcnn._platform import usable_cores

    cores = usable_cores()
    if 32 % cores:
        pytest.skip(f"batch 32 does not split over {cores} cores")
    result = _train(tmp_path / "auto", "--data-parallel", xla_flags="")
    assert result["devices"] == cores
    assert result["complete"]
