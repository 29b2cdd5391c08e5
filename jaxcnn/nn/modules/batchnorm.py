"""``BatchNorm1d`` / ``BatchNorm2d`` with torch's statistics, channels last."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcnn.nn import functional as F
from jaxcnn.nn import init


class _BatchNorm(nnx.Module):
    """Shared implementation; subclasses fix the accepted input ranks.

    State mirrors torch's ``state_dict``: ``weight``/``bias`` (Params, ``(C,)``),
    ``running_mean``/``running_var`` (BatchStats, ``(C,)``) and ``num_batches_tracked``
    (a BatchStat counter). Training mode (``model.train()``, the default as in torch)
    normalises with the biased batch variance and updates the running variance with the
    unbiased one using torch's ``momentum`` (``None`` = cumulative average).

    Precision (torch autocast's rule for batch norm): the statistics and the normalisation are
    computed in ``promote_types(input dtype, float32)`` with the parameters and running
    statistics in that dtype, and the output is cast back to the input's dtype; so a bfloat16
    input gives a bfloat16 output computed in float32, and float64 stays float64.
    ``keep_float32``: mixed-precision training steps leave this module's parameters in float32
    (:mod:`jaxcnn.train.step`).
    """

    accepted_ndims: tuple[int, ...] = ()
    layout: str = ""
    keep_float32: bool = True

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        *,
        rngs: nnx.Rngs | None = None,
    ):
        del rngs  # accepted for a uniform constructor signature; BatchNorm's init is deterministic
        if num_features <= 0:
            raise ValueError(f"{type(self).__name__}: num_features must be positive, got {num_features}")
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        self.weight = nnx.Param(init.full((num_features,), 1.0)) if affine else None
        self.bias = nnx.Param(init.full((num_features,), 0.0)) if affine else None
        if track_running_stats:
            self.running_mean = nnx.BatchStat(init.full((num_features,), 0.0))
            self.running_var = nnx.BatchStat(init.full((num_features,), 1.0))
            self.num_batches_tracked = nnx.BatchStat(init.full((), 0, jnp.int32))
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None
        self.use_running_average = False

    def __call__(self, x: jax.Array) -> jax.Array:
        name = type(self).__name__
        if x.ndim not in self.accepted_ndims:
            raise ValueError(f"{name} expects a {self.layout} input, got shape {tuple(x.shape)}")
        if x.shape[-1] != self.num_features:
            raise ValueError(f"{name}({self.num_features}) got {x.shape[-1]} channels on the last axis (shape {tuple(x.shape)})")
        training = not self.use_running_average
        dtype = jnp.promote_types(x.dtype, jnp.float32)
        cast = lambda v: None if v is None else v.get_value().astype(dtype)  # noqa: E731
        weight, bias = cast(self.weight), cast(self.bias)
        if not self.track_running_stats:
            output = F.batch_norm(x.astype(dtype), None, None, weight, bias, training=True, momentum=0.0, eps=self.eps)[0]
            return output.astype(x.dtype)
        if not training:
            output = F.batch_norm(
                x.astype(dtype), cast(self.running_mean), cast(self.running_var), weight, bias, training=False, eps=self.eps
            )[0]
            return output.astype(x.dtype)
        batches = self.num_batches_tracked.get_value() + 1
        self.num_batches_tracked.set_value(batches)
        factor = 1.0 / batches.astype(dtype) if self.momentum is None else self.momentum
        output, mean, var = F.batch_norm(
            x.astype(dtype), cast(self.running_mean), cast(self.running_var), weight, bias, training=True, momentum=factor, eps=self.eps
        )
        self.running_mean.set_value(mean.astype(self.running_mean.get_value().dtype))
        self.running_var.set_value(var.astype(self.running_var.get_value().dtype))
        return output.astype(x.dtype)


class BatchNorm1d(_BatchNorm):
    """``torch.nn.BatchNorm1d`` over ``(N, C)`` or ``(N, L, C)`` (channels last)."""

    accepted_ndims = (2, 3)
    layout = "(N, C) or (N, L, C)"


class BatchNorm2d(_BatchNorm):
    """``torch.nn.BatchNorm2d`` over NHWC ``(N, H, W, C)``."""

    accepted_ndims = (4,)
    layout = "4-D NHWC (N, H, W, C)"
