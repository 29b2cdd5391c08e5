"""What each timed mode is: its framework, device and precision, as one pure plan.

:func:`plan_modes` returns, for a JAX platform, the modes to time and their settings; the JAX
and torch sides (:mod:`jaxcnn.bench.jax_side`, :mod:`jaxcnn.bench.torch_side`) only apply them.
Modes with the same ``pair`` compute at the same precision on the same device, so only their
ratios are reported (a ratio is only a ratio at the same precision on the same device).

On the CPU: jaxcnn's jitted step against torch eager, ``channels_last`` and ``torch.compile``,
all in float32 (neither framework rounds float32 products on a CPU). On a GPU, three pairs:

* ``fp32_full``: float32 at full precision on both sides (JAX ``matmul_precision="highest"``;
  torch ``cudnn.allow_tf32 = matmul.allow_tf32 = False``);
* ``fp32_default``: each framework's float32 default (JAX's default precision, TF32-class
  products for convolutions and matmuls; torch's, TF32 convolutions and full float32 matmuls);
* ``bf16``: jaxcnn ``compute_dtype=bfloat16`` against torch autocast bfloat16 with
  ``channels_last``;

with ``torch.compile`` (with and without autocast) as torch's best mode in the full-precision
and bf16 pairs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

__all__ = ["GPU_PAIRS", "Mode", "plan_modes", "torch_device"]

GPU_PAIRS = ("fp32_full", "fp32_default", "bf16")

PRECISION = {
    "fp32": "float32 (CPU: full float32 products on both sides)",
    "fp32_full": "float32, full precision (JAX highest; torch TF32 off for cuDNN and matmul)",
    "fp32_default": "float32, each framework's default (JAX default precision: TF32-class convs and matmuls; "
    "torch: TF32 convs, full float32 matmuls)",
    "bf16": "bfloat16 compute, float32 master weights (jaxcnn compute_dtype; torch autocast + channels_last)",
}


@dataclasses.dataclass(frozen=True)
class Mode:
    """One timed mode. JAX fields: ``matmul_precision`` (``None``: JAX's default) and
    ``compute_dtype``; torch fields: ``memory_format``, ``compile``, ``autocast`` (dtype name),
    ``tf32_conv``/``tf32_matmul`` (``None``: left as they are, as on a CPU) and
    ``cudnn_benchmark``. ``device`` is the JAX platform (``cpu``/``gpu``/``tpu``) or the torch
    device (``cpu``/``cuda``)."""

    name: str
    framework: str
    device: str
    pair: str
    matmul_precision: str | None = None
    compute_dtype: str | None = None
    data_parallel: bool = False
    memory_format: str = "contiguous"
    compile: bool = False
    autocast: str | None = None
    tf32_conv: bool | None = None
    tf32_matmul: bool | None = None
    cudnn_benchmark: bool = False

    @property
    def precision(self) -> str:
        return PRECISION[self.pair]


def torch_device(platform: str, torch_cuda: bool) -> str | None:
    """The torch device that pairs with JAX's ``platform``: ``cpu`` with the CPU, ``cuda`` with a
    GPU when torch has CUDA, else ``None`` (no same-device pair exists)."""
    if platform == "cpu":
        return "cpu"
    if platform in ("gpu", "cuda", "rocm") and torch_cuda:
        return "cuda"
    return None


def plan_modes(
    platform: str,
    *,
    torch_cuda: bool = False,
    torch_compile: bool = True,
    jax_devices: int = 1,
    pairs: Sequence[str] | None = None,
    compile_pairs: Sequence[str] = ("fp32_full", "bf16"),
) -> dict[str, Mode]:
    """The modes to time, by name, for JAX's ``platform`` (``jax.default_backend()``).

    ``torch_cuda``: ``torch.cuda.is_available()``; ``torch_compile``: include the
    ``torch.compile`` modes; ``jax_devices``: local JAX devices (on the CPU, more than one adds
    the data-parallel ``jax_dp`` mode); ``pairs``: on an accelerator, the subset of
    :data:`GPU_PAIRS` to time; ``compile_pairs``: on an accelerator, the pairs given a
    ``torch.compile`` mode (each compiles for about a minute at 224 px). Torch modes are left
    out where torch cannot run on JAX's device.
    """
    device = torch_device(platform, torch_cuda)
    if platform == "cpu":
        modes = [Mode("jax", "jax", "cpu", "fp32")]
        if jax_devices > 1:
            modes.append(Mode("jax_dp", "jax", "cpu", "fp32", data_parallel=True))
        modes += [
            Mode("torch_eager", "torch", "cpu", "fp32"),
            Mode("torch_channels_last", "torch", "cpu", "fp32", memory_format="channels_last"),
        ]
        if torch_compile:
            modes.append(Mode("torch_compile", "torch", "cpu", "fp32", compile=True))
        return {m.name: m for m in modes}

    chosen = tuple(GPU_PAIRS if pairs is None else pairs)
    unknown = set(chosen) - set(GPU_PAIRS)
    if unknown:
        raise ValueError(f"unknown precision pairs {sorted(unknown)}; choose from {', '.join(GPU_PAIRS)}")
    cuda = dict(device=device or "cuda", cudnn_benchmark=True)
    full = dict(tf32_conv=False, tf32_matmul=False)
    default = dict(tf32_conv=True, tf32_matmul=False)  # torch's own defaults, set explicitly
    modes = []
    if "fp32_full" in chosen:
        modes.append(Mode("jax_fp32_full", "jax", platform, "fp32_full", matmul_precision="highest"))
        modes.append(Mode("torch_fp32_full", "torch", pair="fp32_full", **cuda, **full))
        if torch_compile and "fp32_full" in compile_pairs:
            modes.append(Mode("torch_compile_fp32_full", "torch", pair="fp32_full", compile=True, **cuda, **full))
    if "fp32_default" in chosen:
        modes.append(Mode("jax_fp32_default", "jax", platform, "fp32_default"))
        modes.append(Mode("torch_fp32_default", "torch", pair="fp32_default", **cuda, **default))
    if "bf16" in chosen:
        modes.append(Mode("jax_bf16", "jax", platform, "bf16", compute_dtype="bfloat16"))
        bf16 = dict(pair="bf16", memory_format="channels_last", autocast="bfloat16", **cuda, **default)
        modes.append(Mode("torch_bf16", "torch", **bf16))
        if torch_compile and "bf16" in compile_pairs:
            modes.append(Mode("torch_compile_bf16", "torch", compile=True, **bf16))
    return {m.name: m for m in modes if m.framework == "jax" or device is not None}
