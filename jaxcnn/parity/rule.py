"""The one comparison rule of jaxcnn: a tensor's error relative to the reference tensor's scale.

``error = max|actual - expected| / max(max|expected|, min_scale)`` over same-shaped arrays
(the reference is torch's; pass both in the same layout). float32 rounding of a sum scales
with the magnitude of what was summed, not with each entry, so the test is normwise: an
entry near zero is not judged on its own. NaNs must sit at the same places and infinities
must be equal (otherwise the error is ``inf``); a shape mismatch raises :class:`ShapeMismatch`.
The error is also the smallest relative tolerance under which the pair passes.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import numpy as np

RTOL = 1e-5


class ShapeMismatch(AssertionError):
    """The two tensors have different shapes."""


class Difference(NamedTuple):
    """``max|actual - expected|`` and ``max|expected|`` over finite entries; ``worst``: index of the largest difference."""

    error: float
    scale: float
    worst: tuple[int, ...] | None


def to_numpy(value) -> np.ndarray:
    """A torch tensor, JAX array, numpy array or scalar as a numpy array (torch: detached, on the CPU)."""
    if hasattr(value, "detach"):  # torch.Tensor; torch is not imported here
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _float32_max_difference(actual: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    torch = sys.modules.get("torch")
    if torch is not None:
        # torch's strided kernels handle a transposed 100M-entry gradient several times faster
        # than numpy (used only when the caller already imported torch).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # read-only views of JAX arrays; nothing is written
            a, b = torch.from_numpy(actual), torch.from_numpy(expected)
        return float((a - b).abs_().max()), float(b.abs().max())
    return float(np.abs(actual - expected).max()), float(np.abs(expected).max())


def difference(actual, expected) -> Difference:
    """``Difference(max|actual - expected|, max|expected|, worst index)``; see the module docstring."""
    a, b = to_numpy(actual), to_numpy(expected)
    if a.shape != b.shape:
        raise ShapeMismatch(f"shape mismatch: jax {a.shape} vs torch {b.shape}")
    if not b.size:
        return Difference(0.0, 0.0, None)
    if a.dtype == b.dtype == np.float32:
        # float32 pairs stay float32: the rounding of their difference is 6e-8 of the error itself
        error, scale = _float32_max_difference(a, b)
        if np.isfinite(error) and np.isfinite(scale):
            return Difference(error, scale, None)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    nan_a, nan_b = np.isnan(a64), np.isnan(b64)
    inf_a, inf_b = np.isinf(a64), np.isinf(b64)
    if not np.array_equal(nan_a, nan_b) or not np.array_equal(inf_a, inf_b) or not np.array_equal(a64[inf_a], b64[inf_b]):
        mismatch = (nan_a != nan_b) | (inf_a != inf_b) | (inf_b & (a64 != b64))
        worst = tuple(int(i) for i in np.argwhere(mismatch)[0])
        finite = np.isfinite(b64)
        return Difference(float("inf"), float(np.abs(b64[finite]).max()) if finite.any() else 0.0, worst)
    finite = np.isfinite(b64)
    if not finite.any():
        return Difference(0.0, 0.0, None)
    diff = np.where(finite, np.abs(a64 - b64), 0.0)
    flat = int(np.argmax(diff))
    return Difference(float(diff.reshape(-1)[flat]), float(np.abs(b64[finite]).max()), tuple(int(i) for i in np.unravel_index(flat, diff.shape)))


def relative_error(actual, expected, *, min_scale: float = 0.0) -> float:
    """``max|actual - expected| / max(max|expected|, min_scale)`` (the absolute error when that scale is 0)."""
    error, scale, _ = difference(actual, expected)
    scale = max(scale, min_scale)
    return error / scale if scale > 0 else error


def assert_close(actual, expected, rtol: float = RTOL, *, min_scale: float = 0.0, name: str = "value") -> float:
    """Assert :func:`relative_error` ``<= rtol``; returns the relative error.

    ``actual`` is the JAX value, ``expected`` torch's, in the same layout. The message names
    the error, the bound, the reference scale and the worst element.
    """
    a, b = to_numpy(actual), to_numpy(expected)
    try:
        error, scale, worst = difference(a, b)
    except ShapeMismatch as mismatch:
        raise ShapeMismatch(f"{name}: {mismatch}") from None
    scale = max(scale, min_scale)
    relative = error / scale if scale > 0 else error
    if not relative <= rtol:
        if worst is None:
            worst = np.unravel_index(int(np.argmax(np.abs(a.astype(np.float64) - b.astype(np.float64)))), b.shape)
        worst = tuple(int(i) for i in worst)
        raise AssertionError(
            f"{name}: relative error {relative:.3g} > rtol {rtol:g} (max abs error {error:.3e}, scale max|torch| "
            f"{scale:.3e}); worst at index {worst}: jax {a[worst]!r} vs torch {b[worst]!r}"
        )
    return relative


class GradientErrors(NamedTuple):
    """Per-parameter gradient errors (see :func:`gradient_errors`)."""

    own_scale: dict[str, float]  # difference / the parameter's own largest gradient
    model_scale: dict[str, float]  # difference / the model's largest gradient
    zero_in_theory: set[str]  # judged on the model scale
    judged: dict[str, float]  # the error each parameter is judged by

    @property
    def worst(self) -> float:
        return max(self.judged.values(), default=0.0)

    @property
    def worst_model_scale(self) -> float:
        return max(self.model_scale.values(), default=0.0)


def gradient_errors(
    actual: Mapping[str, object],
    expected: Mapping[str, object],
    *,
    zero_grads: Iterable[str] = (),
    zero_grad_threshold: float | None = None,
) -> GradientErrors:
    """Compare ``{state_dict key: gradient}`` dicts (same layout; ``expected`` is the reference).

    Each parameter is judged on its own scale, except those named in ``zero_grads`` or, with
    ``zero_grad_threshold=t``, whose reference gradient is at most ``t`` times the model's
    largest gradient: their exact gradient is zero (a conv bias before a training-mode
    BatchNorm), both sides hold rounding noise, and they are judged on the model's scale.
    """
    differences = {key: difference(actual[key], value) for key, value in expected.items()}
    model_scale = max((d.scale for d in differences.values()), default=0.0)
    zero = set(zero_grads)
    if zero_grad_threshold is not None:
        zero |= {key for key, d in differences.items() if d.scale <= zero_grad_threshold * model_scale}

    def ratio(error, scale):
        return error / scale if scale > 0 else error

    own = {key: ratio(d.error, d.scale) for key, d in differences.items()}
    model = {key: ratio(d.error, model_scale) for key, d in differences.items()}
    judged = {key: model[key] if key in zero else own[key] for key in differences}
    return GradientErrors(own, model, zero & set(differences), judged)
