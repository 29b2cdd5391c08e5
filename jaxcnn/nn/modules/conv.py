"""``Conv2d``: a torch-compatible 2-D convolution layer over NHWC inputs."""

from __future__ import annotations

import jax
from flax import nnx

from jaxcnn.nn import functional as F
from jaxcnn.nn._utils import check_nhwc, check_non_negative, check_positive, pair
from jaxcnn.nn.functional.conv import conv_padding, pad_input
from jaxcnn.nn import init
from jaxcnn.nn.init import HWIO_TO_OIHW, default_bound


class Conv2d(nnx.Module):
    """``torch.nn.Conv2d`` with the same arguments, on NHWC inputs.

    ``weight`` is HWIO ``(kH, kW, in_channels // groups, out_channels)`` (torch's OIHW
    permuted; its ``torch_perm`` metadata says how to go back), ``bias`` is
    ``(out_channels,)``. Initialised as torch does: ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``.
    Input ``(N, H, W, in_channels)``, output ``(N, H_out, W_out, out_channels)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        rngs: nnx.Rngs,
    ):
        check_positive((in_channels, out_channels, groups), "Conv2d: in_channels, out_channels and groups")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels ({in_channels}) and out_channels ({out_channels}) must be divisible by groups ({groups})")
        if padding_mode not in ("zeros", "reflect", "replicate", "circular"):
            raise ValueError(f"padding_mode must be 'zeros', 'reflect', 'replicate' or 'circular', got {padding_mode!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(stride, "stride")
        self.padding = padding if isinstance(padding, str) else pair(padding, "padding")
        self.dilation = pair(dilation, "dilation")
        self.groups = groups
        self.padding_mode = padding_mode
        check_positive(self.kernel_size, "Conv2d: kernel_size")
        check_positive(self.stride, "Conv2d: stride")
        check_positive(self.dilation, "Conv2d: dilation")
        if not isinstance(self.padding, str):
            check_non_negative(self.padding, "Conv2d: padding")
        conv_padding(self.padding, self.kernel_size, self.stride, self.dilation)  # validates 'same' with stride

        fan_in = in_channels // groups * self.kernel_size[0] * self.kernel_size[1]
        bound = default_bound(fan_in)
        shape = (*self.kernel_size, in_channels // groups, out_channels)
        self.weight = nnx.Param(init.uniform(rngs, shape, -bound, bound), torch_perm=HWIO_TO_OIHW)
        self.bias = nnx.Param(init.uniform(rngs, (out_channels,), -bound, bound)) if bias else None

    def __call__(self, x: jax.Array) -> jax.Array:
        check_nhwc(x, "Conv2d")
        if x.shape[-1] != self.in_channels:
            raise ValueError(
                f"Conv2d({self.in_channels}, {self.out_channels}) got an input with {x.shape[-1]} channels "
                f"(NHWC shape {tuple(x.shape)})"
            )
        padding = self.padding
        if self.padding_mode != "zeros":
            x = pad_input(x, conv_padding(padding, self.kernel_size, self.stride, self.dilation), self.padding_mode)
            padding = 0
        bias = None if self.bias is None else self.bias.get_value()
        return F.conv2d(x, self.weight.get_value(), bias, self.stride, padding, self.dilation, self.groups)
