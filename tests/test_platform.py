"""``jaxcnn.configure_platform`` picks JAX's CPU platform on machines without an accelerator, and only then."""

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
    # importing the library changes no environment variable; configure_platform (which the
    # jaxcnn command, the scripts and the test suite call) selects the CPU
    code = (
        "import os, jaxcnn.models; print(os.environ.get('JAX_PLATFORMS', 'unset')); "
        "jaxcnn.configure_platform(); import jax; print(os.environ['JAX_PLATFORMS'], jax.default_backend())"
    )
    result = subprocess.run([sys.executable, "-c", code], env=_env_without_platform(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["unset", "cpu", "cpu"]
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


def _run(code: str, **env_changes):
    env = {**_env_without_platform(), "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    env.update(env_changes)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_use_host_devices_splits_the_cpu_before_jax_starts():
    code = "from jaxcnn import _platform; n = _platform.use_host_devices(3); import jax; print(n, jax.local_device_count())"
    assert _run(code) == ["3", "3"]
    default = "from jaxcnn import _platform; n = _platform.use_host_devices(); import jax; print(n, jax.local_device_count(), _platform.usable_cores())"
    count, devices, cores = _run(default)
    assert count == devices == cores


def test_use_host_devices_keeps_the_users_xla_flags():
    code = "from jaxcnn import _platform; n = _platform.use_host_devices(4); import jax; print(n, jax.local_device_count())"
    assert _run(code, XLA_FLAGS="--xla_force_host_platform_device_count=2") == ["2", "2"]


def test_use_host_devices_refuses_once_jax_has_started():
    code = (
        "import jax.numpy as jnp; jnp.zeros(1).block_until_ready(); from jaxcnn import _platform\n"
        "try:\n    _platform.use_host_devices(2)\nexcept RuntimeError:\n    print('refused')"
    )
    assert _run(code) == ["refused"]
