"""jaxcnn: classic convolutional networks in JAX/Flax NNX with PyTorch semantics.

Layout convention: images are NHWC and convolution kernels HWIO on the JAX side; the
PyTorch reference (``torch_ref``) uses NCHW and OIHW. ``jaxcnn.convert`` moves weights
between the two.

Importing jaxcnn changes nothing process-wide. Programs that own their process may call,
before JAX's first computation, :func:`configure_platform` (CPU-only machines: select JAX's
CPU platform quietly) and :func:`keep_freed_host_memory` (glibc keeps freed memory, so
XLA:CPU's per-step buffers are not faulted in again); the ``jaxcnn`` command does both.
See ``docs/startup.md``.
"""

from jaxcnn._host_memory import keep_freed_host_memory
from jaxcnn._platform import configure_platform

__all__ = ["configure_platform", "keep_freed_host_memory"]

__version__ = "0.1.0"
