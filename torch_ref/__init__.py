"""PyTorch reference architectures for jaxcnn.

Every JAX/Flax NNX model in ``jaxcnn`` has a twin here; the parity suite loads
the same weights into both and checks the numbers agree.  All tensors on this
side are NCHW.

Use :func:`torch_ref.models.create` to build a model by name and
:func:`torch_ref.models.names` to list the available names.
"""

from torch_ref import models

__all__ = ["models"]
