"""Choose JAX's platform before JAX starts, so CPU-only machines run quietly.

With a CUDA plugin installed (the ``cuda12``/``cuda13`` extras) and no GPU present, every
JAX start prints a plugin traceback (``cuInit(0) failed``). When the user has not chosen a
platform and no accelerator device file exists, jaxcnn selects the CPU platform.
"""

from __future__ import annotations

import glob
import os
import sys

_ACCELERATOR_DEVICE_PATTERNS = (
    "/dev/nvidia[0-9]*",  # NVIDIA GPUs
    "/dev/kfd",  # AMD ROCm
    "/dev/accel[0-9]*",  # TPU v4+
    "/dev/vfio/[0-9]*",  # TPU v2/v3
)


def has_accelerator() -> bool:
    """True when a GPU or TPU device file is present on this machine."""
    return any(glob.glob(pattern) for pattern in _ACCELERATOR_DEVICE_PATTERNS)


def configure_platform() -> None:
    """Select JAX's CPU platform when no accelerator exists and the user chose none.

    Respects ``JAX_PLATFORMS`` / ``JAX_PLATFORM_NAME`` when set. Safe to call after JAX is
    imported as long as no backend has been initialised yet.
    """
    if os.environ.get("JAX_PLATFORMS") or os.environ.get("JAX_PLATFORM_NAME"):
        return
    if has_accelerator():
        return
    os.environ["JAX_PLATFORMS"] = "cpu"
    if "jax" in sys.modules:
        import jax

        jax.config.update("jax_platforms", "cpu")
