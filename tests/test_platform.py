"""jaxcnn picks JAX's CPU platform on machines without an accelerator, and only then."""

import os
import subprocess
import sys

from jaxcnn import _platform


def _env_without_platform():
    env = {key: value for key, value in os.environ.items() if key not in ("JAX_PLATFORMS", "JAX_PLATFORM_NAME")}
    return env


def test_cpu_is_selected_quietly_without_an_accelerator():
    if _platform.has_accelerator():
        import pytest

        pytest.skip("this machine has an accelerator")
    code = "import os, jaxcnn, jax; print(os.environ['JAX_PLATFORMS'], jax.default_backend())"
    result = subprocess.run([sys.executable, "-c", code], env=_env_without_platform(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["cpu", "cpu"]
    assert "Traceback" not in result.stderr and "cuInit" not in result.stderr


def test_user_choice_and_accelerators_are_respected(monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cuda")
    _platform.configure_platform()
    assert os.environ["JAX_PLATFORMS"] == "cuda"

    monkeypatch.delenv("JAX_PLATFORMS")
    monkeypatch.delenv("JAX_PLATFORM_NAME", raising=False)
    monkeypatch.setattr(_platform, "has_accelerator", lambda: True)
    _platform.configure_platform()
    assert "JAX_PLATFORMS" not in os.environ
