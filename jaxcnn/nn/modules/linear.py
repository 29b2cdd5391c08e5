"""``Linear`` and ``Identity``."""

from __future__ import annotations

import jax
from flax import nnx

from jaxcnn.nn import functional as F
from jaxcnn.nn._utils import check_positive
from jaxcnn.nn import init
from jaxcnn.nn.init import IO_TO_OI, default_bound


class Linear(nnx.Module):
    """``torch.nn.Linear``: ``y = x @ weight + bias``.

    ``weight`` is ``(in_features, out_features)`` (torch's ``(out, in)`` transposed; its
    ``torch_perm`` metadata says so), ``bias`` ``(out_features,)``, both initialised as torch
    does. Input ``(..., in_features)``, output ``(..., out_features)``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, rngs: nnx.Rngs):
        check_positive((in_features, out_features), "Linear: in_features and out_features")
        self.in_features = in_features
        self.out_features = out_features
        bound = default_bound(in_features)
        self.weight = nnx.Param(init.uniform(rngs, (in_features, out_features), -bound, bound), torch_perm=IO_TO_OI)
        self.bias = nnx.Param(init.uniform(rngs, (out_features,), -bound, bound)) if bias else None

    def __call__(self, x: jax.Array) -> jax.Array:
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"Linear({self.in_features}, {self.out_features}) got an input with {x.shape[-1]} features (shape {tuple(x.shape)})"
            )
        return F.linear(x, self.weight.get_value(), None if self.bias is None else self.bias.get_value())


class Identity(nnx.Module):
    """``torch.nn.Identity``: returns its input; constructor arguments are ignored."""

    def __init__(self, *args, **kwargs):
        del args, kwargs

    def __call__(self, x: jax.Array) -> jax.Array:
        return x
