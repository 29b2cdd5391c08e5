"""DenseNet-BC (121/161/169/201); twin of ``torchvision.models.densenet``.

Same class names (``DenseNet``, ``_DenseLayer``, ``_DenseBlock``, ``_Transition``),
attribute names and order, and forward structure as torchvision, so every NNX path joined
with ``.`` is the torch ``state_dict`` key (``features.denseblock1.denselayer1.norm1.weight``,
``features.transition1.conv.weight``, ``features.norm5.running_mean``, ``classifier.bias``).
Images are NHWC: dense connectivity concatenates on the channel axis, the LAST one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcnn import nn
from jaxcnn.models.registry import register
from jaxcnn.nn import functional as F

__all__ = ["DenseNet", "densenet121", "densenet161", "densenet169", "densenet201"]


class _DenseLayer(nnx.Module):
    """BN-ReLU-Conv1x1 bottleneck to ``bn_size * growth_rate`` channels, then BN-ReLU-Conv3x3 to ``growth_rate``.

    Attributes, in order: ``norm1``, ``relu1``, ``conv1`` (1x1, no bias), ``norm2``, ``relu2``,
    ``conv2`` (3x3, pad 1, no bias), ``drop_rate``, ``memory_efficient``.

    Takes one ``(N, H, W, C)`` array or the list of all previous feature maps of the block
    (concatenated on the last axis, ``num_input_features`` channels in all) and returns the
    ``(N, H, W, growth_rate)`` new features.

    ``drop_rate > 0`` applies dropout to the new features in training mode, like torch's
    ``F.dropout(..., training=self.training)``: the keys come from a stream forked from
    ``rngs`` (its ``dropout`` stream if present), and ``deterministic`` (set by
    ``model.train()`` / ``model.eval()``) plays ``not self.training``.
    ``memory_efficient=True`` rematerialises the bottleneck (concat-norm1-relu1-conv1) in the
    backward pass with ``nnx.remat``, as torch's ``torch.utils.checkpoint`` does; outputs,
    gradients and statistics are the same as without it. (torch's recomputation re-runs
    ``norm1`` with its side effects, so there ``memory_efficient=True`` updates norm1's
    running statistics and counter twice per training step; jaxcnn updates them once.)
    """

    def __init__(
        self,
        num_input_features: int,
        growth_rate: int,
        bn_size: int,
        drop_rate: float,
        memory_efficient: bool = False,
        *,
        rngs: nnx.Rngs,
    ):
        self.norm1 = nn.BatchNorm2d(num_input_features)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(num_input_features, bn_size * growth_rate, kernel_size=1, stride=1, bias=False, rngs=rngs)

        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, kernel_size=3, stride=1, padding=1, bias=False, rngs=rngs)

        self.drop_rate = float(drop_rate)
        self.memory_efficient = memory_efficient
        self.deterministic = False  # torch modules start in training mode
        if self.drop_rate > 0:
            stream = rngs["dropout"] if "dropout" in rngs else rngs["default"]
            self.rngs = stream.fork()
        else:
            self.rngs = nnx.data(None)

    @property
    def training(self) -> bool:
        """torch's ``self.training`` (``model.train()`` / ``model.eval()`` toggle ``deterministic``)."""
        return not self.deterministic

    def bn_function(self, inputs: list[jax.Array]) -> jax.Array:
        """Concatenate the inputs on the channel axis, then norm1 -> relu1 -> conv1."""
        concated_features = jnp.concatenate(inputs, -1)
        bottleneck_output = self.conv1(self.relu1(self.norm1(concated_features)))
        return bottleneck_output

    def call_checkpoint_bottleneck(self, input: list[jax.Array]) -> jax.Array:
        """``bn_function`` under ``nnx.remat``: its activations are recomputed in the backward pass."""

        def closure(layer, *inputs):
            return layer.bn_function(list(inputs))

        return nnx.remat(closure)(self, *input)

    def __call__(self, input: jax.Array | list[jax.Array]) -> jax.Array:
        """(N, H, W, num_input_features), or a list of maps summing to that -> (N, H, W, growth_rate)."""
        if isinstance(input, (list, tuple)):
            prev_features = list(input)
        else:
            prev_features = [input]

        # torch checkpoints only when an input requires grad; JAX cannot know whether it is
        # being differentiated, and remat is a no-op outside differentiation, so always use it.
        if self.memory_efficient:
            bottleneck_output = self.call_checkpoint_bottleneck(prev_features)
        else:
            bottleneck_output = self.bn_function(prev_features)

        new_features = self.conv2(self.relu2(self.norm2(bottleneck_output)))
        if self.drop_rate > 0:
            training = self.training
            new_features = F.dropout(
                new_features, p=self.drop_rate, training=training, key=self.rngs() if training else None
            )
        return new_features


