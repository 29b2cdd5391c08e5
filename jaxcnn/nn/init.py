"""``torch.nn.init`` for NNX variables.

Parameters are stored in JAX layouts (HWIO kernels, ``(in, out)`` Linear weights) and carry
a ``torch_perm`` metadata entry: the axis permutation that turns them into torch's layout.
Fans are computed on that torch-layout shape, so every initialiser gives the same
distribution as its torch namesake. Like torch's trailing-underscore functions these
write the variable in place.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

HWIO_TO_OIHW = (3, 2, 0, 1)
IO_TO_OI = (1, 0)


def torch_shape(variable: nnx.Variable) -> tuple[int, ...]:
    """Shape of ``variable`` in torch's layout (OIHW for conv kernels, ``(out, in)`` for Linear)."""
    permutation = variable.get_metadata().get("torch_perm")
    shape = tuple(variable.get_value().shape)
    return shape if permutation is None else tuple(shape[axis] for axis in permutation)


def calculate_fan_in_and_fan_out(variable: nnx.Variable) -> tuple[int, int]:
    """``(fan_in, fan_out)`` as ``torch.nn.init._calculate_fan_in_and_fan_out`` computes them."""
    shape = torch_shape(variable)
    if len(shape) < 2:
        raise ValueError("Fan in and fan out can not be computed for a variable with fewer than 2 dimensions")
    receptive_field = math.prod(shape[2:])
    return shape[1] * receptive_field, shape[0] * receptive_field


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """``torch.nn.init.calculate_gain``."""
    linear_like = {"linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "sigmoid"}
    if nonlinearity in linear_like:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"Unsupported nonlinearity {nonlinearity}")


def _fan(variable: nnx.Variable, mode: str) -> int:
    fan_in, fan_out = calculate_fan_in_and_fan_out(variable)
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"Mode {mode} not supported, please use one of fan_in, fan_out")
    return fan_in if mode == "fan_in" else fan_out


def _set(variable: nnx.Variable, value: jax.Array) -> nnx.Variable:
    variable.set_value(value.astype(variable.get_value().dtype))
    return variable


def uniform_(variable: nnx.Variable, a: float = 0.0, b: float = 1.0, *, rngs: nnx.Rngs) -> nnx.Variable:
    """Fill with ``U(a, b)``."""
    shape = variable.get_value().shape
    return _set(variable, jax.random.uniform(rngs.params(), shape, minval=a, maxval=b))


def normal_(variable: nnx.Variable, mean: float = 0.0, std: float = 1.0, *, rngs: nnx.Rngs) -> nnx.Variable:
    """Fill with ``N(mean, std^2)``."""
    return _set(variable, mean + std * jax.random.normal(rngs.params(), variable.get_value().shape))


def trunc_normal_(
    variable: nnx.Variable, mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0, *, rngs: nnx.Rngs
) -> nnx.Variable:
    """Fill with ``N(mean, std^2)`` truncated to ``[a, b]`` (absolute bounds, as torch)."""
    lower, upper = (a - mean) / std, (b - mean) / std
    sample = jax.random.truncated_normal(rngs.params(), lower, upper, variable.get_value().shape)
    return _set(variable, mean + std * sample)


def constant_(variable: nnx.Variable, val: float) -> nnx.Variable:
    """Fill with ``val``."""
    return _set(variable, jnp.full(variable.get_value().shape, val))


def zeros_(variable: nnx.Variable) -> nnx.Variable:
    """Fill with zeros."""
    return constant_(variable, 0.0)


def ones_(variable: nnx.Variable) -> nnx.Variable:
    """Fill with ones."""
    return constant_(variable, 1.0)


def kaiming_uniform_(
    variable: nnx.Variable, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu", *, rngs: nnx.Rngs
) -> nnx.Variable:
    """He uniform: ``U(-b, b)`` with ``b = gain * sqrt(3 / fan)``."""
    bound = math.sqrt(3.0) * calculate_gain(nonlinearity, a) / math.sqrt(_fan(variable, mode))
    return uniform_(variable, -bound, bound, rngs=rngs)


def kaiming_normal_(
    variable: nnx.Variable, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu", *, rngs: nnx.Rngs
) -> nnx.Variable:
    """He normal: ``N(0, (gain / sqrt(fan))^2)``."""
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(variable, mode))
    return normal_(variable, 0.0, std, rngs=rngs)


def xavier_uniform_(variable: nnx.Variable, gain: float = 1.0, *, rngs: nnx.Rngs) -> nnx.Variable:
    """Glorot uniform: ``U(-b, b)`` with ``b = gain * sqrt(6 / (fan_in + fan_out))``."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(variable)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(variable, -bound, bound, rngs=rngs)


def default_bound(fan_in: int) -> float:
    """Torch's default init bound for conv/linear layers: ``1 / sqrt(fan_in)``.

    ``kaiming_uniform_(a=sqrt(5))`` on the weight and ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` on
    the bias both reduce to this bound.
    """
    return 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
