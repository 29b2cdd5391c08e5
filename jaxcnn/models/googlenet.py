"""GoogLeNet (Inception v1) with batch norm; twin of ``torchvision.models.googlenet``.

Same class names (``GoogLeNet``, ``Inception``, ``InceptionAux``, ``BasicConv2d``),
attribute names and order, and forward structure as torchvision, so the two can be read
side by side and every NNX path joined with ``.`` is the torch ``state_dict`` key
(``inception3a.branch2.1.conv.weight``, ``aux1.fc1.weight``, ...). Images are NHWC, so
concatenations and ``transform_input``'s per-channel affine work on the LAST axis.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcnn import nn
from jaxcnn.models.registry import register
from jaxcnn.nn import functional as F

__all__ = ["GoogLeNet", "GoogLeNetOutputs", "Inception", "InceptionAux", "BasicConv2d", "googlenet"]


class GoogLeNetOutputs(NamedTuple):
    """Train-mode output of :class:`GoogLeNet` with ``aux_logits``: three ``(N, num_classes)`` arrays.

    Field names and order as torchvision's ``GoogLeNetOutputs``.
    """

    logits: jax.Array
    aux_logits2: jax.Array | None
    aux_logits1: jax.Array | None


class GoogLeNet(nnx.Module):
    """GoogLeNet: stem, nine Inception blocks, optional auxiliary heads, global pool, fc.

    Attributes, in order: ``aux_logits``, ``transform_input``, ``conv1`` BasicConv2d(3, 64, 7,
    stride 2, pad 3), ``maxpool1`` MaxPool2d(3, 2, ceil_mode), ``conv2`` BasicConv2d(64, 64, 1),
    ``conv3`` BasicConv2d(64, 192, 3, pad 1), ``maxpool2``, ``inception3a``, ``inception3b``,
    ``maxpool3``, ``inception4a`` .. ``inception4e``, ``maxpool4`` MaxPool2d(2, 2, ceil_mode),
    ``inception5a``, ``inception5b``, ``aux1`` InceptionAux(512) and ``aux2`` InceptionAux(528)
    (``None`` without ``aux_logits``), ``avgpool`` AdaptiveAvgPool2d((1, 1)), ``dropout``,
    ``fc`` Linear(1024, num_classes).

    Training mode is NNX's: ``model.train()`` / ``model.eval()`` set ``deterministic`` on
    every module (this one included), and :attr:`training` is ``not deterministic``, the
    flag torchvision reads as ``self.training`` for the auxiliary heads.

    Input: (N, H, W, 3) NHWC, H, W >= 15 (224 nominal). Shapes at 224: conv1 (N,112,112,64)
    -> maxpool1 (N,56,56,64) -> conv2, conv3 (N,56,56,192) -> maxpool2 (N,28,28,192) ->
    inception3a (N,28,28,256) -> inception3b (N,28,28,480) -> maxpool3 (N,14,14,480) ->
    inception4a (N,14,14,512) [aux1] -> 4b, 4c (N,14,14,512) -> 4d (N,14,14,528) [aux2] ->
    4e (N,14,14,832) -> maxpool4 (N,7,7,832) -> 5a (N,7,7,832) -> 5b (N,7,7,1024) ->
    avgpool + flatten (N,1024) -> fc (N,num_classes).

    Output: ``GoogLeNetOutputs(logits, aux_logits2, aux_logits1)`` in training mode with
    ``aux_logits``, otherwise the ``(N, num_classes)`` logits.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        aux_logits: bool = True,
        transform_input: bool = False,
        init_weights: bool | None = None,
        blocks: list[Callable[..., nnx.Module]] | None = None,
        dropout: float = 0.2,
        dropout_aux: float = 0.7,
        *,
        rngs: nnx.Rngs,
    ):
        if blocks is None:
            blocks = [BasicConv2d, Inception, InceptionAux]
        if init_weights is None:
            warnings.warn(
                "The default weight initialization of GoogleNet will be changed in future releases of "
                "torchvision. If you wish to keep the old behavior (which leads to long initialization times"
                " due to scipy/scipy#11299), please set init_weights=True.",
                FutureWarning,
            )
            init_weights = True
        if len(blocks) != 3:
            raise ValueError(f"blocks length should be 3 instead of {len(blocks)}")
        conv_block = blocks[0]
        inception_block = blocks[1]
        inception_aux_block = blocks[2]

        self.aux_logits = aux_logits
        self.transform_input = transform_input
        self.deterministic = False  # torch modules start in training mode

        self.conv1 = conv_block(3, 64, kernel_size=7, stride=2, padding=3, rngs=rngs)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = conv_block(64, 64, kernel_size=1, rngs=rngs)
        self.conv3 = conv_block(64, 192, kernel_size=3, padding=1, rngs=rngs)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)

        self.inception3a = inception_block(192, 64, 96, 128, 16, 32, 32, rngs=rngs)
        self.inception3b = inception_block(256, 128, 128, 192, 32, 96, 64, rngs=rngs)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)

        self.inception4a = inception_block(480, 192, 96, 208, 16, 48, 64, rngs=rngs)
        self.inception4b = inception_block(512, 160, 112, 224, 24, 64, 64, rngs=rngs)
        self.inception4c = inception_block(512, 128, 128, 256, 24, 64, 64, rngs=rngs)
        self.inception4d = inception_block(512, 112, 144, 288, 32, 64, 64, rngs=rngs)
        self.inception4e = inception_block(528, 256, 160, 320, 32, 128, 128, rngs=rngs)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)

        self.inception5a = inception_block(832, 256, 160, 320, 32, 128, 128, rngs=rngs)
        self.inception5b = inception_block(832, 384, 192, 384, 48, 128, 128, rngs=rngs)

        if aux_logits:
            self.aux1 = inception_aux_block(512, num_classes, dropout=dropout_aux, rngs=rngs)
            self.aux2 = inception_aux_block(528, num_classes, dropout=dropout_aux, rngs=rngs)
        else:
            self.aux1 = None
            self.aux2 = None

        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout, rngs=rngs)
        self.fc = nn.Linear(1024, num_classes, rngs=rngs)

        if init_weights:
            for _, m in nnx.iter_graph(self):
                if isinstance(m, nn.Conv2d) or isinstance(m, nn.Linear):
                    nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2, rngs=rngs)
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.constant_(m.weight, 1)
                    nn.init.constant_(m.bias, 0)

    @property
    def training(self) -> bool:
        """torch's ``self.training``: True after ``model.train()`` (and at construction), False after ``model.eval()``."""
        return not self.deterministic

    def _transform_input(self, x: jax.Array) -> jax.Array:
        """Re-normalise ImageNet-normalised input to ``(x - 0.5) / 0.5``, channel by channel (last axis)."""
        if self.transform_input:
            x_ch0 = jnp.expand_dims(x[..., 0], -1) * (0.229 / 0.5) + (0.485 - 0.5) / 0.5
            x_ch1 = jnp.expand_dims(x[..., 1], -1) * (0.224 / 0.5) + (0.456 - 0.5) / 0.5
            x_ch2 = jnp.expand_dims(x[..., 2], -1) * (0.225 / 0.5) + (0.406 - 0.5) / 0.5
            x = jnp.concatenate((x_ch0, x_ch1, x_ch2), -1)
        return x

    def _forward(self, x: jax.Array) -> tuple[jax.Array, jax.Array | None, jax.Array | None]:
        # N x 224 x 224 x 3
        x = self.conv1(x)
        # N x 112 x 112 x 64
        x = self.maxpool1(x)
        # N x 56 x 56 x 64
        x = self.conv2(x)
        # N x 56 x 56 x 64
        x = self.conv3(x)
        # N x 56 x 56 x 192
        x = self.maxpool2(x)

        # N x 28 x 28 x 192
        x = self.inception3a(x)
        # N x 28 x 28 x 256
        x = self.inception3b(x)
        # N x 28 x 28 x 480
        x = self.maxpool3(x)
        # N x 14 x 14 x 480
        x = self.inception4a(x)
        # N x 14 x 14 x 512
        aux1: jax.Array | None = None
        if self.aux1 is not None:
            if self.training:
                aux1 = self.aux1(x)

        x = self.inception4b(x)
        # N x 14 x 14 x 512
        x = self.inception4c(x)
        # N x 14 x 14 x 512
        x = self.inception4d(x)
        # N x 14 x 14 x 528
        aux2: jax.Array | None = None
        if self.aux2 is not None:
            if self.training:
                aux2 = self.aux2(x)

        x = self.inception4e(x)
        # N x 14 x 14 x 832
        x = self.maxpool4(x)
        # N x 7 x 7 x 832
        x = self.inception5a(x)
        # N x 7 x 7 x 832
        x = self.inception5b(x)
        # N x 7 x 7 x 1024

        x = self.avgpool(x)
        # N x 1 x 1 x 1024
        x = F.flatten(x, 1, torch_order=True)
        # N x 1024
        x = self.dropout(x)
        x = self.fc(x)
        # N x 1000 (num_classes)
        return x, aux2, aux1

    def eager_outputs(self, x: jax.Array, aux2: jax.Array | None, aux1: jax.Array | None) -> GoogLeNetOutputs | jax.Array:
        if self.training and self.aux_logits:
            return GoogLeNetOutputs(x, aux2, aux1)
        else:
            return x

    def __call__(self, x: jax.Array) -> GoogLeNetOutputs | jax.Array:
        """(N, H, W, 3) -> (N, num_classes), or ``GoogLeNetOutputs`` of three when training with aux heads."""
        x = self._transform_input(x)
        x, aux2, aux1 = self._forward(x)
        return self.eager_outputs(x, aux2, aux1)


