"""The model zoo through :func:`jaxcnn.parity.compare`: pairs, and the table in ``docs/parity/``.

A zoo pair is ``torch_ref.models.create(name)`` (BatchNorm state randomised, or weights read
from a checkpoint) and ``jaxcnn.models.create(name)`` built abstractly (``nnx.eval_shape``):
its weights come from torch. Needs torch and the ``torch_ref`` package of the checkout.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from flax import nnx

from jaxcnn.parity.compare import compare
from jaxcnn.parity.report import ParityReport

SMALL_SIDE = 64  # ImageNet-sized models are compared at 64x64 in the zoo table, to keep it quick on a CPU


def randomize_batchnorm(model, seed: int = 0):
    """Give every torch BatchNorm a random scale (never zero), bias, running mean/variance and count.

    Freshly made BatchNorms hold ones and zeros, which would hide a swapped or ignored statistic.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                if module.affine:
                    module.weight.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
                    module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
                if module.track_running_stats:
                    module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
                    module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
                    module.num_batches_tracked.fill_(int(torch.randint(1, 100, (1,), generator=generator)))
    return model


def zoo_pair(name: str, *, seed: int = 0, weights: str | Path | None = None, **options):
    """``(torch_ref model, abstract jaxcnn twin)`` for zoo model ``name`` (weights: a torch checkpoint, or random)."""
    import torch

    import jaxcnn.models
    import torch_ref.models

    torch.manual_seed(seed)
    torch_model = torch_ref.models.create(name, **options)
    if weights is None:
        randomize_batchnorm(torch_model, seed)
    else:
        from jaxcnn.convert import read_state_dict

        state = read_state_dict(weights)
        torch_model.load_state_dict({key: torch.from_numpy(np.array(value)) for key, value in state.items()}, strict=True)
    jax_model = nnx.eval_shape(lambda: jaxcnn.models.create(name, rngs=nnx.Rngs(seed), **options))
    return torch_model, jax_model


def zoo_input(name: str, batch: int = 2, *, seed: int = 0, input_size=None, small: bool = False):
    """A standard-normal NCHW float32 torch input for ``name`` (its usual size; ``small``: at most 64x64)."""
    import torch

    import jaxcnn.models

    height, width, channels = input_size or jaxcnn.models.input_size(name)
    if small:
        height, width = min(height, SMALL_SIDE), min(width, SMALL_SIDE)
    return torch.randn(batch, channels, height, width, generator=torch.Generator().manual_seed(seed))


def _worst(rows, value=lambda row: row.error) -> float | None:
    values = [value(row) for row in rows if value(row) is not None]
    return max(values) if values else None


def table_row(name: str, eval_report: ParityReport, train_report: ParityReport, seconds: float) -> dict:
    """One model's line of the zoo table, read off its eval and float64-referenced train reports."""
    gradients = [row for row in train_report.tensors if row.kind == "gradient"]
    statistics = [row for row in train_report.tensors if row.kind == "statistic"]
    f64 = lambda key: lambda row: (row.float64 or {}).get(key)  # noqa: E731
    return {
        "input (NCHW)": "x".join(map(str, eval_report.input_shape)),
        "eval logits": eval_report.tensor("output 0").error,
        "eval first divergence": eval_report.first_divergence or "",
        "train logits": train_report.tensor("output 0").error,
        "gradients (model scale)": _worst(gradients, lambda row: row.model_scale),
        "gradients (worst parameter)": _worst(gradients),
        "gradients vs float64: jaxcnn": _worst(gradients, f64("jax_vs_float64")),
        "gradients vs float64: torch": _worst(gradients, f64("torch_vs_float64")),
        "batch statistics (worst)": _worst(statistics) or 0.0,
        "float64 train step (worst)": _worst(train_report.tensors, f64("error")),
        "train verdict": "pass" if train_report.passed else f"FAIL at {train_report.first_divergence}",
        "seconds": round(seconds, 1),
    }


def measure(name: str, *, batch: int = 2, seed: int = 0) -> dict:
    """The zoo-table line of ``name``: an eval comparison and a training step with a float64 reference."""
    started = time.perf_counter()
    torch_model, jax_model = zoo_pair(name, seed=seed)
    x = zoo_input(name, batch, seed=seed, small=True)
    aux = 1.0 if name.startswith("googlenet") else 0.0
    eval_report = compare(torch_model, jax_model, x)
    train_report = compare(torch_model, jax_model, x, mode="train", reference="float64", aux_loss_weight=aux)
    return table_row(name, eval_report, train_report, time.perf_counter() - started)


def markdown_table(results: dict[str, dict]) -> str:
    """The zoo table as Markdown."""
    columns = list(next((row for row in results.values() if "error" not in row), {"input (NCHW)": 0}))
    lines = ["| model | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
    for name, row in results.items():
        cells = []
        for column in columns:
            value = row.get(column, row.get("error", ""))
            cells.append(f"{value:.1e}" if isinstance(value, float) and column != "seconds" else str(value))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Written by `jaxcnn parity --zoo --out docs/parity` (`jaxcnn.parity`). Relative errors "
        "`max|jax - torch| / max|torch|`, float32, CPU, batch 2; ImageNet-sized models at 64x64. Gradients: the "
        "largest difference over the model's largest gradient, and the worst parameter on its own scale (those whose "
        "torch gradient is below 1e-6 of the model's largest, zero in theory, on the model scale). `vs float64`: each "
        "framework's float32 gradients against a float64 torch run of the same step; `float64 train step`: the step "
        "with both sides in float64. `train verdict`: every module, gradient and statistic within 1e-5, or judged "
        "float32 rounding by the float64 run (see docs/parity.md).",
    ]
    return "\n".join(lines)


def write_zoo_table(out: Path, names=None, *, log=print) -> dict[str, dict]:
    """Measure ``names`` (default: every zoo model) and write ``out/parity.md`` and ``out/parity.json``."""
    import json

    import jaxcnn.models

    results = {}
    for name in names or jaxcnn.models.names():
        try:
            results[name] = measure(name)
        except Exception as error:  # noqa: BLE001 - a table lists failures instead of stopping at the first
            results[name] = {"error": f"{type(error).__name__}: {error}".splitlines()[0]}
        log(f"{name}: {results[name]}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "parity.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "parity.md").write_text(markdown_table(results) + "\n")
    return results