class _DenseBlock(nnx.Module):
    """``num_layers`` dense layers, each fed the concatenation of the block input and all earlier outputs.

    Like torchvision's ``nn.ModuleDict``, the layers are attributes ``denselayer1``,
    ``denselayer2``, ... kept in insertion order (:meth:`items`). ``(N, H, W, C)`` ->
    ``(N, H, W, C + num_layers * growth_rate)``.
    """

    def __init__(
        self,
        num_layers: int,
        num_input_features: int,
        bn_size: int,
        growth_rate: int,
        drop_rate: float,
        memory_efficient: bool = False,
        *,
        rngs: nnx.Rngs,
    ):
        names = []
        for i in range(num_layers):
            layer = _DenseLayer(
                num_input_features + i * growth_rate,
                growth_rate=growth_rate,
                bn_size=bn_size,
                drop_rate=drop_rate,
                memory_efficient=memory_efficient,
                rngs=rngs,
            )
            setattr(self, "denselayer%d" % (i + 1), layer)  # torch: self.add_module(...)
            names.append("denselayer%d" % (i + 1))
        self.layer_names = tuple(names)

    def items(self) -> Iterator[tuple[str, _DenseLayer]]:
        """``(name, layer)`` pairs in order, as ``nn.ModuleDict.items()``."""
        return ((name, getattr(self, name)) for name in self.layer_names)

    def __call__(self, init_features: jax.Array) -> jax.Array:
        """(N, H, W, C) -> (N, H, W, C + num_layers * growth_rate)."""
        features = [init_features]
        for name, layer in self.items():
            new_features = layer(features)
            features.append(new_features)
        return jnp.concatenate(features, -1)


class _Transition(nn.Sequential):
    """norm -> relu -> 1x1 conv (no bias) -> AvgPool2d(2, 2), a ``Sequential`` as in torchvision.

    ``(N, H, W, num_input_features)`` -> ``(N, H // 2, W // 2, num_output_features)``.
    """

    def __init__(self, num_input_features: int, num_output_features: int, *, rngs: nnx.Rngs):
        super().__init__(
            OrderedDict(
                [
                    ("norm", nn.BatchNorm2d(num_input_features)),
                    ("relu", nn.ReLU(inplace=True)),
                    ("conv", nn.Conv2d(num_input_features, num_output_features, kernel_size=1, stride=1, bias=False, rngs=rngs)),
                    ("pool", nn.AvgPool2d(kernel_size=2, stride=2)),
                ]
            )
        )


