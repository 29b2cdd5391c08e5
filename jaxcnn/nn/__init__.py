"""``jaxcnn.nn``: ``torch.nn`` semantics in Flax NNX, on NHWC data.

Modules hold parameters as attributes named as torch names them, so an NNX state path
joined with ``.`` is the torch ``state_dict`` key. ``model.train()`` / ``model.eval()``
switch BatchNorm and Dropout as in torch.
"""

from jaxcnn.nn import functional, init
from jaxcnn.nn.modules import *  # noqa: F401,F403
from jaxcnn.nn.modules import __all__ as _modules_all

__all__ = ["functional", "init", *_modules_all]
