"""Name -> constructor registry for the model zoo."""

from __future__ import annotations

from collections.abc import Callable

from flax import nnx

_CONSTRUCTORS: dict[str, Callable[..., nnx.Module]] = {}


def register(name: str) -> Callable[[Callable[..., nnx.Module]], Callable[..., nnx.Module]]:
    """Decorator: register a constructor ``fn(*, rngs, num_classes=..., **options)`` under ``name``."""

    def decorate(constructor: Callable[..., nnx.Module]) -> Callable[..., nnx.Module]:
        if name in _CONSTRUCTORS:
            raise ValueError(f"model {name!r} is registered twice")
        _CONSTRUCTORS[name] = constructor
        return constructor

    return decorate


def names() -> list[str]:
    """Every registered model name, sorted."""
    return sorted(_CONSTRUCTORS)


def create(name: str, *, num_classes: int | None = None, rngs: nnx.Rngs | None = None, seed: int = 0, **options) -> nnx.Module:
    """Build a zoo model by name, e.g. ``create('resnet18', num_classes=10, rngs=nnx.Rngs(0))``.

    ``num_classes`` defaults to the model's own default (10 for the course models, 1000
    for the ImageNet models); ``rngs`` defaults to ``nnx.Rngs(seed)``. Other keyword
    options go to the model (e.g. ``zero_init_residual``, ``aux_logits``). Inputs are NHWC.
    """
    if name not in _CONSTRUCTORS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(names())}")
    if num_classes is not None:
        options["num_classes"] = num_classes
    return _CONSTRUCTORS[name](rngs=rngs if rngs is not None else nnx.Rngs(seed), **options)