class DenseNet(nnx.Module):
    r"""Densenet-BC model, based on `"Densely Connected Convolutional Networks" <https://arxiv.org/pdf/1608.06993.pdf>`_.

    Args (as torchvision):
      growth_rate: how many filters each layer adds (``k`` in the paper).
      block_config: how many layers in each of the four dense blocks.
      num_init_features: filters of the first convolution.
      bn_size: bottleneck width factor (``bn_size * growth_rate`` bottleneck channels).
      drop_rate: dropout rate after each dense layer (training mode only).
      num_classes: classifier outputs.
      memory_efficient: rematerialise each layer's bottleneck in the backward pass
        (``nnx.remat``, torch uses checkpointing); same results, less activation memory.

    Attributes, in order: ``features`` a Sequential of ``conv0`` (7x7, stride 2, pad 3, no
    bias), ``norm0``, ``relu0``, ``pool0`` MaxPool2d(3, 2, pad 1), then ``denseblock1``,
    ``transition1``, ..., ``denseblock4`` and ``norm5``; ``classifier`` Linear.

    Input: (N, H, W, 3) NHWC, H, W >= 29 (224 nominal). Shapes for densenet121 at 224:
    conv0 (N,112,112,64) -> pool0 (N,56,56,64) -> denseblock1 (N,56,56,256) -> transition1
    (N,28,28,128) -> denseblock2 (N,28,28,512) -> transition2 (N,14,14,256) -> denseblock3
    (N,14,14,1024) -> transition3 (N,7,7,512) -> denseblock4 (N,7,7,1024) -> norm5, relu,
    global average pool, flatten (N,1024) -> classifier (N,num_classes).
    """

    def __init__(
        self,
        growth_rate: int = 32,
        block_config: tuple[int, int, int, int] = (6, 12, 24, 16),
        num_init_features: int = 64,
        bn_size: int = 4,
        drop_rate: float = 0,
        num_classes: int = 1000,
        memory_efficient: bool = False,
        *,
        rngs: nnx.Rngs,
    ):
        # First convolution. torch adds the later children with ``add_module``; jaxcnn's
        # Sequential takes all its named children at construction, so collect them first.
        features = OrderedDict(
            [
                ("conv0", nn.Conv2d(3, num_init_features, kernel_size=7, stride=2, padding=3, bias=False, rngs=rngs)),
                ("norm0", nn.BatchNorm2d(num_init_features)),
                ("relu0", nn.ReLU(inplace=True)),
                ("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1)),
            ]
        )

        # Each denseblock
        num_features = num_init_features
        for i, num_layers in enumerate(block_config):
            block = _DenseBlock(
                num_layers=num_layers,
                num_input_features=num_features,
                bn_size=bn_size,
                growth_rate=growth_rate,
                drop_rate=drop_rate,
                memory_efficient=memory_efficient,
                rngs=rngs,
            )
            features["denseblock%d" % (i + 1)] = block
            num_features = num_features + num_layers * growth_rate
            if i != len(block_config) - 1:
                trans = _Transition(num_input_features=num_features, num_output_features=num_features // 2, rngs=rngs)
                features["transition%d" % (i + 1)] = trans
                num_features = num_features // 2

        # Final batch norm
        features["norm5"] = nn.BatchNorm2d(num_features)
        self.features = nn.Sequential(features)

        # Linear layer
        self.classifier = nn.Linear(num_features, num_classes, rngs=rngs)

        # Official init from torch repo.
        for _, m in nnx.iter_graph(self):
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, rngs=rngs)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.constant_(m.bias, 0)

    def __call__(self, x: jax.Array) -> jax.Array:
        """(N, H, W, 3) -> (N, num_classes)."""
        features = self.features(x)
        out = F.relu(features)
        out = F.adaptive_avg_pool2d(out, (1, 1))
        out = F.flatten(out, 1, torch_order=True)
        out = self.classifier(out)
        return out


def _densenet(growth_rate: int, block_config: tuple[int, int, int, int], num_init_features: int, **kwargs: Any) -> DenseNet:
    return DenseNet(growth_rate, block_config, num_init_features, **kwargs)


@register("densenet121")
def densenet121(*, num_classes: int = 1000, rngs: nnx.Rngs, **options: Any) -> DenseNet:
    """Densenet-121 (growth 32, blocks (6, 12, 24, 16), 64 initial features).

    Options: ``bn_size``, ``drop_rate``, ``memory_efficient``. Input (N, H, W, 3) NHWC with
    H, W >= 29; output (N, num_classes).
    """
    return _densenet(32, (6, 12, 24, 16), 64, num_classes=num_classes, rngs=rngs, **options)


@register("densenet161")
def densenet161(*, num_classes: int = 1000, rngs: nnx.Rngs, **options: Any) -> DenseNet:
    """Densenet-161 (growth 48, blocks (6, 12, 36, 24), 96 initial features); as :func:`densenet121`."""
    return _densenet(48, (6, 12, 36, 24), 96, num_classes=num_classes, rngs=rngs, **options)


@register("densenet169")
def densenet169(*, num_classes: int = 1000, rngs: nnx.Rngs, **options: Any) -> DenseNet:
    """Densenet-169 (growth 32, blocks (6, 12, 32, 32), 64 initial features); as :func:`densenet121`."""
    return _densenet(32, (6, 12, 32, 32), 64, num_classes=num_classes, rngs=rngs, **options)


@register("densenet201")
def densenet201(*, num_classes: int = 1000, rngs: nnx.Rngs, **options: Any) -> DenseNet:
    """Densenet-201 (growth 32, blocks (6, 12, 48, 32), 64 initial features); as :func:`densenet121`."""
    return _densenet(32, (6, 12, 48, 32), 64, num_classes=num_classes, rngs=rngs, **options)
