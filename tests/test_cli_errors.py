"""A user's mistake through the installed ``jaxcnn`` entry point: one line on stderr, status 2,
no traceback; a bug keeps its traceback; ``--debug`` shows it for user errors too."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxcnn.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY = ["--model", "mlp", "--train-limit", "32", "--eval-limit", "16", "--batch-size", "16", "--epochs", "1",
        "--no-progress", "--no-tensorboard", "--no-plots"]  # fmt: skip


def jaxcnn(*argv: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m jaxcnn.cli ARGV`` (the console script's code) in a subprocess."""
    extra = env or {}
    env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    env.pop("JAXCNN_DEBUG", None)  # tracebacks only when a test asks for them
    env.update(extra)
    return subprocess.run([sys.executable, "-m", "jaxcnn.cli", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def assert_one_line_error(proc: subprocess.CompletedProcess, command: str, *fragments: str) -> str:
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in err and len(err.splitlines()) <= 3, err
    line = err.splitlines()[-1]
    assert line.startswith(f"jaxcnn {command}: error: ") and " — " in line, line
    for fragment in fragments:
        assert fragment in line, line
    assert not proc.stdout.strip(), proc.stdout  # no run banner before the check
    return line


CASES = [
    pytest.param(["train", "--model", "mlpp"], "train", ["'mlpp'", "did you mean 'mlp'"], id="model"),
    pytest.param(["train", "--dataset", "mnits"], "train", ["did you mean 'mnist'"], id="dataset"),
    pytest.param(["train", "--optimizer", "adm"], "train", ["did you mean 'adam'"], id="optimizer"),
    pytest.param(["summary", "resnet19"], "summary", ["did you mean 'resnet18'"], id="summary-model"),
    pytest.param(["train", "--dataset", "mnist", "--data-dir", "{tmp}/no_such_folder"], "train",
                 ["train-images-idx3-ubyte"], id="missing-data"),  # fmt: skip
    pytest.param(["summary", "mnist_cnn", "--input-size", "4", "4", "1"], "summary", ["cannot take a 4x4x1", "28x28x1"],
                 id="input-size"),  # fmt: skip
    pytest.param(["evaluate", "--checkpoint", "{tmp}/no_run"], "evaluate", ["no checkpoint"], id="no-checkpoint"),
]
# through a subprocess only with --runslow: the same mechanism as "model" (argparse choices), or
# checked in process below as well
_SAME_AS_MODEL = {"dataset", "optimizer", "summary-model", "input-size"}  # input-size: also in process


@pytest.mark.parametrize(
    "argv, command, fragments",
    [pytest.param(*c.values, id=c.id, marks=[pytest.mark.slow] if c.id in _SAME_AS_MODEL else []) for c in CASES],
)
def test_user_mistake_is_one_line_and_status_2(tmp_path, argv, command, fragments):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert_one_line_error(jaxcnn(*argv, cwd=tmp_path), command, *fragments)


@pytest.mark.parametrize("argv, command, fragments", CASES)
def test_user_mistake_in_process(tmp_path, capsys, argv, command, fragments):
    """Every case again, in this process (no interpreter start-up): status 2, one line."""
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse exits itself
        status = exit_.code
    captured = capsys.readouterr()
    assert status == 2 and not captured.out.strip()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"jaxcnn {command}: error: ") and " — " in lines[0], lines
    assert all(f in lines[0] for f in fragments), lines[0]


def test_config_file_key_and_model_name_are_checked_before_the_run(tmp_path):
    (tmp_path / "typo.toml").write_text("lrr = 0.1\n")
    line = assert_one_line_error(jaxcnn("train", "--config", "typo.toml", cwd=tmp_path), "train")
    assert "'lrr'" in line and "did you mean 'lr'" in line
    (tmp_path / "model.toml").write_text('model = "mnist_cn"\n')
    line = assert_one_line_error(jaxcnn("train", "--config", "model.toml", cwd=tmp_path), "train")
    assert "did you mean 'mnist_cnn'" in line


def test_convert_rejects_random_truncated_and_mismatched_files_in_one_line(tmp_path):
    torch = pytest.importorskip("torch")
    (tmp_path / "garbage.pth").write_bytes(np.random.default_rng(0).bytes(4096))
    assert_one_line_error(jaxcnn("convert", "mlp", "garbage.pth", "out.safetensors", cwd=tmp_path), "convert",
                          "cannot read garbage.pth")  # fmt: skip
    import torch_ref.models

    torch.save(torch_ref.models.create("mlp").state_dict(), tmp_path / "mlp.pth")
    data = (tmp_path / "mlp.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    assert main(["convert", "mlp", str(tmp_path / "cut.pth"), str(tmp_path / "o.safetensors")]) == 2
    assert main(["convert", "mnist_cnn", str(tmp_path / "mlp.pth"), str(tmp_path / "o.safetensors")]) == 2  # mismatch
    assert main(["convert", "mlp", str(tmp_path / "mlp.pth"), str(tmp_path / "o.txt")]) == 2  # unknown format
    assert not (tmp_path / "o.safetensors").exists()


def test_bug_keeps_its_traceback_and_debug_shows_user_errors(tmp_path, monkeypatch, capsys):
    import jaxcnn.cli

    def broken(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(jaxcnn.cli, "_summary", broken)
    with pytest.raises(ZeroDivisionError):  # not a user error: propagates (traceback, status 1)
        main(["summary", "mlp"])
    monkeypatch.setenv("JAXCNN_DEBUG", "1")
    assert main(["evaluate", "--checkpoint", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("jaxcnn evaluate: error: no checkpoint")
    monkeypatch.delenv("JAXCNN_DEBUG")
    assert main(["--debug", "evaluate", "--checkpoint", str(tmp_path / "none")]) == 2
    assert "Traceback" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(tmp_path / "none"), "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(tmp_path / "none")]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_existing_run_and_other_models_checkpoint(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", *TINY, "--out", out]) == 0
    capsys.readouterr()
    assert main(["train", *TINY, "--out", out]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", *TINY, "--out", out, "--resume", "--model", "mnist_cnn"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model: checkpoint 'mlp' vs now 'mnist_cnn'" in err[0]
