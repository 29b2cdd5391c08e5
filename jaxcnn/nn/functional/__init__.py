"""``jaxcnn.nn.functional``: ``torch.nn.functional`` by name and argument, on NHWC arrays.

Images are NHWC, conv kernels HWIO, Linear weights ``(in, out)``. Ops that update state in
torch (``batch_norm``) return the new state instead.
"""

from jaxcnn.nn.functional.activation import leaky_relu, log_softmax, relu, sigmoid, softmax, tanh
from jaxcnn.nn.functional.conv import conv2d, conv_padding
from jaxcnn.nn.functional.dropout import dropout
from jaxcnn.nn.functional.linear import linear
from jaxcnn.nn.functional.loss import cross_entropy
from jaxcnn.nn.functional.normalization import batch_norm
from jaxcnn.nn.functional.pooling import (
    adaptive_avg_pool2d,
    adaptive_max_pool2d,
    avg_pool2d,
    global_avg_pool2d,
    global_max_pool2d,
    max_pool2d,
    pool_output_size,
)
from jaxcnn.nn.functional.shape import flatten
from jaxcnn.nn.native.onednn_conv import set_conv_backend, using_conv_backend  # the backend conv2d uses

__all__ = [
    "adaptive_avg_pool2d",
    "adaptive_max_pool2d",
    "avg_pool2d",
    "batch_norm",
    "conv2d",
    "conv_padding",
    "cross_entropy",
    "dropout",
    "flatten",
    "global_avg_pool2d",
    "global_max_pool2d",
    "leaky_relu",
    "linear",
    "log_softmax",
    "max_pool2d",
    "pool_output_size",
    "relu",
    "set_conv_backend",
    "sigmoid",
    "softmax",
    "tanh",
    "using_conv_backend",
]
