"""``Dropout`` with torch's semantics, drawing keys from an NNX RNG stream."""

from __future__ import annotations

import jax
from flax import nnx

from jaxcnn.nn import functional as F


class Dropout(nnx.Module):
    """``torch.nn.Dropout``: active in training mode (``model.train()``), identity after ``model.eval()``.

    Its key stream is forked from ``rngs`` (the ``dropout`` stream if present, else
    ``default``), so the stream's counter is part of the model state and a jitted step
    that carries the state draws a new mask each step. Any input shape.
    """

    def __init__(self, p: float = 0.5, inplace: bool = False, *, rngs: nnx.Rngs | None = None):
        del inplace
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p = p
        self.deterministic = False
        if rngs is None:
            self.rngs = nnx.data(None)
        else:
            stream = rngs["dropout"] if "dropout" in rngs else rngs["default"]
            self.rngs = stream.fork()

    def __call__(self, x: jax.Array) -> jax.Array:
        training = not self.deterministic
        if not training or self.p == 0.0:
            return x
        if self.rngs is None:
            raise ValueError("Dropout in training mode needs rngs: construct it with rngs=nnx.Rngs(...)")
        return F.dropout(x, self.p, True, key=self.rngs())
