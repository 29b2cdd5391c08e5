"""``jaxcnn.nn``: ``torch.nn`` semantics in Flax NNX, on NHWC data.

Modules hold parameters as attributes named as torch names them, so an NNX state path
joined with ``.`` is the torch ``state_dict`` key. ``model.train()`` / ``model.eval()``
switch BatchNorm and Dropout as in torch. :func:`set_conv_backend` / :func:`using_conv_backend`
choose the convolution kernels (oneDNN or XLA on the CPU; :mod:`jaxcnn.nn.native.onednn_conv`).
"""

from jaxcnn.nn import functional, init
from jaxcnn.nn.modules import *  # noqa: F401,F403
from jaxcnn.nn.modules import __all__ as _modules_all
from jaxcnn.nn.native.onednn_conv import set_conv_backend, using_conv_backend

__all__ = ["functional", "init", "set_conv_backend", "using_conv_backend", *_modules_all]
