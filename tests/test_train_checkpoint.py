"""Checkpoints: bitwise resume after SIGKILL (even mid-write), resume rules, divergence stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxcnn.train import (
    NonFiniteStateError,
    RunCheckpointer,
    RunExistsError,
    TrainConfig,
    Trainer,
    TrainingDivergedError,
    experiment,
)
from jaxcnn.train.logging import read_results

REPO = Path(__file__).resolve().parents[1]
# 32 steps per epoch x 3 epochs, a checkpoint every 4 steps: long enough to be killed mid-run.
KILL_RUN = dict(
    model="mlp", dataset="digits", epochs=3, batch_size=8, train_limit=256, eval_limit=64, lr=0.05,
    momentum=0.9, checkpoint_every=4, log_every=4, keep_checkpoints=3, progress=False, plots=False,
)  # fmt: skip
_SCRIPT = (
    "import json, sys\n"
    "from jaxcnn.train import TrainConfig, experiment\n"
    "experiment(TrainConfig(**json.loads(sys.argv[1])), resume=sys.argv[2] == '1')\n"
)
_TIMINGS = ("epoch_seconds", "run_seconds", "resumed_from")


def _run(config: dict, resume: bool) -> subprocess.Popen:
    env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    return subprocess.Popen(
        [sys.executable, "-c", _SCRIPT, json.dumps(config), "1" if resume else "0"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _final_arrays(out: Path) -> dict:
    with RunCheckpointer(out / "checkpoints", read_only=True) as ckpt:
        return ckpt.restore_arrays()


def _assert_same_arrays(a: dict, b: dict) -> None:
    flat_a = jax.tree_util.tree_flatten_with_path(a)[0]
    flat_b = dict(jax.tree_util.tree_flatten_with_path(b)[0])
    assert len(flat_a) == len(flat_b) and len(flat_a) > 4
    for path, value in flat_a:
        assert np.array_equal(value, flat_b[path]), jax.tree_util.keystr(path)


def _numbers(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in _TIMINGS}


@pytest.mark.slow  # ~35 s: three subprocess runs; tests/test_resume_damaged.py covers a signal and resume by default
def test_resume_after_sigkill_is_bitwise_identical(tmp_path):
    killed_out, ref_out = tmp_path / "killed", tmp_path / "reference"
    proc = _run({**KILL_RUN, "out": str(killed_out)}, resume=False)
    ckpt_dir = killed_out / "checkpoints"
    mid_write = False
    seen: set[str] = set()
    deadline = time.monotonic() + 300
    try:
        # wait for two finished checkpoints, then kill while the next one is being written
        while time.monotonic() < deadline and proc.poll() is None:
            entries = os.listdir(ckpt_dir) if ckpt_dir.is_dir() else []
            seen.update(e for e in entries if e.isdigit())
            if len(seen) >= 2 and any("tmp" in e for e in entries):
                mid_write = True
                break
            if len(seen) >= 5:  # never caught a write in flight: kill anyway
                break
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        output = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it was killed:\n{output}"
    with RunCheckpointer(ckpt_dir, read_only=True) as ckpt:
        killed_at = ckpt.latest_step()
    assert killed_at is not None and killed_at < 96

    resumed = _run({**KILL_RUN, "out": str(killed_out)}, resume=True)
    output = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, output
    assert not [e for e in os.listdir(ckpt_dir) if "tmp" in e]  # stale partial write cleaned up

    # the uninterrupted reference, in this process
    experiment(TrainConfig(**{**KILL_RUN, "out": str(ref_out)}))
    _assert_same_arrays(_final_arrays(killed_out), _final_arrays(ref_out))
    resumed_result = read_results(killed_out)["result"]
    assert resumed_result["resumed_from"] == killed_at
    assert _numbers(resumed_result) == _numbers(read_results(ref_out)["result"])
    print(f"killed after step {killed_at} (mid-write: {mid_write})")


def test_max_steps_stop_resume_and_resume_rules(tmp_path):
    small = {**KILL_RUN, "epochs": 2, "train_limit": 64, "checkpoint_every": 3}  # 8 steps per epoch
    out, ref = str(tmp_path / "run"), str(tmp_path / "ref")
    _, partial = experiment(TrainConfig(**small, out=out, max_steps=5))
    assert not partial["complete"] and partial["steps"] == 5 and math_isnan(partial["test_acc"])
    with pytest.raises(RunExistsError):
        experiment(TrainConfig(**small, out=out))
    with pytest.raises(ValueError, match="lr"):
        experiment(TrainConfig(**{**small, "lr": 0.01}, out=out), resume=True)
    _, resumed = experiment(TrainConfig(**small, out=out), resume=True)
    _, reference = experiment(TrainConfig(**small, out=ref))
    assert resumed["complete"] and resumed["resumed_from"] == 5 and _numbers(resumed) == _numbers(reference)
    _assert_same_arrays(_final_arrays(Path(out)), _final_arrays(Path(ref)))
    with RunCheckpointer(Path(out) / "checkpoints", read_only=True) as ckpt:
        steps = ckpt.all_steps()
        meta = ckpt.read_meta()
    assert steps[-1] == 16 and len(steps) <= small["keep_checkpoints"]
    assert (meta["epoch"], meta["step_in_epoch"], meta["global_step"]) == (2, 0, 16)
    assert meta["history"]["train_losses"] == reference["train_losses"]
    assert meta["config"]["model"] == "mlp"


def math_isnan(x) -> bool:
    return x != x


def test_divergence_stops_with_clear_error_and_keeps_last_good_checkpoint(tmp_path):
    out = tmp_path / "diverge"
    config = TrainConfig(
        # lr 1e12: the second step's loss overflows (at 1e4-1e6 the ReLUs may all die instead,
        # which leaves a finite loss, depending on the initial weights)
        model="mnist_cnn", dataset="digits", lr=1e12, momentum=0.9, epochs=1, batch_size=16, train_limit=128,
        eval_limit=32, checkpoint_every=1, log_every=1, progress=False, out=str(out),
    )  # fmt: skip
    with pytest.raises(TrainingDivergedError, match=r"step \d+") as info:
        experiment(config)
    assert info.value.step >= 2
    with RunCheckpointer(out / "checkpoints", read_only=True) as ckpt:
        latest = ckpt.latest_step()
        assert latest is not None and latest < info.value.step
        arrays = ckpt.restore_arrays()
    for leaf in jax.tree.leaves(arrays):
        if np.issubdtype(leaf.dtype, np.floating):
            assert np.all(np.isfinite(leaf))


def test_checkpointer_refuses_non_finite_state(tmp_path):
    trainer = Trainer(TrainConfig(model="mlp", train_limit=32, eval_limit=16, progress=False))
    bad = trainer.state.replace(params=jax.tree.map(lambda p: p * np.nan, trainer.state.params))
    with RunCheckpointer(tmp_path / "ck", async_save=False) as ckpt:
        with pytest.raises(NonFiniteStateError):
            ckpt.save(1, bad, {"note": "bad"})
        ckpt.save(2, trainer.state, {"note": "good"})
        assert ckpt.all_steps() == [2]
        restored, meta = ckpt.restore(trainer.state)
    assert meta == {"note": "good"}
    _assert_same_arrays(
        jax.tree.map(np.asarray, jax.tree.leaves(restored)), jax.tree.map(np.asarray, jax.tree.leaves(trainer.state))
    )