class Inception(nnx.Module):
    """Four parallel branches concatenated on the channel (last) axis.

    Attributes, in order: ``branch1`` 1x1 conv; ``branch2`` Sequential(1x1 reduce, 3x3);
    ``branch3`` Sequential(1x1 reduce, 3x3) (torchvision's known 3x3-for-5x5 quirk, kept);
    ``branch4`` Sequential(MaxPool2d(3, 1, pad 1, ceil_mode), 1x1 projection).

    ``(N, H, W, in_channels)`` -> ``(N, H, W, ch1x1 + ch3x3 + ch5x5 + pool_proj)``.
    """

    def __init__(
        self,
        in_channels: int,
        ch1x1: int,
        ch3x3red: int,
        ch3x3: int,
        ch5x5red: int,
        ch5x5: int,
        pool_proj: int,
        conv_block: Callable[..., nnx.Module] | None = None,
        *,
        rngs: nnx.Rngs,
    ):
        if conv_block is None:
            conv_block = BasicConv2d
        self.branch1 = conv_block(in_channels, ch1x1, kernel_size=1, rngs=rngs)

        self.branch2 = nn.Sequential(
            conv_block(in_channels, ch3x3red, kernel_size=1, rngs=rngs),
            conv_block(ch3x3red, ch3x3, kernel_size=3, padding=1, rngs=rngs),
        )

        self.branch3 = nn.Sequential(
            conv_block(in_channels, ch5x5red, kernel_size=1, rngs=rngs),
            # Here, kernel_size=3 instead of kernel_size=5 is a known bug (kept, as in torchvision).
            # Please see https://github.com/pytorch/vision/issues/906 for details.
            conv_block(ch5x5red, ch5x5, kernel_size=3, padding=1, rngs=rngs),
        )

        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
            conv_block(in_channels, pool_proj, kernel_size=1, rngs=rngs),
        )

    def _forward(self, x: jax.Array) -> list[jax.Array]:
        branch1 = self.branch1(x)
        branch2 = self.branch2(x)
        branch3 = self.branch3(x)
        branch4 = self.branch4(x)

        outputs = [branch1, branch2, branch3, branch4]
        return outputs

    def __call__(self, x: jax.Array) -> jax.Array:
        """(N, H, W, in_channels) -> (N, H, W, ch1x1 + ch3x3 + ch5x5 + pool_proj)."""
        outputs = self._forward(x)
        return jnp.concatenate(outputs, -1)


