"""Name -> constructor registry for the model zoo."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import jax
from flax import nnx

from jaxcnn.errors import UnknownNameError, UserError

_T = TypeVar("_T")

_CONSTRUCTORS: dict[str, Callable[..., nnx.Module]] = {}
_INPUT_SIZES: dict[str, tuple[int, int, int]] = {}

IMAGENET_INPUT_SIZE = (224, 224, 3)


def register(name: str, input_size: tuple[int, int, int] = IMAGENET_INPUT_SIZE):
    """Decorator: register a constructor ``fn(*, rngs, num_classes=..., **options)`` under ``name``.

    ``input_size`` is the model's usual ``(H, W, C)`` input, used by summaries and benchmarks.
    """

    def decorate(constructor: Callable[..., nnx.Module]) -> Callable[..., nnx.Module]:
        if name in _CONSTRUCTORS:
            raise ValueError(f"model {name!r} is registered twice")
        _CONSTRUCTORS[name] = constructor
        _INPUT_SIZES[name] = tuple(input_size)
        return constructor

    return decorate


def input_size(name: str) -> tuple[int, int, int]:
    """The usual ``(H, W, C)`` input of model ``name`` (NHWC without the batch axis)."""
    if name not in _INPUT_SIZES:
        raise UnknownNameError("model", name, names())
    return _INPUT_SIZES[name]


def names() -> list[str]:
    """Every registered model name, sorted."""
    return sorted(_CONSTRUCTORS)


def create(
    name: str,
    *,
    num_classes: int | None = None,
    rngs: nnx.Rngs | None = None,
    seed: int = 0,
    weights: str | os.PathLike | Mapping | None = None,
    **options,
) -> nnx.Module:
    """Build a zoo model by name, e.g. ``create('resnet18', num_classes=10, rngs=nnx.Rngs(0))``.

    ``num_classes`` defaults to the model's own default (10 for the course models, 1000
    for the ImageNet models); ``rngs`` defaults to ``nnx.Rngs(seed)``. Other keyword
    options go to the model (e.g. ``zero_init_residual``, ``aux_logits``). Inputs are NHWC.

    ``weights``: a torch checkpoint or safetensors file (torch keys and layouts, e.g.
    torchvision's ``.pth``), or a state dict, loaded strictly
    (:func:`jaxcnn.convert.load_torch_state_dict`) into a model built by
    :func:`create_abstract`: no random initialiser runs, each weight is allocated once.
    """
    if name not in _CONSTRUCTORS:
        raise UnknownNameError("model", name, names())
    if num_classes is not None:
        options["num_classes"] = num_classes
    if weights is not None:
        from jaxcnn.convert import load_torch_checkpoint, load_torch_state_dict

        model = create_abstract(name, rngs=rngs, seed=seed, **options)
        if isinstance(weights, Mapping):
            return load_torch_state_dict(model, weights)
        return load_torch_checkpoint(model, weights)
    from jaxcnn.nn import init

    with init.on_host():  # every initial value stays in numpy until the model is complete,
        model = _CONSTRUCTORS[name](rngs=rngs if rngs is not None else nnx.Rngs(seed), **options)
    return init.move_to_device(model)  # then all go to the device in one transfer


def create_abstract(
    name: str, *, num_classes: int | None = None, rngs: nnx.Rngs | None = None, seed: int = 0, **options
) -> nnx.Module:
    """Model ``name`` with shapes and dtypes but no weights: its Params and BatchStats are ``jax.ShapeDtypeStruct``.

    What ``nnx.eval_shape(lambda: create(name, ...))`` gives, built without tracing
    (:func:`jaxcnn.nn.init.shapes_only`), in a fraction of the time; its RNG streams (e.g.
    Dropout's) are concrete, seeded by ``rngs``/``seed`` (not advanced by initialisers,
    which draw nothing here). Fill it from a file with
    :func:`jaxcnn.convert.load_torch_checkpoint` (or use ``create(name, weights=path)``),
    or read its shapes (``jaxcnn summary``, :func:`jaxcnn.convert.torch_shapes`).
    """
    from jaxcnn.nn import init

    with init.shapes_only():
        model = create(name, num_classes=num_classes, rngs=rngs, seed=seed, **options)
    for _, variable in nnx.to_flat_state(nnx.state(model)):
        value = variable.get_value()  # what a module made without the initialisers (e.g. BatchNorm's statistics)
        if isinstance(variable, (nnx.Param, nnx.BatchStat)) and not isinstance(value, jax.ShapeDtypeStruct):
            variable.set_value(jax.ShapeDtypeStruct(value.shape, value.dtype))
    return model



class InputSizeError(UserError, ValueError):
    """A model cannot take the requested ``(H, W, C)`` input (also a ``ValueError``)."""


def check_input_size(name: str, input_size: tuple[int, ...], trace: Callable[[], _T]) -> _T:
    """Return ``trace()`` (e.g. a ``jax.eval_shape`` of model ``name`` on an ``input_size``
    (H, W, C) input); when it fails with ``ValueError``/``TypeError`` on a size other than the
    model's usual one, raise :class:`InputSizeError` instead (on the usual size it is a bug and
    propagates)."""
    try:
        return trace()
    except (ValueError, TypeError) as error:
        usual = input_size_or_none(name)
        if usual is None or tuple(input_size) == usual:
            raise
        first = next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)
        raise InputSizeError(
            f"{name} cannot take a {'x'.join(map(str, input_size))} (HxWxC) input ({first[:200]})",
            f"use its usual {'x'.join(map(str, usual))} input or a size its layers fit",
        ) from error


def input_size_or_none(name: str) -> tuple[int, int, int] | None:
    """:func:`input_size` of ``name``, or ``None`` for an unknown name."""
    return _INPUT_SIZES.get(name)
