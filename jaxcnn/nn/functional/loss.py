"""Classification losses with torch's definitions."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def cross_entropy(
    input: jax.Array, target: jax.Array, reduction: str = "mean", label_smoothing: float = 0.0
) -> jax.Array:
    """Cross entropy from logits as ``torch.nn.functional.cross_entropy`` with class indices.

    Args:
      input: logits ``(N, num_classes)``.
      target: int class indices ``(N,)``.
      reduction: ``'mean'``, ``'sum'`` or ``'none'``.
      label_smoothing: torch's rule, ``(1 - e) * nll + e * mean_c(-log p_c)``.
    """
    log_probs = jax.nn.log_softmax(input, axis=-1)
    nll = -jnp.take_along_axis(log_probs, target[:, None].astype(jnp.int32), axis=-1)[:, 0]
    if label_smoothing:
        nll = (1.0 - label_smoothing) * nll - label_smoothing * jnp.mean(log_probs, axis=-1)
    if reduction == "mean":
        return jnp.mean(nll)
    if reduction == "sum":
        return jnp.sum(nll)
    if reduction == "none":
        return nll
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
