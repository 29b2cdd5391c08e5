"""Argument normalisation shared by the ops and modules of ``jaxcnn.nn``."""

from __future__ import annotations

from collections.abc import Sequence


def pair(value: int | Sequence[int], name: str = "argument") -> tuple[int, int]:
    """Return ``(value, value)`` for an int, or the 2-tuple for a pair, as torch's ``_pair``."""
    if isinstance(value, int):
        return (value, value)
    values = tuple(value)
    if len(values) == 1:
        return (int(values[0]), int(values[0]))
    if len(values) != 2 or not all(isinstance(v, int) for v in values):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return (values[0], values[1])


def check_positive(values: Sequence[int], name: str) -> None:
    """Raise ``ValueError`` unless every entry of ``values`` is > 0."""
    if any(v <= 0 for v in values):
        raise ValueError(f"{name} must be positive, got {tuple(values)}")


def check_non_negative(values: Sequence[int], name: str) -> None:
    """Raise ``ValueError`` unless every entry of ``values`` is >= 0."""
    if any(v < 0 for v in values):
        raise ValueError(f"{name} must be non-negative, got {tuple(values)}")


def check_nhwc(x, op: str) -> None:
    """Raise ``ValueError`` unless ``x`` is a rank-4 NHWC array."""
    if x.ndim != 4:
        raise ValueError(
            f"{op} expects a 4-D NHWC input (batch, height, width, channels), got shape {tuple(x.shape)}"
        )


def conv_output_hw(
    in_hw: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[Sequence[int]],
    dilations: Sequence[int],
) -> tuple[int, int]:
    """Output ``(H, W)`` of a convolution: ``floor((size + lo + hi - d*(k-1) - 1) / s) + 1``."""
    return tuple(  # type: ignore[return-value]
        (size + lo + hi - d * (k - 1) - 1) // s + 1
        for size, k, s, (lo, hi), d in zip(in_hw, kernel, strides, pads, dilations)
    )