class InceptionAux(nnx.Module):
    """Auxiliary classifier: adaptive 4x4 average pool, 1x1 conv to 128, fc 2048 -> 1024 -> classes.

    Attributes, in order: ``conv`` BasicConv2d(in_channels, 128, 1), ``fc1`` Linear(2048, 1024),
    ``fc2`` Linear(1024, num_classes), ``dropout`` Dropout(dropout).

    ``(N, H, W, in_channels)`` (14x14 at 224 input; any H, W >= 1, pooled with torch's
    overlapping adaptive windows when not divisible by 4) -> ``(N, num_classes)``.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        conv_block: Callable[..., nnx.Module] | None = None,
        dropout: float = 0.7,
        *,
        rngs: nnx.Rngs,
    ):
        if conv_block is None:
            conv_block = BasicConv2d
        self.conv = conv_block(in_channels, 128, kernel_size=1, rngs=rngs)

        self.fc1 = nn.Linear(2048, 1024, rngs=rngs)
        self.fc2 = nn.Linear(1024, num_classes, rngs=rngs)
        self.dropout = nn.Dropout(p=dropout, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """(N, H, W, in_channels) -> (N, num_classes)."""
        # aux1: N x 14 x 14 x 512, aux2: N x 14 x 14 x 528
        x = F.adaptive_avg_pool2d(x, (4, 4))
        # aux1: N x 4 x 4 x 512, aux2: N x 4 x 4 x 528
        x = self.conv(x)
        # N x 4 x 4 x 128
        x = F.flatten(x, 1, torch_order=True)
        # N x 2048 (torch's C, H, W order, so fc1 takes torch's weights unchanged)
        x = F.relu(self.fc1(x))
        # N x 1024
        x = self.dropout(x)
        # N x 1024
        x = self.fc2(x)
        # N x 1000 (num_classes)

        return x


class BasicConv2d(nnx.Module):
    """Conv2d (no bias) -> BatchNorm2d(eps=0.001) -> ReLU.

    Attributes, in order: ``conv``, ``bn``. Keyword arguments go to :class:`jaxcnn.nn.Conv2d`.
    ``(N, H, W, in_channels)`` -> ``(N, H_out, W_out, out_channels)``.
    """

    def __init__(self, in_channels: int, out_channels: int, *, rngs: nnx.Rngs, **kwargs: Any):
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, rngs=rngs, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def __call__(self, x: jax.Array) -> jax.Array:
        """(N, H, W, in_channels) -> (N, H_out, W_out, out_channels)."""
        x = self.conv(x)
        x = self.bn(x)
        return F.relu(x)


@register("googlenet")
def googlenet(
    *,
    num_classes: int = 1000,
    aux_logits: bool = True,
    transform_input: bool = False,
    init_weights: bool = True,
    rngs: nnx.Rngs,
    **options: Any,
) -> GoogLeNet:
    """Build :class:`GoogLeNet` as ``torch_ref``'s ``googlenet`` does (``init_weights=True`` by default).

    Options as torchvision: ``aux_logits``, ``transform_input``, ``init_weights``,
    ``blocks``, ``dropout`` (0.2), ``dropout_aux`` (0.7). Input (N, H, W, 3) NHWC with
    H, W >= 15 (224 nominal); output (N, num_classes), or ``GoogLeNetOutputs(logits,
    aux_logits2, aux_logits1)`` in training mode with ``aux_logits``.
    """
    return GoogLeNet(
        num_classes=num_classes,
        aux_logits=aux_logits,
        transform_input=transform_input,
        init_weights=init_weights,
        rngs=rngs,
        **options,
    )
