"""``torch.nn.init`` for NNX variables, drawn on the host.

Parameters are stored in JAX layouts (HWIO kernels, ``(in, out)`` Linear weights) and carry
a ``torch_perm`` metadata entry: the axis permutation that turns them into torch's layout.
Fans are computed on that torch-layout shape, so every initialiser gives the same
distribution as its torch namesake. Like torch's trailing-underscore functions these
write the variable in place.

Random values come from numpy, not from ``jax.random``: each draw takes the next key of the
``params`` stream of ``rngs`` (as a ``jax.random`` initialiser would, so the stream's counter
advances the same way) and seeds a numpy generator with it. Eager JAX would dispatch, and
compile for every new shape, a small program per parameter (seconds per model); numpy draws
at memory speed with nothing to compile. A seed gives the same weights every run. Under
tracing (``nnx.eval_shape``, ``jax.jit``) the same numpy draw runs as a ``jax.pure_callback``
(never, under ``eval_shape``), so a jitted constructor gives the same weights as an eager one.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
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


_SHAPES_ONLY = contextvars.ContextVar("jaxcnn_init_shapes_only", default=False)


@contextlib.contextmanager
def shapes_only() -> Iterator[None]:
    """Inside the block, initialisers make ``jax.ShapeDtypeStruct`` values instead of arrays.

    A model built inside it has every shape and dtype of an eager build, but its initialised
    variables hold no memory and no key is drawn: what ``nnx.eval_shape`` gives, without
    tracing the constructor (which costs seconds for a DenseNet). For models whose weights come
    from a file (``jaxcnn.models.create_abstract``).
    """
    token = _SHAPES_ONLY.set(True)
    try:
        yield
    finally:
        _SHAPES_ONLY.reset(token)


_ON_HOST = contextvars.ContextVar("jaxcnn_init_on_host", default=False)


@contextlib.contextmanager
def on_host() -> Iterator[None]:
    """Inside the block, initialisers leave their values in numpy arrays; :func:`move_to_device`
    then transfers a whole model in one batch (``jaxcnn.models.create`` does both)."""
    token = _ON_HOST.set(True)
    try:
        yield
    finally:
        _ON_HOST.reset(token)


def move_to_device(module: nnx.Module) -> nnx.Module:
    """Transfer every numpy-valued variable of ``module`` to the device, in one batched ``jax.device_put``."""
    variables = [variable for _, variable in nnx.to_flat_state(nnx.state(module)) if isinstance(variable.get_value(), np.ndarray)]
    for variable, value in zip(variables, jax.device_put([variable.get_value() for variable in variables])):
        variable.set_value(value)
    return module


def _finish(value: np.ndarray):
    return value if _ON_HOST.get() else to_device(value)


def _is_traced(value) -> bool:
    return isinstance(value, (jax.core.Tracer, jax.ShapeDtypeStruct))


def _sample_on_host(key_words, shape: tuple[int, ...], dtype: np.dtype, sample) -> np.ndarray:
    generator = np.random.default_rng(np.asarray(key_words, dtype=np.uint32).ravel())
    return np.asarray(sample(generator, shape), dtype=dtype).reshape(shape)


def draw(
    rngs: nnx.Rngs,
    shape: tuple[int, ...],
    sample: Callable[[np.random.Generator, tuple[int, ...]], np.ndarray],
    dtype=jnp.float32,
) -> jax.Array:
    """``sample(generator, shape)`` with a numpy generator seeded by the next ``rngs.params()`` key.

    The one place random initial values are made (see the module docstring). Returns a JAX
    array of ``shape`` and ``dtype`` (a numpy array inside :func:`on_host`, a
    ``jax.ShapeDtypeStruct`` inside :func:`shapes_only`).
    """
    shape, dtype = tuple(shape), np.dtype(dtype)
    if _SHAPES_ONLY.get():
        return jax.ShapeDtypeStruct(shape, dtype)
    words = jax.random.key_data(rngs.params())
    if _is_traced(words):
        host = functools.partial(_call_sample_on_host, shape=shape, dtype=dtype, sample=sample)
        return jax.pure_callback(host, jax.ShapeDtypeStruct(shape, dtype), words, vmap_method="sequential")
    return _finish(_sample_on_host(np.asarray(words), shape, dtype, sample))


def _call_sample_on_host(key_words, *, shape, dtype, sample):
    return _sample_on_host(key_words, shape, dtype, sample)  # looked up at call time (tests count the calls)


def to_device(value: np.ndarray) -> jax.Array:
    """A host array as a JAX array, by transfer alone (``jnp.asarray`` would compile a copy per shape)."""
    return jax.device_put(np.asarray(value))


def full(shape: tuple[int, ...], value: float, dtype=jnp.float32) -> jax.Array:
    """A constant array made on the host (eager ``jnp.full``/``ones``/``zeros`` compile once per shape).

    A ``jax.ShapeDtypeStruct`` inside :func:`shapes_only`.
    """
    if _SHAPES_ONLY.get():
        return jax.ShapeDtypeStruct(tuple(shape), np.dtype(dtype))
    return _finish(np.full(tuple(shape), value, dtype=np.dtype(dtype)))


def uniform(rngs: nnx.Rngs, shape: tuple[int, ...], low: float = 0.0, high: float = 1.0, dtype=jnp.float32) -> jax.Array:
    """``U(low, high)`` values of ``shape`` (host-drawn, see :func:`draw`)."""
    def sample(generator, shape):
        values = generator.random(shape, dtype=np.float32)  # [0, 1), drawn in float32 (twice as fast as float64)
        values *= high - low
        values += low
        return values

    return draw(rngs, shape, sample, dtype)


def normal(rngs: nnx.Rngs, shape: tuple[int, ...], mean: float = 0.0, std: float = 1.0, dtype=jnp.float32) -> jax.Array:
    """``N(mean, std^2)`` values of ``shape`` (host-drawn, see :func:`draw`)."""
    def sample(generator, shape):
        values = generator.standard_normal(shape, dtype=np.float32)
        values *= std
        values += mean
        return values

    return draw(rngs, shape, sample, dtype)


def _truncated_standard_normal(generator: np.random.Generator, shape: tuple[int, ...], lower: float, upper: float) -> np.ndarray:
    """Standard normal values restricted to ``[lower, upper]``, by redrawing the ones outside."""
    values = generator.standard_normal(shape, dtype=np.float32)
    outside = (values < lower) | (values > upper)
    while outside.any():
        values[outside] = generator.standard_normal(int(outside.sum()), dtype=np.float32)
        outside = (values < lower) | (values > upper)
    return values


def _set(variable: nnx.Variable, value) -> nnx.Variable:
    # value has the variable's shape and dtype: draw() and full() were asked for them
    variable.set_value(value)
    return variable


def _shape(variable: nnx.Variable) -> tuple[int, ...]:
    return tuple(variable.get_value().shape)


def uniform_(variable: nnx.Variable, a: float = 0.0, b: float = 1.0, *, rngs: nnx.Rngs) -> nnx.Variable:
    """Fill with ``U(a, b)``."""
    return _set(variable, uniform(rngs, _shape(variable), a, b, variable.get_value().dtype))


def normal_(variable: nnx.Variable, mean: float = 0.0, std: float = 1.0, *, rngs: nnx.Rngs) -> nnx.Variable:
    """Fill with ``N(mean, std^2)``."""
    return _set(variable, normal(rngs, _shape(variable), mean, std, variable.get_value().dtype))


def trunc_normal_(
    variable: nnx.Variable, mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0, *, rngs: nnx.Rngs
) -> nnx.Variable:
    """Fill with ``N(mean, std^2)`` truncated to ``[a, b]`` (absolute bounds, as torch)."""
    lower, upper = (a - mean) / std, (b - mean) / std
    if not lower < upper:
        raise ValueError(f"trunc_normal_: empty interval [{a}, {b}]")

    def sample(generator, shape):
        return mean + std * _truncated_standard_normal(generator, shape, lower, upper)

    return _set(variable, draw(rngs, _shape(variable), sample, variable.get_value().dtype))


def constant_(variable: nnx.Variable, val: float) -> nnx.Variable:
    """Fill with ``val``."""
    return _set(variable, full(_shape(variable), val, variable.get_value().dtype))


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
