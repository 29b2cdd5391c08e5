"""Build and load jaxcnn's native oneDNN convolution kernels for XLA:CPU.

XLA's own CPU convolutions run 1.2-5x slower than oneDNN's (the library PyTorch uses on
CPU) for the shapes of this model zoo; see ``docs/benchmark.md``. ``onednn_conv.cc`` wraps
oneDNN's forward, input-gradient and weight-gradient convolutions as XLA FFI handlers.

The library is compiled once per machine, on first use, with the system C++ compiler
against oneDNN from the ``onednn-cpu-gomp`` / ``onednn-devel-cpu-gomp`` wheels and the
FFI headers that ship with jaxlib (about 3 s), and cached under
``$JAXCNN_CACHE_DIR`` (default ``~/.cache/jaxcnn``), keyed by the source, jaxlib and
oneDNN. When anything is missing (no compiler, no oneDNN wheel, another OS) the
convolution falls back to XLA's and :func:`onednn_status` says why.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path

SOURCE = Path(__file__).with_name("onednn_conv.cc")
LIBRARY_NAME = "libjaxcnn_onednn.so"
# -fopenmp: the kernels set oneDNN's OpenMP thread count per call (see onednn_conv.cc).
COMPILE_FLAGS = ("-O2", "-std=c++17", "-shared", "-fPIC", "-fopenmp", "-w")
FORWARD = "JaxcnnConvForward"
BACKWARD_DATA = "JaxcnnConvBackwardData"
BACKWARD_WEIGHTS = "JaxcnnConvBackwardWeights"
TARGETS = (FORWARD, BACKWARD_DATA, BACKWARD_WEIGHTS)

_lock = threading.Lock()
_state: dict[str, object] = {}


class NativeBuildError(RuntimeError):
    """The oneDNN convolution library could not be found, built or loaded."""


class UnsupportedPlatform(NativeBuildError):
    """No oneDNN wheels exist for this platform: XLA's convolution is expected, not a failure."""


def platform_supported() -> bool:
    """Linux x86-64 (where the oneDNN wheels exist), or any Linux with ``$JAXCNN_ONEDNN_ROOT``."""
    if not sys.platform.startswith("linux"):
        return False
    return platform.machine() in ("x86_64", "AMD64") or bool(os.environ.get("JAXCNN_ONEDNN_ROOT"))


def cache_dir() -> Path:
    """Where built libraries are kept: ``$JAXCNN_CACHE_DIR`` or ``~/.cache/jaxcnn``."""
    if os.environ.get("JAXCNN_CACHE_DIR"):
        return Path(os.environ["JAXCNN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jaxcnn"


def _wheel_file(distribution: str, suffix: str) -> Path:
    try:
        files = importlib.metadata.distribution(distribution).files or []
    except importlib.metadata.PackageNotFoundError as error:
        raise NativeBuildError(f"the {distribution} package is not installed") from error
    for file in files:
        if ("/" + str(file).replace("\\", "/")).endswith(suffix):
            return Path(file.locate()).resolve()
    raise NativeBuildError(f"{distribution} has no file ending in {suffix}")


def onednn_paths() -> tuple[Path, Path]:
    """``(include_dir, libdnnl.so.3)`` of the installed oneDNN wheels.

    ``$JAXCNN_ONEDNN_ROOT`` (a folder with ``include/`` and ``lib/``) overrides the wheels,
    for a oneDNN built or installed another way.
    """
    root = os.environ.get("JAXCNN_ONEDNN_ROOT")
    if root:
        include, library = Path(root) / "include", Path(root) / "lib" / "libdnnl.so.3"
    else:
        header = _wheel_file("onednn-devel-cpu-gomp", "oneapi/dnnl/dnnl.hpp")
        include = header.parents[2]
        library = _wheel_file("onednn-cpu-gomp", "/libdnnl.so.3")
    if not (include / "oneapi" / "dnnl" / "dnnl.hpp").exists():
        raise NativeBuildError(f"no oneDNN headers under {include}")
    if not library.exists():
        raise NativeBuildError(f"no oneDNN library at {library}")
    return include, library


def cxx() -> str:
    """The C++ compiler: ``$CXX``, else ``c++`` or ``g++`` on the PATH."""
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if not compiler or not shutil.which(compiler):
        raise NativeBuildError("no C++ compiler found (set CXX or install g++)")
    return compiler


def _compile(output: Path, include: Path, library: Path) -> None:
    import jax.ffi

    compiler = cxx()
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent) as scratch:
        partial = Path(scratch) / LIBRARY_NAME
        command = [
            compiler, *COMPILE_FLAGS,
            "-I", jax.ffi.include_dir(), "-I", str(include),
            str(SOURCE), "-o", str(partial),
            str(library), f"-Wl,-rpath,{library.parent}",
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise NativeBuildError(
                f"compiling {SOURCE.name} failed ({' '.join(command)}):\n{result.stderr[-4000:]}"
            )
        os.replace(partial, output)  # atomic: concurrent builders never see half a file


def library_path() -> Path:
    """The built library for this source, jaxlib and oneDNN; compiles it when missing."""
    import jaxlib

    include, library = onednn_paths()
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), " ".join(COMPILE_FLAGS).encode(), jaxlib.__version__.encode(),
                 str(library).encode(), str(library.stat().st_size).encode(), sys.platform.encode()):
        key.update(part)
    output = cache_dir() / "native" / key.hexdigest()[:16] / LIBRARY_NAME
    if not output.exists():
        _compile(output, include, library)
    return output


def _load() -> None:
    import jax

    if not platform_supported():
        raise UnsupportedPlatform(
            f"no oneDNN wheels for {sys.platform}/{platform.machine()} (set JAXCNN_ONEDNN_ROOT to a "
            "oneDNN installation to use one built elsewhere)"
        )
    library = ctypes.CDLL(str(library_path()))
    for target in TARGETS:
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, target)), platform="cpu")
    _state["library"] = library


def onednn_available() -> bool:
    """True when the oneDNN convolutions are built, loaded and registered with XLA:CPU.

    The first call builds the library if needed; a failure is reported once as a
    ``RuntimeWarning`` and by :func:`onednn_status`, and every later call returns False.
    Where no oneDNN wheels exist (see :func:`platform_supported`) there is no warning.
    """
    with _lock:
        if "available" not in _state:
            try:
                _load()
                _state["available"], _state["status"] = True, "oneDNN convolutions loaded"
            except (NativeBuildError, OSError) as error:
                _state["available"], _state["status"] = False, f"XLA convolutions: {error}"
                if not isinstance(error, UnsupportedPlatform):
                    warnings.warn(
                        f"jaxcnn: oneDNN CPU convolutions unavailable, using XLA's: {error}",
                        RuntimeWarning,
                        stacklevel=2,
                    )
        return bool(_state["available"])


def onednn_status() -> str:
    """One line saying whether oneDNN convolutions are in use, and if not, why."""
    onednn_available()
    return str(_state["status"])
