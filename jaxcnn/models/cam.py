"""Class activation maps (CAM, Zhou et al. 2016) for models with a global-average-pool head.

A GAP head computes ``logit[k] = sum_c w[k, c] * mean_hw features[h, w, c] + b[k]``, so the
map ``cam_k[h, w] = sum_c w[k, c] * features[h, w, c]`` says where in the image the
evidence for class ``k`` sits: its spatial mean plus ``b[k]`` is exactly the logit.

``class_activation_map(model, image)`` works with any model whose ``__call__`` returns
``(logits, features)`` (e.g. :class:`jaxcnn.models.gap_vgg.GapVGG`) and whose final
``Linear`` after the GAP is ``model.classifier`` or ``model.fc``; other models can pass
``features_fn`` and ``linear``. Images are NHWC.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcnn import nn

__all__ = ["class_activation_map", "gap_linear", "upsample_to"]


def gap_linear(model: nnx.Module) -> nn.Linear:
    """The Linear that follows the global average pool: ``model.classifier`` or ``model.fc``."""
    for name in ("classifier", "fc"):
        layer = getattr(model, name, None)
        if isinstance(layer, nn.Linear):
            return layer
    raise ValueError(f"{type(model).__name__} has no Linear 'classifier' or 'fc' after its GAP; pass linear=")


def class_activation_map(
    model: nnx.Module,
    image: jax.Array,
    class_index: int | None = None,
    *,
    features_fn: Callable[[jax.Array], jax.Array] | None = None,
    linear: nn.Linear | None = None,
) -> jax.Array:
    """The class activation map of one image: ``sum_c w[class_index, c] * features[..., c]``.

    Args:
      model: a GAP-headed model, normally in eval mode (``model.eval()``). Without
        ``features_fn`` its ``__call__`` must return ``(logits, features)``.
      image: ``(1, H, W, C)`` or ``(H, W, C)`` NHWC.
      class_index: the class to explain; ``None`` takes the predicted one (argmax of the
        logits).
      features_fn: ``(1, H, W, C) -> (1, H_f, W_f, C_f)``, the feature map the GAP averages,
        for models that do not return it.
      linear: the Linear after the GAP (default :func:`gap_linear`); its weight is
        ``(C_f, num_classes)`` (JAX layout).

    Returns:
      The ``(H_f, W_f)`` map, unnormalised; ``upsample_to`` scales it to the image.
    """
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.shape[0] != 1:
        raise ValueError(f"class_activation_map expects one NHWC image, (1, H, W, C) or (H, W, C); got {tuple(image.shape)}")
    linear = gap_linear(model) if linear is None else linear
    weight = linear.weight.get_value()  # (C_f, num_classes)
    bias = None if linear.bias is None else linear.bias.get_value()
    if features_fn is None:
        output = model(image)
        if not isinstance(output, (tuple, list)) or len(output) < 2:
            raise ValueError(f"{type(model).__name__} does not return (logits, features); pass features_fn=")
        logits, features = output[0], output[1]
    else:
        features = features_fn(image)
        logits = None
    features = features[0]  # (H_f, W_f, C_f)
    if features.shape[-1] != weight.shape[0]:
        raise ValueError(f"feature map has {features.shape[-1]} channels but the Linear takes {weight.shape[0]} inputs")
    if class_index is None:
        if logits is None:  # the GAP head itself
            logits = jnp.mean(features, axis=(0, 1)) @ weight + (0.0 if bias is None else bias)
        class_index = int(jnp.argmax(logits.reshape(-1)))
    return jnp.einsum("hwc,c->hw", features, weight[:, class_index], precision=jax.lax.Precision.HIGHEST)


def upsample_to(cam: jax.Array, size: tuple[int, int], *, normalize: bool = True) -> jax.Array:
    """Bilinearly resize a ``(H_f, W_f)`` map to ``size = (H, W)`` (half-pixel centres, as
    ``F.interpolate(mode='bilinear', align_corners=False)`` and OpenCV's ``resize``), then
    min-max normalise it to ``[0, 1]`` (a constant map becomes all zeros)."""
    if cam.ndim != 2:
        raise ValueError(f"upsample_to expects a (H_f, W_f) map, got shape {tuple(cam.shape)}")
    resized = jax.image.resize(cam.astype(jnp.float32), tuple(size), method="bilinear", antialias=False)
    if not normalize:
        return resized
    low, high = resized.min(), resized.max()
    span = high - low
    return jnp.where(span > 0, (resized - low) / jnp.where(span > 0, span, 1.0), jnp.zeros_like(resized))
