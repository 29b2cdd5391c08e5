"""glibc keeps freed host memory once a program asks (``jaxcnn.keep_freed_host_memory``), so
XLA:CPU's per-run buffers are not re-faulted; importing jaxcnn leaves the allocator alone."""

import os
import subprocess
import sys

import pytest

from jaxcnn import _host_memory

glibc_only = pytest.mark.skipif(not _host_memory.glibc_on_linux(), reason="the setting is glibc's (Linux)")

_RUNS = 40

# A jitted step whose intermediate (a 4M x 8 float32 dot output, 128 MB, read by two
# reductions) lives in XLA's temporary buffer, beyond what a thread's own malloc arena holds
# (64 MB); prints the page faults of each run after two warm-up runs.
_FAULTS_PER_RUN = f"""
import resource
import jaxcnn, jax, jax.numpy as jnp
jaxcnn.keep_freed_host_memory()
x = jnp.ones((4 * 1024 * 1024, 8), jnp.float32)
w = jnp.ones((8, 8), jnp.float32)
step = jax.jit(lambda x, w: jnp.tanh(x @ w).max(axis=0) + (x @ w).min(axis=0))
for _ in range(2):
    step(x, w).block_until_ready()
for _ in range({_RUNS}):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step(x, w).block_until_ready()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
_BUFFER_PAGES = 4 * 1024 * 1024 * 8 * 4 // 4096


def _faulting_runs(**env_changes) -> int:
    """How many of the probe's runs faulted in at least half of the buffer's pages."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", **env_changes}
    result = subprocess.run([sys.executable, "-c", _FAULTS_PER_RUN], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    faults = [int(line) for line in result.stdout.split()]
    assert len(faults) == _RUNS
    return sum(f > _BUFFER_PAGES // 2 for f in faults)


@glibc_only
def test_a_large_temporary_buffer_is_reused_instead_of_faulted_in_again():
    assert _faulting_runs(JAXCNN_KEEP_HOST_MEMORY="0") == _RUNS  # glibc's default: a fresh mmap per run
    # The heap grows by a buffer a few times before it settles (an aligned request does not fit
    # an exactly-sized freed chunk, see _host_memory): measured 0-5 of 40 runs in 30 fresh
    # processes, 5-6 of 3,000 runs in one; a quarter of the runs is the bound.
    assert _faulting_runs() <= _RUNS // 4


def test_the_setting_is_left_alone_when_opted_out_or_off_the_cpu(monkeypatch):
    monkeypatch.setenv("JAXCNN_KEEP_HOST_MEMORY", "0")
    assert _host_memory.keep_freed_host_memory() is False
    monkeypatch.delenv("JAXCNN_KEEP_HOST_MEMORY")
    monkeypatch.setenv("JAX_PLATFORMS", "cuda")
    assert _host_memory.keep_freed_host_memory() is False
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert _host_memory.keep_freed_host_memory() is _host_memory.glibc_on_linux()


# Reads glibc's allocator back: with its defaults a 64 MiB block (above the largest dynamic
# mmap threshold, 32 MiB) is served by its own mmap, which mallinfo2 counts in ``hblkhd``;
# after keep_freed_host_memory (M_MMAP_MAX=0) it comes from the heap and ``hblkhd`` stays.
_ALLOCATOR_PROBE = """
import ctypes, json, sys

class _Mallinfo2(ctypes.Structure):
    _fields_ = [(f, ctypes.c_size_t) for f in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

def _large_block_is_mmapped():
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _Mallinfo2
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    before = libc.mallinfo2().hblkhd
    block = libc.malloc(64 << 20)
    mmapped = libc.mallinfo2().hblkhd - before >= 64 << 20
    libc.free(block)
    return mmapped

try:
    {program}
except SystemExit:
    pass
from jaxcnn import _host_memory
print(json.dumps({{"mmapped": _large_block_is_mmapped(), "applied": _host_memory.applied}}))
"""


def _allocator_after(program: str) -> dict:
    """Run ``program`` (one line) in a fresh CPU process, then read glibc's allocator back."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop(_host_memory.OPT_OUT_VARIABLE, None)
    code = _ALLOCATOR_PROBE.format(program=program)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    import json

    return json.loads(result.stdout.strip().splitlines()[-1])


@glibc_only
def test_importing_the_library_leaves_the_allocator_alone():
    assert _allocator_after("import jaxcnn.models, jaxcnn.train, jaxcnn.nn") == {"mmapped": True, "applied": False}


@glibc_only
def test_the_probe_sees_the_setting_when_a_program_applies_it():
    assert _allocator_after("import jaxcnn; jaxcnn.keep_freed_host_memory()") == {"mmapped": False, "applied": True}


@glibc_only
@pytest.mark.parametrize("command", ["train", "bench"])
def test_the_jaxcnn_command_applies_it(command):
    # main() applies it before parsing (for every subcommand); --help then exits without running one.
    assert _allocator_after(f"from jaxcnn.cli import main; main([{command!r}, '--help'])") == {"mmapped": False, "applied": True}


@glibc_only
def test_the_torch_reference_trainer_runs_under_glibc_defaults():
    assert _allocator_after("from torch_ref.train import main; main(['--help'])") == {"mmapped": True, "applied": False}
