"""``--resume`` past a damaged newest checkpoint, and SIGTERM -> checkpoint -> resume, bit-exact."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxcnn.cli import main
from jaxcnn.train import RunCheckpointer, TrainConfig, experiment
from jaxcnn.train.logging import read_results

# 4 steps per epoch, checkpoints every 2 steps; the interrupted run stops at step 8 (epoch 2 of 3)
RUN = dict(
    model="mlp", dataset="digits", epochs=3, batch_size=16, train_limit=64, eval_limit=32, lr=0.05, momentum=0.9,
    checkpoint_every=2, keep_checkpoints=3, log_every=2, progress=False, tensorboard=False, plots=False,
)  # fmt: skip
FLAGS = ["--model", "mlp", "--epochs", "3", "--batch-size", "16", "--train-limit", "64", "--eval-limit", "32",
         "--lr", "0.05", "--checkpoint-every", "2", "--keep-checkpoints", "3", "--log-every", "2", "--no-progress",
         "--no-tensorboard", "--no-plots"]  # fmt: skip


def _arrays(out: Path) -> dict:
    with RunCheckpointer(out / "checkpoints", read_only=True) as ckpt:
        return ckpt.restore_arrays()


def _assert_same(a: dict, b: dict) -> None:
    flat_a, flat_b = jax.tree_util.tree_flatten_with_path(a)[0], dict(jax.tree_util.tree_flatten_with_path(b)[0])
    assert len(flat_a) == len(flat_b) > 4
    for path, value in flat_a:
        assert np.array_equal(value, flat_b[path]), jax.tree_util.keystr(path)


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


def _damage(step_dir: Path, how: str) -> None:
    data = max((p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"), key=lambda p: p.stat().st_size)
    if how == "random":
        for p in (step_dir / "state").rglob("*"):
            if p.is_file() and p.parent.name == "d":
                p.write_bytes(np.random.default_rng(0).bytes(p.stat().st_size))
    elif how == "truncated":
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    else:
        data.unlink()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An interrupted run (max_steps 8: checkpoints 4, 6, 8) and the uninterrupted reference."""
    root = tmp_path_factory.mktemp("runs")
    experiment(TrainConfig(**RUN, out=str(root / "stopped"), max_steps=8))
    experiment(TrainConfig(**RUN, out=str(root / "reference")))
    return root


@pytest.mark.parametrize("how", ["random", "truncated", "deleted"])
def test_resume_falls_back_past_a_damaged_newest_checkpoint(runs, tmp_path, how, capfd):
    out = tmp_path / "run"
    shutil.copytree(runs / "stopped", out)
    _damage(out / "checkpoints" / "8", how)
    before = _digest(out / "checkpoints" / "8")
    if how == "random":  # through the command line: one warning line, nothing else on stderr
        proc = subprocess.run([sys.executable, "-m", "jaxcnn.cli", "train", *FLAGS, "--out", str(out), "--resume"],
                              capture_output=True, text=True, timeout=600,
                              env={**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")})  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        err = proc.stderr
    else:
        assert main(["train", *FLAGS, "--out", str(out), "--resume"]) == 0
        err = capfd.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and re.match(r"warning: checkpoint step 8 cannot be read \(.+\); left on disk", lines[0]), err
    assert "Event loop is closed" not in err and "Traceback" not in err
    assert read_results(out)["result"]["resumed_from"] == 6
    assert _digest(out / "checkpoints" / "8") == before  # left untouched
    _assert_same(_arrays(out), _arrays(runs / "reference"))


def test_no_restorable_checkpoint_and_evaluate_name_the_damaged_step(runs, tmp_path, capfd):
    out = tmp_path / "run"
    shutil.copytree(runs / "stopped", out)
    _damage(out / "checkpoints" / "8", "truncated")
    assert main(["evaluate", "--checkpoint", str(out)]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checkpoint step 8 cannot be read" in err[0] and "--step" in err[0], err
    for step in (4, 6):
        _damage(out / "checkpoints" / str(step), "deleted")
    assert main(["train", *FLAGS, "--out", str(out), "--resume"]) == 2
    err = capfd.readouterr().err
    assert len(err.strip().splitlines()) == 4 and "Traceback" not in err and "Event loop" not in err  # 3 warnings + error
    assert err.strip().splitlines()[-1].startswith("jaxcnn train: error: checkpoint step")


def test_sigterm_checkpoints_stops_and_resumes_bit_exactly(tmp_path):
    # 32 steps per epoch, 2 epochs; a checkpoint every 5 steps tells when training is under way
    flags = ["--model", "mlp", "--epochs", "2", "--batch-size", "8", "--train-limit", "256", "--eval-limit", "32",
             "--checkpoint-every", "5", "--log-every", "1", "--no-progress", "--no-tensorboard", "--no-plots"]  # fmt: skip
    out = tmp_path / "run"
    env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    proc = subprocess.Popen([sys.executable, "-m", "jaxcnn.cli", "train", *flags, "--out", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not (out / "checkpoints" / "5").is_dir() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, (proc.returncode, stdout, stderr)
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    stopped_at = int(re.search(r"stopped by SIGTERM at step (\d+); checkpoint saved", stderr).group(1))
    assert 5 <= stopped_at < 64
    with RunCheckpointer(out / "checkpoints", read_only=True) as ckpt:
        assert ckpt.latest_step() == stopped_at

    assert main(["train", *flags, "--out", str(out), "--resume"]) == 0
    assert main(["train", *flags, "--out", str(tmp_path / "reference")]) == 0
    assert read_results(out)["result"]["resumed_from"] == stopped_at
    _assert_same(_arrays(out), _arrays(tmp_path / "reference"))
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # fit put the previous handler back
