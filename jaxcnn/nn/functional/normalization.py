"""Batch normalisation with PyTorch's training/eval semantics, channels last."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def batch_norm(
    input: jax.Array,
    running_mean: jax.Array | None,
    running_var: jax.Array | None,
    weight: jax.Array | None = None,
    bias: jax.Array | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> tuple[jax.Array, jax.Array | None, jax.Array | None]:
    """Batch normalisation as ``torch.nn.functional.batch_norm``, returning the new statistics.

    JAX arrays are immutable, so where torch updates the running statistics in place this
    returns them: ``(output, new_running_mean, new_running_var)``.

    Args:
      input: ``(N, C)``, ``(N, L, C)`` or ``(N, H, W, C)``; channels on the last axis.
      running_mean, running_var: ``(C,)`` or None (then batch statistics are always used).
      weight, bias: ``(C,)`` affine parameters or None.
      training: normalise with the batch's biased variance and update the running
        statistics with the *unbiased* variance, as torch does; otherwise normalise with
        the running statistics.
      momentum: torch's convention, ``new = (1 - momentum) * old + momentum * batch``
        (Flax's ``momentum`` is ``1 -`` this).
      eps: added to the variance.

    Returns:
      The normalised input (same shape) and the running statistics after the step
      (unchanged outside training).
    """
    if input.ndim < 2:
        raise ValueError(f"batch_norm expects at least a 2-D (N, ..., C) input, got shape {tuple(input.shape)}")
    channels = input.shape[-1]
    for name, value in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight), ("bias", bias)):
        if value is not None and value.shape != (channels,):
            raise ValueError(f"batch_norm: {name} has shape {tuple(value.shape)}, expected ({channels},)")
    use_batch_stats = training or running_mean is None or running_var is None
    if use_batch_stats:
        reduce_axes = tuple(range(input.ndim - 1))
        count = input.size // channels
        if training and count <= 1:
            raise ValueError(
                f"Expected more than 1 value per channel when training, got input size {tuple(input.shape)}"
            )
        mean = jnp.mean(input, axis=reduce_axes)
        var = jnp.mean(jnp.square(input - mean), axis=reduce_axes)
    else:
        mean, var = running_mean, running_var
    scale = lax.rsqrt(var + eps)
    if weight is not None:
        scale = scale * weight
    output = (input - mean) * scale
    if bias is not None:
        output = output + bias
    if training and running_mean is not None and running_var is not None:
        unbiased_var = var * (count / (count - 1))
        running_mean = (1 - momentum) * running_mean + momentum * lax.stop_gradient(mean)
        running_var = (1 - momentum) * running_var + momentum * lax.stop_gradient(unbiased_var)
    return output, running_mean, running_var
