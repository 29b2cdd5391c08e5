"""2-D convolution on XLA:CPU through oneDNN, differentiable, and the choice of backend.

``conv2d`` calls :func:`onednn_conv2d` for float32 convolutions on the CPU when the
native library is available (see :mod:`jaxcnn.nn.native`), and XLA's
``lax.conv_general_dilated`` otherwise. The gradient is a ``custom_vjp`` whose backward
pass runs oneDNN's input-gradient and weight-gradient convolutions.

Choose the backend with ``JAXCNN_CONV_BACKEND`` (``auto``, ``onednn`` or ``xla``) or
:func:`set_conv_backend`. The choice is made when a function is traced, so functions
already compiled by ``jax.jit`` keep the backend they were traced with. ``auto`` uses
oneDNN when JAX's default backend is the CPU; code that is lowered for another platform
or serialised with ``jax.export`` should use ``xla``, since the oneDNN kernels are a
custom call that only this library registers.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxcnn.nn import native
from jaxcnn.nn._utils import conv_output_hw

BACKENDS = ("auto", "onednn", "xla")
_backend: str | None = None

Pads = tuple[tuple[int, int], tuple[int, int]]


def set_conv_backend(name: str | None) -> None:
    """Use ``name`` (``'auto'``, ``'onednn'`` or ``'xla'``) for convolutions traced from now on.

    ``None`` goes back to ``$JAXCNN_CONV_BACKEND`` (default ``'auto'``). ``'onednn'``
    raises at the first convolution if the native library cannot be loaded, where
    ``'auto'`` falls back to XLA with a warning.
    """
    if name is not None and name not in BACKENDS:
        raise ValueError(f"conv backend must be one of {BACKENDS}, got {name!r}")
    global _backend
    _backend = name


@contextlib.contextmanager
def using_conv_backend(name: str | None) -> Iterator[None]:
    """Within the block, trace convolutions with backend ``name``; restores the previous setting."""
    previous = _backend
    set_conv_backend(name)
    try:
        yield
    finally:
        set_conv_backend(previous)


def conv_backend() -> str:
    """The backend setting in force: :func:`set_conv_backend`'s, else ``$JAXCNN_CONV_BACKEND``."""
    name = _backend or os.environ.get("JAXCNN_CONV_BACKEND", "auto")
    if name not in BACKENDS:
        raise ValueError(f"JAXCNN_CONV_BACKEND must be one of {BACKENDS}, got {name!r}")
    return name


def use_onednn(input: jax.Array, weight: jax.Array) -> bool:
    """Whether ``conv2d`` runs this NHWC ``input`` / HWIO ``weight`` pair with oneDNN.

    Only float32 on the CPU: oneDNN has no float64 convolution, so float64 (the parity
    suite's reference precision) always uses XLA. Empty arrays use XLA too.
    """
    backend = conv_backend()
    if backend == "xla":
        return False
    if input.dtype != jnp.float32 or weight.dtype != jnp.float32 or 0 in input.shape + weight.shape:
        return False
    if backend == "auto" and jax.default_backend() != "cpu":
        return False
    if backend == "onednn" and not native.onednn_available():
        raise RuntimeError(f"JAXCNN_CONV_BACKEND=onednn, but {native.onednn_status()}")
    return native.onednn_available()


def _attributes(strides: tuple[int, int], pads: Pads, dilations: tuple[int, int], groups: int) -> dict:
    return {
        "strides": np.asarray(strides, np.int64),
        "padding": np.asarray([pads[0][0], pads[0][1], pads[1][0], pads[1][1]], np.int64),
        "dilation": np.asarray(dilations, np.int64),
        "groups": np.int64(groups),
    }


def _ffi(target: str, config: tuple, batched: bool, result_dims: tuple[int, ...], a: jax.Array, b: jax.Array) -> jax.Array:
    """One oneDNN call on operands ``a`` (NHWC, batch first), ``b``.

    A ``batched`` result is ``(a.shape[0], *result_dims)`` (forward, input gradient),
    otherwise ``result_dims`` (the HWIO weight gradient, summed over the batch).
    """
    shape = (a.shape[0], *result_dims) if batched else result_dims
    result = jax.ShapeDtypeStruct(shape, jnp.float32)
    return jax.ffi.ffi_call(target, result, vmap_method="sequential")(a, b, **_attributes(*config))


def _batch_axes(sharding) -> str | tuple[str, ...] | None:
    """The mesh axes that split an operand's leading (batch) axis, None when unsplit."""
    spec = getattr(sharding, "spec", ())
    return spec[0] if len(spec) else None


