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


def cpu_is_the_platform() -> bool:
    """Whether JAX will compute on the CPU: ``JAX_PLATFORMS=cpu``, or unset with no accelerator."""
    return (os.environ.get("JAX_PLATFORMS") or ("" if has_accelerator() else "cpu")) == "cpu"


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


_HOST_DEVICE_FLAG = "--xla_force_host_platform_device_count"


def usable_cores() -> int:
    """The number of CPU cores this process may run on (its affinity mask, else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def host_device_count() -> int:
    """The CPU device count XLA_FLAGS asks for (1 when it sets none)."""
    for flag in os.environ.get("XLA_FLAGS", "").split():
        if flag.startswith(_HOST_DEVICE_FLAG + "="):
            return int(flag.split("=", 1)[1])
    return 1


def use_host_devices(count: int | None = None) -> int:
    """Split a CPU-only machine into ``count`` JAX CPU devices (default: one per usable core).

    XLA's CPU convolutions use the cores of a machine poorly (a jitted CNN step keeps ~1.5 of
    2 cores busy), while a data-parallel step over one CPU device per core runs the shards
    side by side (``jaxcnn.train.distributed.data_parallel``; ``jaxcnn train --data-parallel``).
    This sets ``--xla_force_host_platform_device_count`` in ``XLA_FLAGS``, which JAX reads
    when it first uses a backend, so call it before any JAX computation.

    Returns the CPU device count in effect. Does nothing where an accelerator is the platform
    (its devices are the data-parallel ones) or when ``XLA_FLAGS`` already sets a count (the
    user's choice wins). Raises ``RuntimeError`` if JAX's backends are already initialised.
    """
    if not cpu_is_the_platform() or _HOST_DEVICE_FLAG in os.environ.get("XLA_FLAGS", ""):
        return host_device_count()
    count = usable_cores() if count is None else int(count)
    if count < 1:
        raise ValueError(f"host device count must be positive, got {count}")
    if "jax" in sys.modules:
        from jax._src import xla_bridge

        if xla_bridge.backends_are_initialized():
            raise RuntimeError("use_host_devices() must run before JAX initialises its backends (before any computation)")
    if count > 1:
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_HOST_DEVICE_FLAG}={count}".strip()
    return count
