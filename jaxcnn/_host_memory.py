"""Keep freed host memory in the process, so XLA:CPU's per-step buffers are not re-faulted.

XLA:CPU allocates an executable's temporary buffer (all of a train step's intermediate
activations and gradients: 104 MB for resnet50 at batch 8) with ``malloc`` on each run and
frees it at the end. glibc serves an allocation that large from a fresh ``mmap`` (a thread's
own arena holds at most 64 MB), and the kernel zeroes and maps every page of it again on
first touch: on a 2-core machine, 26,654 page faults and about 50 ms of system time per
resnet50 step, 22,500 per gap_vgg step. With one malloc arena, no ``mmap`` for large blocks
and freed memory kept rather than trimmed, the buffer is reused from the heap: no faults.

glibc reads its arena limit when a thread first needs an arena, so this must run before
JAX's backend starts its threads. It changes the whole process, so importing jaxcnn never
calls it: the programs that own their process do (``jaxcnn train``/``evaluate``/``bench``,
the scripts), and a library user calls ``jaxcnn.keep_freed_host_memory()`` first thing.

The heap grows by a few buffers before it settles. XLA asks for the buffer with an aligned
allocation, and glibc (2.36) serves one only from a free chunk large enough for the size
plus the worst-case alignment padding; a freed buffer whose neighbours small allocations
have taken is a few bytes too small, so the next run takes fresh heap (and faults it in).
Measured: resnet50's heap grew twice in 300 steps, then held; a 128 MB probe's grew 4-5
times in 3,000 runs. See ``docs/benchmark.md``, "Page faults".
"""

from __future__ import annotations

import ctypes
import os
import platform

from jaxcnn._platform import cpu_is_the_platform

__all__ = ["glibc_on_linux", "keep_freed_host_memory"]

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
# The largest value mallopt's int takes: freed memory above this at the heap's top is returned.
_TRIM_THRESHOLD = 2**31 - 1

OPT_OUT_VARIABLE = "JAXCNN_KEEP_HOST_MEMORY"

applied = False  # whether this process's allocator was set by keep_freed_host_memory


def glibc_on_linux() -> bool:
    """Whether this process runs on Linux with glibc, the allocator whose settings this module sets."""
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def keep_freed_host_memory() -> bool:
    """Set glibc's allocator to reuse freed memory instead of returning it to the kernel.

    One malloc arena for all threads, no ``mmap`` for large blocks, and a trim threshold of
    2 GiB. Applies on Linux with glibc when JAX runs on the CPU, unless the environment sets
    ``JAXCNN_KEEP_HOST_MEMORY=0``. The costs: the process's resident memory stays at its peak
    (plus the few buffers the heap grows by, above), and all threads allocate from one arena,
    so ``malloc`` itself is slower (12 ms more CPU time per resnet50 step, against about 50 ms
    of system time saved). Returns whether the setting was applied. Call it before JAX's first
    computation.
    """
    if os.environ.get(OPT_OUT_VARIABLE, "1") == "0" or not cpu_is_the_platform():
        return False
    if not glibc_on_linux():
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    global applied
    applied = all(
        mallopt(param, value) == 1
        for param, value in ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    )
    return applied
