"""jaxcnn: classic convolutional networks in JAX/Flax NNX with PyTorch semantics.

Layout convention: images are NHWC and convolution kernels HWIO on the JAX side; the
PyTorch reference (``torch_ref``) uses NCHW and OIHW. ``jaxcnn.convert`` moves weights
between the two.
"""

from jaxcnn._host_memory import keep_freed_host_memory
from jaxcnn._platform import configure_platform

configure_platform()
keep_freed_host_memory()

__version__ = "0.1.0"
