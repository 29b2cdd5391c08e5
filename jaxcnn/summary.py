"""Per-layer model summary: output shape, parameters, multiply-adds, activation memory.

The quantities the course uses, per layer and per sample: activation memory ``H*W*C``
elements, conv parameters ``c_in*c_out*k*k (+ c_out)``, conv multiply-adds
``c_out*H_out*W_out*(c_in/groups)*k*k``, Linear multiply-adds ``in*out``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcnn import nn
from jaxcnn.intermediates import get_submodule, record_outputs

_LAYER_TYPES = (
    nn.Conv2d,
    nn.Linear,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.ReLU,
    nn.LeakyReLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Dropout,
    nn.Flatten,
)


@dataclasses.dataclass(frozen=True)
class LayerRow:
    """One call of one layer. Shapes are NHWC with the batch axis; counts are per sample."""

    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    mult_adds: int
    activations: int
    activation_bytes: int


@dataclasses.dataclass(frozen=True)
class Summary:
    """A model's layer table and totals (per sample)."""

    model: str
    input_shape: tuple[int, ...]
    rows: list[LayerRow]
    total_params: int
    total_mult_adds: int
    total_activations: int
    total_activation_bytes: int

    def table(self) -> str:
        """The summary as a fixed-width text table."""
        header = f"{'layer':<40} {'type':<18} {'output (NHWC)':<22} {'params':>12} {'mult-adds':>15} {'activations':>12}"
        lines = [f"{self.model}: input {self.input_shape} (NHWC)", header, "-" * len(header)]
        for row in self.rows:
            lines.append(
                f"{row.name:<40} {row.kind:<18} {str(row.output_shape):<22} {row.params:>12,} {row.mult_adds:>15,} {row.activations:>12,}"
            )
        lines.append("-" * len(header))
        lines.append(f"total parameters:        {self.total_params:,}")
        lines.append(f"total multiply-adds:     {self.total_mult_adds:,} per sample ({2 * self.total_mult_adds / 1e9:.3f} GFLOPs)")
        lines.append(
            f"total activations:       {self.total_activations:,} elements per sample "
            f"({self.total_activation_bytes / 2**20:.2f} MiB)"
        )
        return "\n".join(lines)


def count_params(model: nnx.Module) -> int:
    """Number of trainable parameters (``nnx.Param`` elements), as torch's ``sum(p.numel())``."""
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))


def _own_params(module: nnx.Module) -> int:
    return sum(int(np.prod(value.get_value().shape)) for value in vars(module).values() if isinstance(value, nnx.Param))


def _mult_adds(module: nnx.Module, output_shape: tuple[int, ...]) -> int:
    per_sample = math.prod(output_shape[1:])
    if isinstance(module, nn.Conv2d):
        kernel_h, kernel_w = module.kernel_size
        return per_sample * (module.in_channels // module.groups) * kernel_h * kernel_w
    if isinstance(module, nn.Linear):
        return per_sample * module.in_features
    return 0


def _first_array(output):
    return output[0] if isinstance(output, (tuple, list)) else output


def summarize(model: nnx.Module, input_shape: Sequence[int], *, name: str | None = None) -> Summary:
    """Trace ``model`` (eval mode, shapes only) on an NHWC input of ``input_shape`` and tabulate its layers.

    Args:
      model: any jaxcnn model, with weights or abstract (``jaxcnn.models.create_abstract``).
      input_shape: ``(N, H, W, C)``.

    Returns:
      A :class:`Summary`; each call of a layer is a row (a shared ReLU called three
      times gives three rows, its parameters counted once).
    """
    model.eval()
    layer_paths = [
        ".".join(map(str, path)) for path, node in nnx.iter_graph(model) if path and isinstance(node, _LAYER_TYPES)
    ]
    calls: list = []
    graphdef, state = nnx.split(model)

    def forward(state, x):  # on a copy of the model holding tracers: abstract models work too
        traced = nnx.merge(graphdef, state)
        with record_outputs(traced, layer_paths, calls):
            return traced(x)

    jax.eval_shape(forward, state, jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32))
    rows, counted = [], set()
    for path, _, output in calls:
        module = get_submodule(model, path)
        output = _first_array(output)
        shape = tuple(output.shape)
        params = 0 if path in counted else _own_params(module)
        counted.add(path)
        activations = math.prod(shape[1:])
        rows.append(
            LayerRow(path, type(module).__name__, shape, params, _mult_adds(module, shape), activations, activations * output.dtype.itemsize)
        )
    return Summary(
        model=name or type(model).__name__,
        input_shape=tuple(input_shape),
        rows=rows,
        total_params=count_params(model),
        total_mult_adds=sum(row.mult_adds for row in rows),
        total_activations=sum(row.activations for row in rows),
        total_activation_bytes=sum(row.activation_bytes for row in rows),
    )