def _partition(target, config, batched, result_dims, mesh, arg_shapes, result_shape):
    """Per-device calls over the batch split of the first operand (data parallel).

    Forward and input gradient: (batch-split, replicated weight) -> batch-split. Weight
    gradient: (batch-split, batch-split) -> each device's partial sum, all-reduced.
    """
    axes = _batch_axes(arg_shapes[0].sharding)
    split, replicated = NamedSharding(mesh, P(axes)), NamedSharding(mesh, P())
    if batched:
        def lower(a, b):
            return _ffi(target, config, batched, result_dims, a, b)

        return mesh, lower, split, (split, replicated)

    def lower_and_sum(a, b):
        partial_sum = _ffi(target, config, batched, result_dims, a, b)
        return partial_sum if axes is None else lax.psum(partial_sum, axes)

    return mesh, lower_and_sum, replicated, (split, split)


def _infer_sharding(target, config, batched, result_dims, mesh, arg_shapes, result_shape):
    return NamedSharding(mesh, P(_batch_axes(arg_shapes[0].sharding)) if batched else P())


def _sharding_rule(target, config, batched, result_dims, mesh, operand_types, result_types):
    # Only the batch axis n may stay split; every other axis is gathered (need_replication).
    if batched:
        rule = "n a1 a2 a3, b1 b2 b3 b4 -> n r1 r2 r3"
    else:
        rule = "n a1 a2 a3, n b1 b2 b3 -> r1 r2 r3 r4"
    others = tuple(factor for factor in rule.replace(",", " ").replace("->", " ").split() if factor != "n")
    options = {"need_replication_factors": tuple(dict.fromkeys(others))}
    if not batched:
        options["reduction_factors"] = ("n",)
    return rule, options


_sharded_ffi = custom_partitioning(_ffi, static_argnums=(0, 1, 2, 3))
_sharded_ffi.def_partition(
    partition=_partition, infer_sharding_from_operands=_infer_sharding, sharding_rule=_sharding_rule
)


def _call(target: str, config: tuple, batched: bool, result_dims: tuple[int, ...], a: jax.Array, b: jax.Array) -> jax.Array:
    # With one device there is nothing to partition: skip custom_partitioning, which has
    # no vmap rule.
    call = _sharded_ffi if jax.device_count() > 1 else _ffi
    return call(target, config, batched, tuple(result_dims), a, b)


def _output_dims(input: jax.Array, weight: jax.Array, config: tuple) -> tuple[int, int, int]:
    strides, pads, dilations, _ = config
    return (*conv_output_hw(input.shape[1:3], weight.shape[:2], strides, pads, dilations), weight.shape[3])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _onednn_conv(input: jax.Array, weight: jax.Array, config: tuple) -> jax.Array:
    return _call(native.FORWARD, config, True, _output_dims(input, weight, config), input, weight)


def _forward(input: jax.Array, weight: jax.Array, config: tuple):
    return _onednn_conv(input, weight, config), (input, weight)


def _backward(config: tuple, residuals, output_grad: jax.Array):
    input, weight = residuals
    input_grad = _call(native.BACKWARD_DATA, config, True, input.shape[1:], output_grad, weight)
    weight_grad = _call(native.BACKWARD_WEIGHTS, config, False, weight.shape, input, output_grad)
    return input_grad, weight_grad


_onednn_conv.defvjp(_forward, _backward)


def onednn_conv2d(
    input: jax.Array,
    weight: jax.Array,
    strides: tuple[int, int],
    pads: Pads,
    dilations: tuple[int, int],
    groups: int,
) -> jax.Array:
    """Cross-correlation of NHWC float32 ``input`` with HWIO ``weight`` by oneDNN, no bias.

    Arguments are already checked and explicit, as ``conv2d`` passes them: ``pads`` is
    ``((top, bottom), (left, right))``, ``dilations`` counts from 1 as in torch. Returns
    ``(N, H_out, W_out, C_out)`` NHWC. Differentiable in ``input`` and ``weight`` (reverse
    mode only: a ``custom_vjp``); batches under ``vmap`` one call per mapped element.
    With several devices (a data-parallel ``jit`` over CPU devices) each call is
    partitioned along the batch: every device convolves its own rows, and the weight
    gradient is all-reduced; ``vmap`` is then not supported.
    """
    if not native.onednn_available():
        raise RuntimeError(f"onednn_conv2d: {native.onednn_status()}")
    config = (tuple(strides), tuple(map(tuple, pads)), tuple(dilations), int(groups))
    return _onednn_conv(input, weight, config)
